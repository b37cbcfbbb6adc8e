"""SQLAlchemy access to the warehouse: engines, reflection, type mapping, lock handling.

The warehouse tap reads marts that dbt owns and rebuilds, so it must never hold a write lock, and
should hold a read lock for as short a time as it can:

- DuckDB is opened with `read_only=True`; one DuckDB file admits one writer or many readers, so a
  reader blocks dbt and loaders while it is open. PostgreSQL sessions are read-only transactions.
- Engines use `NullPool`: a connection is a real session that is closed (file lock released) the
  moment the code using it is done, instead of idling in a pool for the life of the process.
- Reflection goes through `information_schema` on DuckDB, because duckdb-engine's inspector
  queries `pg_collation`/`regclass`, which DuckDB 1.2 does not have.
"""

from __future__ import annotations

import functools
import re
import typing as t
from contextlib import contextmanager, suppress
from pathlib import Path
from time import monotonic, sleep

import sqlalchemy as sa
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.singerlib import CatalogEntry, MetadataMapping, Schema
from singer_sdk.sql import SQLConnector
from singer_sdk.sql.connector import SQLToJSONSchema

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from singer_sdk.sql.connector import FullyQualifiedName

#: DuckDB's message when another process holds a conflicting lock on the database file.
DUCKDB_LOCK_MESSAGE = "Could not set lock on file"
#: DuckDB's message when this very process holds the file open with another configuration.
DUCKDB_SAME_PROCESS_MESSAGE = "different configuration than existing connections"


def shared_duckdb_connection(path: str) -> t.Any:
    """Connect read-write to the DuckDB database this process already has open.

    DuckDB hands a second `connect()` to the same file the same in-process database only when
    the configuration matches. dbt-duckdb and the loaders open it with none, while
    duckdb-engine's own connect() adds a user-agent setting, which DuckDB would refuse as a
    different configuration; so the plain connection is made here and given duckdb-engine's
    wrapper, which is what its connect() returns.
    """
    import duckdb
    from duckdb_engine import ConnectionWrapper

    return ConnectionWrapper(duckdb.connect(path))


class WarehouseLockedError(RuntimeError):
    """A writer (dbt, a loader) held the DuckDB file longer than `lock_timeout_seconds`."""


class WarehouseConnectionError(RuntimeError):
    """The warehouse refused or could not take the connection (server down, bad credentials)."""


class WarehouseObjectNotFoundError(ConfigValidationError):
    """A configured schema, table or column does not exist in the warehouse."""


class ReflectedColumn(t.NamedTuple):
    """One column as the warehouse declares it."""

    name: str
    type: sa.types.TypeEngine
    nullable: bool
    comment: str | None = None


class WarehouseSQLToJSONSchema(SQLToJSONSchema):
    """Adds the types marts use that the SDK's mapper does not know (JSON, arrays).

    Without these, a JSON column is declared `string` while the driver returns a dict, and every
    record fails validation downstream.
    """

    @functools.singledispatchmethod
    def to_jsonschema(self, column_type: sa.types.TypeEngine) -> dict:
        """Fall back to the SDK's own dispatch (strings, numbers, dates) for other types."""
        return super().to_jsonschema(column_type)

    @to_jsonschema.register
    def json_to_jsonschema(self, column_type: sa.types.JSON) -> dict:
        """Declare any JSON value: object, array or scalar, exactly as stored."""
        return {"type": ["object", "array", "string", "number", "boolean", "null"]}

    @to_jsonschema.register
    def array_to_jsonschema(self, column_type: sa.types.ARRAY) -> dict:
        """Declare an array of the element type (DuckDB `VARCHAR[]`, PostgreSQL `text[]`)."""
        return {"type": ["array"], "items": self.to_jsonschema(column_type.item_type)}


_DUCKDB_DECIMAL = re.compile(r"^(DECIMAL|NUMERIC)\((\d+),\s*(\d+)\)$")
_DUCKDB_SCALARS: dict[str, sa.types.TypeEngine] = {
    "VARCHAR": sa.String(),
    "TEXT": sa.String(),
    "UUID": sa.String(),
    "BOOLEAN": sa.Boolean(),
    "TINYINT": sa.Integer(),
    "SMALLINT": sa.Integer(),
    "INTEGER": sa.Integer(),
    "BIGINT": sa.BigInteger(),
    "HUGEINT": sa.BigInteger(),
    "UTINYINT": sa.Integer(),
    "USMALLINT": sa.Integer(),
    "UINTEGER": sa.Integer(),
    "UBIGINT": sa.BigInteger(),
    "FLOAT": sa.Float(),
    "REAL": sa.Float(),
    "DOUBLE": sa.Float(),
    "DATE": sa.Date(),
    "TIME": sa.Time(),
    "TIMESTAMP": sa.DateTime(),
    "TIMESTAMP_NS": sa.DateTime(),
    "TIMESTAMP_MS": sa.DateTime(),
    "TIMESTAMP_S": sa.DateTime(),
    "TIMESTAMP WITH TIME ZONE": sa.DateTime(timezone=True),
    "JSON": sa.JSON(),
}


