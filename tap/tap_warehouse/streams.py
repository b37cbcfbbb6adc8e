"""One stream per mart: `email_triggers` by default, any other table or view by name.

A record is one row of the mart, columns as the warehouse types them. For `email_triggers` that
is one email due now (docs/contracts.md section 4); `payload` stays the JSON text the mart stores
unless the table is listed in `json_columns`.

Reading is keyset-paginated on (replication key, primary key): each page is one short read-only
connection, closed before its rows are emitted, so the tap never holds the DuckDB file while the
target downstream is busy sending and dbt can take the write lock between pages.
"""

from __future__ import annotations

import datetime
import decimal
import json
import typing as t

import sqlalchemy as sa
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.singerlib.catalog import REPLICATION_INCREMENTAL
from singer_sdk.sql import SQLStream

from tap_warehouse.connector import WarehouseConnector

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from singer_sdk.helpers.types import Context, Record


class InvalidJSONColumnError(ValueError):
    """A column listed in `json_columns` holds text that is not JSON."""


def coerce_bookmark(value: t.Any, column_type: sa.types.TypeEngine) -> t.Any:
    """Turn a bookmark from state (JSON: ISO strings) back into the column's Python type.

    Binding the ISO string itself works on some drivers and not others, and an aware datetime
    compared with a naive `timestamp` column is shifted by the session time zone on DuckDB. Marts
    store naive UTC (contract), so aware bookmarks are converted to UTC and made naive for naive
    columns and kept aware for `timestamp with time zone` columns.
    """
    if value is None or not isinstance(value, str):
        return value
    if isinstance(column_type, sa.types.DateTime):
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if getattr(column_type, "timezone", False):
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(datetime.UTC).replace(tzinfo=None)
        return parsed
    if isinstance(column_type, sa.types.Date):
        return datetime.date.fromisoformat(value[:10])
    if isinstance(column_type, sa.types.Integer):
        return int(value)
    if isinstance(column_type, sa.types.Numeric):
        return decimal.Decimal(value)
    return value


def after_keyset(columns: Sequence[sa.ColumnElement], values: Sequence[t.Any]) -> sa.ColumnElement:
    """`(c1, c2, ...) > (v1, v2, ...)` written out with AND/OR, which every dialect accepts.

    Row-value comparison is not portable (BigQuery, older SQLite), the expanded form is.
    """
    clauses = []
    for index, column in enumerate(columns):
        equal_prefix = [columns[i] == values[i] for i in range(index)]
        clauses.append(sa.and_(*equal_prefix, column > values[index]))
    return sa.or_(*clauses)


