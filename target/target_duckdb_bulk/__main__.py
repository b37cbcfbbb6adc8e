"""`python -m target_duckdb_bulk` runs the loader (same as the `target-duckdb-bulk` script)."""

from __future__ import annotations

from target_duckdb_bulk.target import TargetDuckDBBulk

TargetDuckDBBulk.cli()
