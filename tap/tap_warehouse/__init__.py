"""tap-warehouse: dbt marts (email_triggers by default) from any SQLAlchemy warehouse."""

from tap_warehouse.tap import TapWarehouse

__all__ = ["TapWarehouse"]
