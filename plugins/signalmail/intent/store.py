"""Write the newest scores to the warehouse in one transaction (readers see old or new).

DuckDB takes the arrays as a registered relation and PostgreSQL takes COPY: a row-by-row
insert of a large shop's users would take minutes of the nightly window.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import sqlalchemy as sa

SCORES_TABLE = "purchase_scores"

_COLUMNS = (
    "user_id varchar not null primary key, purchase_probability double precision not null, "
    "model_version varchar not null, scored_at timestamp not null"
)


def write_scores(
    engine: sa.Engine,
    schema: str,
    user_ids: np.ndarray,
    probability: np.ndarray,
    model_version: str,
    scored_at: dt.datetime,
) -> int:
    """Replace `schema`.purchase_scores with these rows; return how many were written."""
    naive = scored_at.astimezone(dt.UTC).replace(tzinfo=None)
    table = f'"{schema}"."{SCORES_TABLE}"'
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema if not exists "{schema}"'))
        conn.execute(sa.text(f"drop table if exists {table}"))
        conn.execute(sa.text(f"create table {table} ({_COLUMNS})"))
        raw = conn.connection.driver_connection
        assert raw is not None  # None only once the pooled connection is closed
        if engine.dialect.name == "duckdb":
            raw.register(
                "signalmail_new_scores",
                {
                    "user_id": np.asarray(user_ids, dtype=object),
                    "purchase_probability": np.asarray(probability, dtype=float),
                },
            )
            try:
                raw.execute(
                    f"insert into {table} select user_id, purchase_probability, ?, ? "  # noqa: S608
                    "from signalmail_new_scores",
                    [model_version, naive],
                )
            finally:
                raw.unregister("signalmail_new_scores")
        else:
            with raw.cursor() as cur, cur.copy(f"copy {table} from stdin") as copy:
                for user_id, p in zip(user_ids, probability, strict=True):
                    copy.write_row((user_id, float(p), model_version, naive))
    return len(user_ids)
