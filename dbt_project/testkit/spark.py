"""Apache Spark in local mode for the dbt project's tests (docs/spark.md).

dbt-spark's `session` method starts Spark inside the dbt process, and Hive's embedded Derby
metastore admits one JVM at a time: so on Spark every dbt invocation of a test runs in the test's
own process (dbtRunner), which then shares dbt's Spark session to load raw rows and read results.
One JVM start (18-34 s here) per test process instead of one per dbt call.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

__all__ = ["SparkConnection", "iceberg_jar"]

# Spark's Scala build of pyspark 3.5 is 2.12; the package ships 2.13 builds too
ICEBERG_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"


def iceberg_jar() -> Path:
    """Return the Iceberg runtime jar that the PyPI package snowpark-connect-deps-iceberg ships."""
    import snowpark_connect_deps_iceberg

    path = Path(snowpark_connect_deps_iceberg.__file__).parent / "jars" / ICEBERG_JAR
    if not path.is_file():
        raise FileNotFoundError(f"{path}: install the spark extra (make spark)")
    return path


# a double-quoted identifier, outside single-quoted strings
_QUOTED = re.compile(r"""('(?:[^']|'')*')|"([^"]*)\"""")


def backtick_identifiers(sql: str) -> str:
    """Rewrite standard "identifiers" as Spark's `identifiers` (string literals untouched).

    The tests' SQL quotes identifiers the standard way, as DuckDB and Postgres read them; Spark
    with ANSI mode off (dbt-spark turns it off) reads double quotes as a string literal.
    """
    return _QUOTED.sub(lambda m: m.group(1) or f"`{m.group(2)}`", sql)


def _plain(value: Any) -> Any:
    """Turn a Spark Row (struct) into a dict, recursively, and times into ISO text."""
    from pyspark.sql import Row

    if isinstance(value, Row):
        return {key: _plain(item) for key, item in value.asDict().items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class SparkConnection:
    """The DB-API subset the tests use (execute, fetchall, fetchone) over this process's Spark.

    A context manager like a duckdb or psycopg connection; leaving it does not stop Spark,
    which dbt keeps using.
    """

    def __init__(self) -> None:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is None:
            # dbt created it in another thread: the builder returns that same session
            active = SparkSession.builder.getOrCreate()
        self.session = active
        self._rows: list[tuple[Any, ...]] = []

    def __enter__(self) -> SparkConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, parameters: list[Any] | None = None) -> SparkConnection:
        """Run one statement; parameters are not supported (Spark SQL has none here)."""
        if parameters:
            raise ValueError("SparkConnection.execute takes no parameters")
        frame = self.session.sql(backtick_identifiers(sql))
        self._rows = [tuple(_plain(value) for value in row) for row in frame.collect()]
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Return all rows of the last statement."""
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        """Return the first row of the last statement."""
        return self._rows[0] if self._rows else None
