"""The warehouse as the watch holds it: one open DuckDB database, or a PostgreSQL server.

DuckDB admits one writing process per file, and inside that process it hands every
`duckdb.connect(path)` with the same configuration the same open database. The watch opens it
once and keeps it open: the loader, dbt and the warehouse tap all connect to that one database,
so nothing is reopened between steps. Closing it each cycle would cost a checkpoint every few
seconds (about 1.3 s each for a 7,000-event warehouse, measured), so the write-ahead log is
folded into the file only when it has grown past `checkpoint_wal_mb` and when the watch stops.

PostgreSQL needs none of this: every step opens its own connections.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Protocol

from signalmail.watch.settings import WatchSettings


class Warehouse(Protocol):
    """What the watch asks of a warehouse between steps."""

    def missing_tables(self, schema: str, names: list[str]) -> list[str]:
        """Tables among `names` that do not exist in `schema` yet."""

    def count_rows(self, schema: str, table: str) -> int | None:
        """Rows in a table, None when it does not exist."""

    def wal_bytes(self) -> int:
        """Size of the write-ahead log the warehouse would fold in at a checkpoint."""

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file."""

    def close(self) -> None:
        """Checkpoint and let go of the database."""

    def abandon(self) -> None:
        """Let go of the database without touching it (after a fatal error)."""


class DuckDBWarehouse:
    """The DuckDB file, opened once for the life of the watch (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        import duckdb

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self.connection = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise RuntimeError(
                f"cannot open {path} for writing: another process holds it (a `meltano run`, "
                f"dbt, another watch?). The watch must be the warehouse's only writer. "
                f"DuckDB said: {exc}"
            ) from None

    def missing_tables(self, schema: str, names: list[str]) -> list[str]:
        """Tables among `names` that do not exist in `schema` yet."""
        found = {
            name
            for (name,) in self.connection.execute(
                "select table_name from information_schema.tables "
                "where table_catalog = current_database() and table_schema = ?",
                [schema],
            ).fetchall()
        }
        return [name for name in names if name not in found]

    def count_rows(self, schema: str, table: str) -> int | None:
        """Rows in a table, None when it does not exist."""
        if self.missing_tables(schema, [table]):
            return None
        quoted = f'"{schema}"."{table}"'
        row = self.connection.execute(f"select count(*) from {quoted}").fetchone()  # noqa: S608
        return int(row[0]) if row else 0

    def wal_bytes(self) -> int:
        """Size of the file's write-ahead log."""
        try:
            return os.path.getsize(f"{self.path}.wal")
        except FileNotFoundError:
            return 0

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file."""
        self.connection.execute("CHECKPOINT")

    def close(self) -> None:
        """Checkpoint, then close the watch's own connection (the last one holding the file)."""
        try:
            self.checkpoint()
        finally:
            self.connection.close()

    def abandon(self) -> None:
        """Let go of an invalidated database: no checkpoint, errors on the way out ignored."""
        # the instance is unusable, the file sound: the next process replays its log
        with contextlib.suppress(Exception):
            self.connection.close()


class PostgresWarehouse:
    """A PostgreSQL warehouse: short connections, nothing held between steps."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def missing_tables(self, schema: str, names: list[str]) -> list[str]:
        """Tables among `names` that do not exist in `schema` yet."""
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            found = {
                name
                for (name,) in conn.execute(
                    sa.text(
                        "select table_name from information_schema.tables "
                        "where table_schema = :schema"
                    ),
                    {"schema": schema},
                )
            }
        return [name for name in names if name not in found]

    def count_rows(self, schema: str, table: str) -> int | None:
        """Rows in a table, None when it does not exist."""
        import sqlalchemy as sa

        if self.missing_tables(schema, [table]):
            return None
        with self.engine.connect() as conn:
            quoted = f'"{schema}"."{table}"'
            return int(conn.execute(sa.text(f"select count(*) from {quoted}")).scalar_one())  # noqa: S608

    def wal_bytes(self) -> int:
        """PostgreSQL manages its own log."""
        return 0

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints on its own."""

    def close(self) -> None:
        """Close the pool."""
        self.engine.dispose()

    def abandon(self) -> None:
        """Close the pool."""
        self.engine.dispose()


def open_warehouse(settings: WatchSettings) -> Any:
    """Open the warehouse of `settings.engine` for the life of the watch."""
    if settings.engine == "duckdb":
        return DuckDBWarehouse(settings.path(settings.duckdb_path))
    return PostgresWarehouse(settings.warehouse_url())
