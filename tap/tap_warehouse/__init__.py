"""tap-warehouse: dbt marts (email_triggers by default) from any SQLAlchemy warehouse.

Public names: the tap, and the connector that `signalmail templates preview` reads marts with
(DuckDB opened read-only, waiting out a writer's lock), with its errors.
"""

from tap_warehouse.connector import (
    WarehouseConnectionError,
    WarehouseConnector,
    WarehouseLockedError,
)
from tap_warehouse.tap import TapWarehouse

__all__ = [
    "TapWarehouse",
    "WarehouseConnectionError",
    "WarehouseConnector",
    "WarehouseLockedError",
]
