"""tap-warehouse read path: keyset pages (short connections) against the SDK's one streamed query.

Builds a DuckDB `email_triggers` of N rows, then in the same run measures rows/s (and, in a
separate pass, Python peak memory with tracemalloc) of:
- baseline: `SQLStream.get_records` from singer-sdk (one connection held for the whole read);
- paged: `WarehouseStream.get_records` (one short read-only connection per page);
- the whole tap (`sync_all`, Singer messages written to /dev/null), paged.

    /work/venv/bin/python bench/bench_tap_warehouse.py [rows] [page_size]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import duckdb
from singer_sdk.sql import SQLStream
from tap_warehouse.tap import TapWarehouse


def build(path: Path, rows: int) -> None:
    payload = json.dumps(
        {
            "cart_total": 42.5,
            "currency": "EUR",
            "products": [{"product_id": "p1", "name": "Shoe", "price": 42.5, "quantity": 1}],
        }
    )
    con = duckdb.connect(str(path))
    con.execute("create schema marts")
    con.execute(
        f"""
        create table marts.email_triggers as
        select
            'trg_' || i::varchar as trigger_id,
            'cart_abandonment' as campaign,
            'u' || i::varchar as user_id,
            'user' || i::varchar || '@example.com' as email,
            'Name' as first_name,
            'en-US' as locale,
            'Europe/Paris' as timezone,
            timestamp '2026-11-28 09:00:00' as eligible_at,
            timestamp '2026-11-28 10:00:00' as send_after,
            timestamp '2026-11-29 10:00:00' as expires_at,
            false as holdout,
            '{payload}' as payload,
            timestamp '2026-11-28 09:00:00' + to_seconds(i // 100) as computed_at
        from range({rows}) t(i)
        """
    )
    con.close()


def timed(fn) -> tuple[float, int]:
    started = time.perf_counter()
    count = fn()
    return time.perf_counter() - started, count


def peak_memory(fn) -> int:
    """Python heap peak while `fn` runs (tracemalloc slows it, so timing is a separate pass)."""
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    page_size = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.duckdb"
        build(path, rows)
        config = {
            "sqlalchemy_url": f"duckdb:///{path}",
            "schema": "marts",
            "page_size": page_size,
        }

        def stream():
            return TapWarehouse(config=config, parse_env_config=False).streams["email_triggers"]

        def baseline() -> int:
            return sum(1 for _ in SQLStream.get_records(stream(), None))

        def paged() -> int:
            return sum(1 for _ in stream().get_records(None))

        def tap() -> int:
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                TapWarehouse(config=config, parse_env_config=False).sync_all()
            return rows

        timings = {"baseline": timed(baseline), "paged": timed(paged), "tap": timed(tap)}
        peaks = {"baseline": peak_memory(baseline), "paged": peak_memory(paged)}
    base_rate = timings["baseline"][1] / timings["baseline"][0]
    print(f"rows={rows} page_size={page_size}")
    for name, (elapsed, count) in timings.items():
        rate = count / elapsed
        peak = f"peak {peaks[name] / 2**20:6.1f} MiB" if name in peaks else ""
        print(
            f"{name:<9} {count:>8} rows {elapsed:6.2f}s {rate:9.0f} rows/s "
            f"x{rate / base_rate:4.2f} of baseline  {peak}"
        )
    print(f"generated at {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
