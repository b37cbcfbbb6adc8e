"""target-duckdb-bulk: a Singer loader that lands each batch in DuckDB with one read_json upsert."""

from target_duckdb_bulk.target import TargetDuckDBBulk

__all__ = ["TargetDuckDBBulk"]
