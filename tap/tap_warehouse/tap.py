"""tap-warehouse: reads dbt marts (email_triggers by default) from any SQLAlchemy warehouse."""

from __future__ import annotations

from singer_sdk import typing as th
from singer_sdk.sql import SQLTap

from tap_warehouse.streams import WarehouseStream


class TapWarehouse(SQLTap):
    """Singer tap over DuckDB (read-only), PostgreSQL or any installed SQLAlchemy dialect."""

    name = "tap-warehouse"
    default_stream_class = WarehouseStream

    config_jsonschema = th.PropertiesList(
        th.Property(
            "sqlalchemy_url",
            th.StringType,
            required=True,
            secret=True,
            description=(
                "SQLAlchemy URL of the warehouse, e.g. duckdb:///data/warehouse.duckdb or "
                "postgresql+psycopg://user:pass@host/db. DuckDB files are opened read-only and "
                "PostgreSQL sessions are read-only transactions."
            ),
        ),
        th.Property(
            "schema",
            th.StringType,
            description=(
                "Schema holding the marts (dbt's marts schema). Unset: the connection's default "
                "schema (DuckDB main, PostgreSQL public)."
            ),
        ),
        th.Property(
            "tables",
            th.ArrayType(th.StringType),
            default=["email_triggers"],
            description=(
                "Marts to read, by table or view name; each becomes a stream of the same name on "
                "every warehouse."
            ),
        ),
        th.Property(
            "replication_keys",
            th.ObjectType(additional_properties=th.CustomType({"type": ["string", "null"]})),
            default={"email_triggers": "computed_at"},
            description=(
                "Table -> column read incrementally (rows with a value >= the bookmark). Merged "
                "over the default {email_triggers: computed_at}; map a table to null to read it "
                "in full every run. Tables not listed are read in full."
            ),
        ),
        th.Property(
            "primary_keys",
            th.ObjectType(
                additional_properties=th.CustomType(
                    {"type": ["array", "null"], "items": {"type": "string"}}
                )
            ),
            default={"email_triggers": ["trigger_id"]},
            description=(
                "Table -> key columns, for marts without a declared primary key (dbt tables "
                "rarely have one). Merged over the default {email_triggers: [trigger_id]}; "
                "unlisted tables use the declared key, if any."
            ),
        ),
        th.Property(
            "json_columns",
            th.ObjectType(additional_properties=th.ArrayType(th.StringType)),
            default={},
            description=(
                "Table -> columns holding JSON text to emit as parsed objects instead of strings. "
                "Default none: email_triggers.payload is emitted as the JSON string the mart "
                "stores and the email target parses it, so one malformed payload fails one send "
                "rather than the whole run."
            ),
        ),
        th.Property(
            "replication_lookback_seconds",
            th.IntegerType,
            default=0,
            description=(
                "Re-read this many seconds before the bookmark each run, to catch rows committed "
                "late with an older replication key (concurrent writers). Re-read rows reach the "
                "target again; its send ledger drops the ones already handled."
            ),
        ),
        th.Property(
            "page_size",
            th.IntegerType,
            default=10000,
            description=(
                "Rows per read. Each page is one short connection, so the DuckDB file is held "
                "only while a page is read, never while the target sends."
            ),
        ),
        th.Property(
            "duckdb_read_only",
            th.BooleanType,
            default=True,
            description=(
                "Open a DuckDB file read-only (the default: the tap never blocks dbt or a loader "
                "for longer than a page read). false shares a database the same process already "
                "holds open read-write, as `signalmail watch` does: it runs dbt and this tap in "
                "one process, and DuckDB refuses a read-only handle beside a read-write one."
            ),
        ),
        th.Property(
            "lock_timeout_seconds",
            th.NumberType,
            default=30,
            description=(
                "How long to wait for a process holding the DuckDB file for writing (dbt, a "
                "loader) before failing with a clear error. 0 fails at once."
            ),
        ),
    ).to_dict()


if __name__ == "__main__":
    TapWarehouse.cli()
