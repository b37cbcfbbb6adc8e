"""tap-warehouse's test data: `email_triggers` rows as the contract describes them, written to a
real DuckDB file, and an in-process tap run that returns what it emitted."""

from __future__ import annotations

import datetime as dt
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import duckdb
from tap_warehouse.tap import TapWarehouse

T0 = dt.datetime(2026, 11, 28, 9, 0, 0)

EMAIL_TRIGGERS_DDL = """
create table {table} (
    trigger_id varchar not null,
    campaign varchar not null,
    user_id varchar not null,
    email varchar not null,
    first_name varchar,
    locale varchar,
    timezone varchar not null,
    eligible_at timestamp not null,
    send_after timestamp not null,
    expires_at timestamp not null,
    holdout boolean not null,
    payload varchar not null,
    computed_at timestamp not null
)
"""


def trigger_row(n: int, computed_at: dt.datetime, **overrides) -> dict:
    """One email_triggers row as the contract (docs/contracts.md section 4) describes it."""
    row = {
        "trigger_id": f"t{n:04d}",
        "campaign": "cart_abandonment",
        "user_id": f"u{n}",
        "email": f"user{n}@example.com",
        "first_name": None if n % 3 == 0 else f"Name{n}",
        "locale": "en-US",
        "timezone": "Europe/Paris",
        "eligible_at": computed_at - dt.timedelta(minutes=60),
        "send_after": computed_at,
        "expires_at": computed_at + dt.timedelta(days=1),
        "holdout": n % 10 == 0,
        "payload": json.dumps(
            {
                "cart_total": 10.5 * n,
                "currency": "EUR",
                "products": [
                    {"product_id": f"p{n}", "name": f"Shoe {n}", "price": 10.5, "quantity": 1},
                ],
            }
        ),
        "computed_at": computed_at,
    }
    row.update(overrides)
    return row


def write_duckdb(path: Path, rows: list[dict], schema: str = "marts", create: bool = True) -> None:
    """Write rows with a read-write connection, closed before the tap runs (one writer)."""
    con = duckdb.connect(str(path))
    try:
        if create:
            con.execute(f"create schema if not exists {schema}")
            con.execute(EMAIL_TRIGGERS_DDL.format(table=f"{schema}.email_triggers"))
            con.execute(f"create table {schema}.other_mart (id integer primary key, label varchar)")
            con.execute(f"insert into {schema}.other_mart values (1, 'one'), (2, 'two')")
        for row in rows:
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            con.execute(
                f"insert into {schema}.email_triggers ({columns}) values ({marks})",
                list(row.values()),
            )
    finally:
        con.close()


def run_tap(config: dict, state: dict | None = None, catalog: dict | None = None):
    """Run a full sync in-process; return (records of email_triggers, messages, final state)."""
    tap = TapWarehouse(config=config, state=state, catalog=catalog, parse_env_config=False)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        tap.sync_all()
    messages = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    return records, messages, states[-1] if states else None