def duckdb_type(data_type: str) -> sa.types.TypeEngine:
    """Map a DuckDB `information_schema.columns.data_type` string to a SQLAlchemy type.

    Nested types (STRUCT, MAP, UNION) come back from the driver as dicts, so they map to JSON;
    `T[]` lists map to arrays of T. Unknown scalars fall back to strings (emitted with `str()`).
    """
    text = data_type.strip().upper()
    if text.endswith("[]"):
        return sa.ARRAY(duckdb_type(data_type.strip()[:-2]))
    if text in _DUCKDB_SCALARS:
        return _DUCKDB_SCALARS[text]
    if match := _DUCKDB_DECIMAL.match(text):
        return sa.Numeric(int(match.group(2)), int(match.group(3)))
    if text.startswith(("STRUCT", "MAP", "UNION")):
        return sa.JSON()
    return sa.String()


def redacted_url(url: str) -> str:
    """Return the URL with its password masked: `sqlalchemy_url` is a secret setting."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable sqlalchemy_url>"


class WarehouseConnector(SQLConnector):
    """Read-only, short-lived connections to DuckDB, PostgreSQL or any installed dialect."""

    sql_to_jsonschema_converter = WarehouseSQLToJSONSchema

    @property
    def dialect_name(self) -> str:
        """Return the SQLAlchemy dialect name (duckdb, postgresql, sqlite, ...)."""
        return sa.engine.make_url(self.sqlalchemy_url).get_backend_name()

    def create_engine(self) -> sa.Engine:
        """Build an engine whose connections are read-only where the dialect allows it."""
        connect_args: dict[str, t.Any] = {}
        creator = None
        if self.dialect_name == "duckdb":
            connect_args["read_only"] = True
            path = sa.engine.make_url(self.sqlalchemy_url).database
            if not self.config.get("duckdb_read_only", True) and path:
                creator = functools.partial(shared_duckdb_connection, path)
            if path and path != ":memory:" and not Path(path).exists():
                msg = (
                    f"DuckDB file {path!r} does not exist (setting sqlalchemy_url). The tap opens "
                    f"it read-only and never creates it: build the marts with dbt first."
                )
                raise ConfigValidationError(msg)
        elif self.dialect_name == "postgresql":
            # psycopg and psycopg2 both pass libpq options through; a stray write fails loudly.
            connect_args["options"] = "-c default_transaction_read_only=on"
        try:
            if creator is not None:
                return sa.create_engine(
                    self.sqlalchemy_url,
                    poolclass=sa.pool.NullPool,
                    creator=creator,
                    json_serializer=self.serialize_json,
                    json_deserializer=self.deserialize_json,
                )
            return sa.create_engine(
                self.sqlalchemy_url,
                poolclass=sa.pool.NullPool,
                connect_args=connect_args,
                json_serializer=self.serialize_json,
                json_deserializer=self.deserialize_json,
            )
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            msg = (
                f"Cannot create a SQLAlchemy engine for {redacted_url(self.sqlalchemy_url)}: "
                f"{exc}. Is the dialect's driver installed (duckdb-engine, psycopg, ...)?"
            )
            raise ConfigValidationError(msg) from None

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        """Yield one connection (waiting out a DuckDB writer) and close it afterwards."""
        connection = self.open_connection()
        try:
            yield connection
        finally:
            connection.close()

    def open_connection(self) -> sa.Connection:
        """Open one connection; on a DuckDB lock conflict, wait for the writer, then fail clearly.

        The wait polls the lock, it does not assume how long dbt takes: the first successful open
        returns. `lock_timeout_seconds: 0` fails on the first conflict.
        """
        timeout = float(self.config.get("lock_timeout_seconds", 30))
        deadline = monotonic() + timeout
        delay = 0.05
        while True:
            try:
                return self._engine.connect()
            except sa.exc.OperationalError as exc:
                if DUCKDB_SAME_PROCESS_MESSAGE in str(exc.orig):
                    msg = (
                        f"The DuckDB file {self._engine.url.database!r} is already open "
                        f"read-write in this process; DuckDB cannot also open it read-only here. "
                        f"Close that connection first, or run the tap in its own process."
                    )
                    raise WarehouseLockedError(msg) from None
                if DUCKDB_LOCK_MESSAGE not in str(exc.orig):
                    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                    msg = f"Cannot connect to {redacted_url(self.sqlalchemy_url)}: {reason}"
                    raise WarehouseConnectionError(msg) from None
                if monotonic() + delay > deadline:
                    path = self._engine.url.database
                    msg = (
                        f"The DuckDB file {path!r} is locked by a process that opened it for "
                        f"writing (dbt, a loader, a shell?). tap-warehouse opens it read-only and "
                        f"waited {timeout:g}s (setting lock_timeout_seconds). Run the tap after "
                        f"that process finishes; keep the send ledger in a separate file. "
                        f"DuckDB said: {exc.orig}"
                    )
                    raise WarehouseLockedError(msg) from None
                sleep(delay)
                delay = min(delay * 2, 1.0)

    # ------------------------------------------------------------------ reflection

    def default_schema(self) -> str | None:
        """Return the schema unqualified names resolve to (DuckDB main, PostgreSQL public)."""
        with self._connect() as conn:
            return sa.inspect(conn).default_schema_name

    def table_names(self, schema: str | None) -> list[str]:
        """List tables and views in `schema`, to name alternatives when a table is missing."""
        with self._connect() as conn:
            if self.dialect_name == "duckdb":
                rows = conn.execute(
                    sa.text(
                        "select table_name from information_schema.tables "
                        "where table_schema = coalesce(:schema, current_schema()) "
                        "and table_catalog = current_database() order by table_name"
                    ),
                    {"schema": schema},
                )
                return [row[0] for row in rows]
            inspector = sa.inspect(conn)
            names = inspector.get_table_names(schema=schema)
            with suppress(NotImplementedError):
                names += inspector.get_view_names(schema=schema)
            return sorted(names)

    def reflect_columns(self, schema: str | None, table: str) -> list[ReflectedColumn]:
        """Return the columns in table order, with their comments (dbt persist_docs); [] if none."""
        with self._connect() as conn:
            if self.dialect_name == "duckdb":
                rows = conn.execute(
                    sa.text(
                        "select column_name, data_type, is_nullable, column_comment "
                        "from information_schema.columns "
                        "where table_schema = coalesce(:schema, current_schema()) "
                        "and table_name = :table and table_catalog = current_database() "
                        "order by ordinal_position"
                    ),
                    {"schema": schema, "table": table},
                )
                return [
                    ReflectedColumn(name, duckdb_type(kind), nullable == "YES", comment or None)
                    for name, kind, nullable, comment in rows
                ]
            inspector = sa.inspect(conn)
            if not inspector.has_table(table, schema=schema):
                return []
            return [
                ReflectedColumn(
                    column["name"],
                    column["type"],
                    bool(column.get("nullable", True)),
                    column.get("comment") or None,
                )
                for column in inspector.get_columns(table, schema=schema)
            ]

    def reflect_primary_key(self, schema: str | None, table: str) -> list[str]:
        """Return the declared primary key, if the table has one (dbt tables often do not)."""
        with self._connect() as conn:
            if self.dialect_name == "duckdb":
                row = conn.execute(
                    sa.text(
                        "select constraint_column_names from duckdb_constraints() "
                        "where schema_name = coalesce(:schema, current_schema()) "
                        "and table_name = :table and database_name = current_database() "
                        "and constraint_type = 'PRIMARY KEY'"
                    ),
                    {"schema": schema, "table": table},
                ).first()
                return list(row[0]) if row else []
            try:
                return list(
                    sa.inspect(conn).get_pk_constraint(table, schema=schema)["constrained_columns"]
                    or []
                )
            except NotImplementedError:
                return []

    def get_table_columns(
        self,
        full_table_name: str | FullyQualifiedName,
        column_names: list[str] | None = None,
    ) -> dict[str, sa.Column]:
        """Return the table's columns (SDK hook), reflected through `reflect_columns`."""
        _, schema_name, table_name = self.parse_full_table_name(full_table_name)
        wanted = {name.casefold() for name in column_names or []}
        return {
            column.name: sa.Column(column.name, column.type, nullable=column.nullable)
            for column in self.reflect_columns(schema_name, table_name)
            if not wanted or column.name.casefold() in wanted
        }

    def json_schema_for(self, kind: sa.types.TypeEngine, *, nullable: bool) -> dict:
        """Return the JSON schema of one column, nullable when the warehouse says so."""
        schema = dict(self.to_jsonschema_type(kind))
        types = schema.get("type")
        if nullable and types is not None:
            types = [types] if isinstance(types, str) else list(types)
            schema["type"] = [*types, "null"] if "null" not in types else types
        return schema

    # ------------------------------------------------------------------ discovery

    def discover_catalog_entries(
        self,
        *,
        exclude_schemas: t.Sequence[str] = (),
        reflect_indices: bool = True,
    ) -> list[dict]:
        """One catalog entry per configured table, named by the table alone.

        The SDK's default walks every schema and names streams `<schema>-<table>`; here the
        stream is `email_triggers` whether the mart lives in DuckDB's `main` or Postgres'
        `analytics_marts`, so Meltano selection and the target's configuration do not change
        with the warehouse.
        """
        settings = WarehouseSettings.from_config(self.config)
        schema = settings.schema
        entries = []
        for table in settings.tables:
            columns = self.reflect_columns(schema, table)
            if not columns:
                where = schema or f"{self.default_schema()} (the default schema)"
                available = self.table_names(schema)
                msg = (
                    f"Table {table!r} (setting `tables`) does not exist in schema {where} of "
                    f"{redacted_url(self.sqlalchemy_url)}; tables there: {available or 'none'}. "
                    f"Has dbt built the marts, and is `schema` right?"
                )
                raise WarehouseObjectNotFoundError(msg)
            names = [column.name for column in columns]
            primary_key = settings.primary_keys.get(table)
            if primary_key is None:
                primary_key = self.reflect_primary_key(schema, table)
            replication_key = settings.replication_keys.get(table)
            json_columns = settings.json_columns.get(table, [])
            for setting, wanted in (
                ("primary_keys", primary_key),
                ("replication_keys", [replication_key] if replication_key else []),
                ("json_columns", json_columns),
            ):
                if missing := [name for name in wanted if name not in names]:
                    msg = (
                        f"Setting `{setting}` names column(s) {missing} of table {table!r}, "
                        f"which has only {names}"
                    )
                    raise WarehouseObjectNotFoundError(msg)
            properties = {}
            for column in columns:
                prop: dict[str, t.Any]
                if column.name in json_columns:
                    prop = {"type": ["object", "array", "null"]}
                else:
                    prop = self.json_schema_for(column.type, nullable=column.nullable)
                if column.comment:  # dbt's column descriptions (persist_docs) document the catalog
                    prop["description"] = column.comment
                properties[column.name] = prop
            json_schema = {"type": "object", "properties": properties}
            method = "INCREMENTAL" if replication_key else "FULL_TABLE"
            entry = CatalogEntry(
                tap_stream_id=table,
                stream=table,
                table=table,
                key_properties=primary_key,
                schema=Schema.from_dict(json_schema),
                is_view=None,
                replication_method=method,
                replication_key=replication_key,
                metadata=MetadataMapping.get_standard_metadata(
                    schema_name=schema,
                    schema=json_schema,
                    replication_method=method,
                    key_properties=primary_key,
                    valid_replication_keys=[replication_key] if replication_key else None,
                    # Configured tables are the point of the run; a catalog can still deselect.
                    selected_by_default=True,
                ),
                database=None,
                row_count=None,
                stream_alias=None,
            )
            entries.append(entry.to_dict())
        return entries


