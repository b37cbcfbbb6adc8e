"""tap-warehouse: dbt marts (email_triggers by default) from any SQLAlchemy warehouse.

Public names: the tap, the connector that `signalmail templates preview` reads marts with
(DuckDB opened read-only, waiting out a writer's lock) with its errors, and the read-write
connection to a DuckDB database the process already has open (`signalmail watch`).
"""

from tap_warehouse.connector import (
    WarehouseConnectionError,
    WarehouseConnector,
    WarehouseLockedError,
    shared_duckdb_connection,
)
from tap_warehouse.tap import TapWarehouse

__all__ = [
    "TapWarehouse",
    "WarehouseConnectionError",
    "WarehouseConnector",
    "WarehouseLockedError",
    "shared_duckdb_connection",
]
