"""How a Singer stream name becomes a table name, the same in every warehouse.

dbt's sources read the raw tables by these names whichever loader wrote them (DuckDB or
PostgreSQL), so both loaders must derive them the same way.
"""

from __future__ import annotations


def table_name(stream_name: str) -> str:
    """Name the table a stream lands in: the stream name, other characters made `_`."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in stream_name).lower()