class WarehouseStream(SQLStream):
    """Rows of one mart, incrementally on its replication key when it has one."""

    connector_class = WarehouseConnector
    # Columns are typed by the warehouse; conforming nested JSON values recursively only costs
    # time (it was a third of the tap's CPU), root-level conformance still formats timestamps.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.ROOT_ONLY

    def __init__(
        self,
        tap: t.Any,
        catalog_entry: dict,
        connector: WarehouseConnector | None = None,
    ) -> None:
        super().__init__(tap=tap, catalog_entry=catalog_entry, connector=connector)
        # The SDK applies the catalog's replication key only for an input catalog (--catalog);
        # a discovered catalog carries it too, and a plain `tap-warehouse --config` run must be
        # incremental as well.
        entry = self._singer_catalog_entry
        root = entry.metadata.root
        self.replication_key = entry.replication_key or root.replication_key
        if method := entry.replication_method or root.forced_replication_method:
            self.forced_replication_method = method

    @property
    def connector(self) -> WarehouseConnector:
        """The tap's connector, typed."""
        return t.cast("WarehouseConnector", self._connector)

    @property
    def table_name(self) -> str:
        """The mart's table name (also the stream name, the same on every warehouse)."""
        return str(self._singer_catalog_entry.table or self.name)

    @property
    def lookback(self) -> datetime.timedelta:
        """How far before the bookmark each run re-reads, to catch rows committed late."""
        return datetime.timedelta(seconds=int(self.config.get("replication_lookback_seconds", 0)))

    @property
    def json_columns(self) -> list[str]:
        """Columns whose JSON text this stream parses into objects (setting `json_columns`)."""
        return list((self.config.get("json_columns") or {}).get(self.table_name, []))

    @property
    def is_sorted(self) -> bool:
        """Sorted (resumable mid-run) unless a lookback deliberately re-reads older rows.

        With a lookback the first rows of a run are older than the saved bookmark, which the SDK
        would reject as unsorted; the bookmark is then finalized at the end of the run instead.
        """
        return self.replication_method == REPLICATION_INCREMENTAL and not self.lookback

    def _order_columns(self, table: sa.Table) -> list[sa.Column]:
        names = [self.replication_key] if self.replication_key else []
        names += [key for key in self.primary_keys if key not in names]
        missing = [name for name in names if name not in table.columns]
        if missing:
            msg = (
                f"Stream {self.name!r}: column(s) {missing} (replication or primary key) are not "
                f"in table {self.fully_qualified_name}; columns are {sorted(table.columns.keys())}"
            )
            raise ValueError(msg)
        return [table.columns[name] for name in names]

    def _base_filter(self, table: sa.Table, context: Context | None) -> list[sa.ColumnElement]:
        if not self.replication_key:
            return []
        column = table.columns[self.replication_key]
        clauses: list[sa.ColumnElement] = [column.is_not(None)]
        start = coerce_bookmark(self.get_starting_replication_key_value(context), column.type)
        if start is not None:
            if self.lookback and isinstance(start, datetime.datetime):
                start -= self.lookback
            # >= not >: rows sharing the bookmark's timestamp may have committed after the last
            # read. They come again; the target's send ledger drops what it already handled.
            clauses.append(column >= start)
        return clauses

    def _warn_null_replication_keys(self, table: sa.Table) -> None:
        if not self.replication_key:
            return
        column = table.columns[self.replication_key]
        query = sa.select(sa.func.count()).select_from(table).where(column.is_(None))
        with self.connector._connect() as conn:
            nulls = conn.execute(query).scalar_one()
        if nulls:
            self.logger.warning(
                "Stream %s: %d row(s) have a null %s and are not read incrementally; "
                "the mart should never produce them (it is a not_null contract column).",
                self.name,
                nulls,
                self.replication_key,
            )

    def _parse_json(self, record: dict, json_columns: list[str]) -> dict:
        for name in json_columns:
            value = record.get(name)
            if isinstance(value, str):
                try:
                    record[name] = json.loads(value)
                except json.JSONDecodeError as exc:
                    key = {k: record.get(k) for k in self.primary_keys}
                    msg = (
                        f"Stream {self.name!r}, row {key}: column {name!r} is listed in "
                        f"json_columns but holds invalid JSON ({exc.msg} at char {exc.pos})"
                    )
                    raise InvalidJSONColumnError(msg) from None
        return record

    def get_records(self, context: Context | None) -> Iterable[Record]:
        """Rows in (replication key, primary key) order, one short connection per page."""
        if context:
            msg = f"Stream {self.name!r} does not support partitioning."
            raise NotImplementedError(msg)
        selected = list(self.get_selected_schema()["properties"].keys())
        # Catalog-derived properties are rebuilt on every access: resolve them once per read.
        json_columns = self.json_columns
        keys = [self.replication_key, *self.primary_keys] if self.replication_key else []
        columns = list(dict.fromkeys([*selected, *keys, *self.primary_keys]))
        table = self.connector.get_table(self.fully_qualified_name, column_names=columns)
        if missing := [name for name in columns if name not in table.columns]:
            msg = (
                f"Stream {self.name!r}: the catalog selects column(s) {missing} that table "
                f"{self.fully_qualified_name} no longer has; run discovery again (--discover)"
            )
            raise ValueError(msg)
        order = self._order_columns(table)
        base = self._base_filter(table, context)
        self._warn_null_replication_keys(table)

        page_size = int(self.config.get("page_size", 10_000))
        if self.ABORT_AT_RECORD_COUNT is not None:
            page_size = min(page_size, self.ABORT_AT_RECORD_COUNT + 1)

        if not order:
            # No key to page on: one streamed read; the connection lives as long as the stream.
            query = sa.select(*(table.columns[name] for name in selected)).where(*base)
            with self.connector._connect() as conn:
                for row in conn.execution_options(stream_results=True).execute(query).mappings():
                    yield self._parse_json(dict(row), json_columns)
            return

        last: list[t.Any] | None = None
        while True:
            query = sa.select(*table.columns).where(*base).order_by(*order).limit(page_size)
            if last is not None:
                query = query.where(after_keyset(order, last))
            with self.connector._connect() as conn:
                result = conn.execute(query)
                names = list(result.keys())
                # fetchall(): the drivers' bulk fetch (row-by-row iteration is ~3x slower on
                # duckdb-engine); a page is bounded by page_size.
                rows = result.fetchall()
            for values in rows:
                by_name = dict(zip(names, values, strict=True))
                yield self._parse_json({name: by_name[name] for name in selected}, json_columns)
            if len(rows) < page_size:
                return
            tail = dict(zip(names, rows[-1], strict=True))
            last = [tail[column.name] for column in order]
