"""target-duckdb-bulk: a Singer loader that lands each batch in DuckDB with one read_json upsert."""
