"""`python -m target_postgres_bulk` runs the loader (same as the `target-postgres-bulk` script)."""

from __future__ import annotations

from target_postgres_bulk.target import TargetPostgresBulk

TargetPostgresBulk.cli()