#: What `tables` means when unset: the mart the email target consumes.
DEFAULT_TABLES = ("email_triggers",)
#: Per-table defaults; configured values are merged over them (set a table to null to drop one).
DEFAULT_REPLICATION_KEYS: dict[str, str | None] = {"email_triggers": "computed_at"}
DEFAULT_PRIMARY_KEYS: dict[str, list[str] | None] = {"email_triggers": ["trigger_id"]}


class WarehouseSettings(t.NamedTuple):
    """The tap's table settings with defaults merged, validated once."""

    schema: str | None
    tables: list[str]
    replication_keys: dict[str, str | None]
    primary_keys: dict[str, list[str] | None]
    json_columns: dict[str, list[str]]

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> WarehouseSettings:
        """Merge the per-table defaults under the configured values; reject duplicates."""
        tables = list(config.get("tables") or DEFAULT_TABLES)
        if duplicates := sorted({name for name in tables if tables.count(name) > 1}):
            msg = f"Setting `tables` lists {duplicates} more than once"
            raise ConfigValidationError(msg)
        return cls(
            schema=config.get("schema") or None,
            tables=tables,
            replication_keys={**DEFAULT_REPLICATION_KEYS, **(config.get("replication_keys") or {})},
            primary_keys={**DEFAULT_PRIMARY_KEYS, **(config.get("primary_keys") or {})},
            json_columns=dict(config.get("json_columns") or {}),
        )
