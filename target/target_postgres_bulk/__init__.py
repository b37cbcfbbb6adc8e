"""target-postgres-bulk: a Singer loader that lands each batch in PostgreSQL with COPY."""

from target_postgres_bulk.target import TargetPostgresBulk

__all__ = ["TargetPostgresBulk"]
