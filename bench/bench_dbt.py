"""Tick latency of the dbt trigger path, against a full refresh measured in the same run.

History of `--events` simulated events is loaded into the raw tables (DuckDB file and/or a
PostgreSQL schema), a full refresh builds everything (the baseline), then each tick appends
`--tick-events` new events and times `dbt build --selector trigger_path`:

- through the CLI (a new process per tick: parse, connect, run), and
- through one long-lived dbtRunner (testkit's TickRunner: the project parsed once, results kept
  in memory instead of rewriting manifest.json and run_results.json; in a child process per
  engine, since one process cannot switch profiles safely; it keeps the DuckDB file open between
  ticks, so the CLI ticks run first).

Both modes start from the warehouse the full refresh left: the CLI ticks' events are taken back
out before the runner ticks (they would otherwise sit inside every model's `lookback_minutes`
window and be re-read by each runner tick).

Several sizes (`--events 1000000,5000000`) extend the same shop's history further back in time
(same `--users`, same `--daily-events`) and repeat the ticks, to see whether a tick stays flat as
history grows. Prints one line per tick and a summary of ratios.

    python bench/bench_dbt.py --events 1000000 --ticks 5
    python bench/bench_dbt.py --events 100000 --engines duckdb        # quick look
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from signalmail.progress import progress_bar
from testkit import raw_events
from testkit.harness import DbtFailed, TickRunner, Warehouse, run_dbt

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "dbt_project"


CHUNK = 50_000


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def warehouse_for(engine: str, args: argparse.Namespace) -> Warehouse:
    workdir = Path(args.workdir)
    if engine == "duckdb":
        return Warehouse(
            dialect="duckdb",
            schema="bench_signals",
            duckdb_path=workdir / "warehouse.duckdb",
            ledger_path=workdir / "ledger.duckdb",
            target_dir=workdir / "duckdb",
        )
    return Warehouse(
        dialect="postgres",
        schema="bench_signals",
        raw_schema="bench_raw",
        ledger_schema="bench_ledger",
        pg_url=args.pg_url,
        target_dir=workdir / "postgres",
    )


def connect(engine: str, wh: Warehouse, args: argparse.Namespace):
    if engine == "duckdb":
        import duckdb

        return duckdb.connect(str(wh.duckdb_path))
    import psycopg

    return psycopg.connect(args.pg_url, autocommit=True)


def reset(engine: str, wh: Warehouse, args: argparse.Namespace) -> None:
    if engine == "duckdb":
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        for path in (wh.duckdb_path, wh.ledger_path):
            if path.exists():
                path.unlink()
    with connect(engine, wh, args) as conn:
        if engine == "postgres":
            for schema in (wh.raw_schema, wh.schema, wh.ledger_schema):
                conn.execute(f'drop schema if exists "{schema}" cascade')
        raw_events.create_raw_tables(conn, engine, wh.raw_schema)


def traffic(start: datetime, end: datetime, count: int, seed: int, users: int):
    factory = raw_events.EventFactory(seed=f"bench-{seed}")
    return raw_events.Traffic(
        start=start, end=end, users=users, products=500, seed=seed, factory=factory
    ).events(count)


def load_history(engine: str, wh: Warehouse, args, have: int, want: int, now: datetime) -> None:
    """Extend history from `have` to `want` events, further back in time.

    One shop, growing older: the same `--users` at `--daily-events` a day, so `want` events
    cover the `want / daily_events` days before now. A longer history must not make a tick
    dearer; a bigger shop (more users, more events a day) rightly does, and is not this test.
    """
    day = timedelta(days=1)
    with (
        connect(engine, wh, args) as conn,
        progress_bar(f"{engine}: loading history", total=want - have) as bar,
    ):
        for offset in range(have, want, CHUNK):
            size = min(CHUNK, want - offset)
            # offset 0 is the newest event: each chunk is the slice of days just before the last
            end = now - day * offset / args.daily_events - timedelta(minutes=10)
            start = now - day * (offset + size) / args.daily_events - timedelta(minutes=10)
            events = traffic(start, end, size, seed=offset, users=args.users)
            raw_events.load_events(conn, engine, events, wh.raw_schema, spool_key=f"h{offset}")
            bar.advance(size)


def catch_up(engine: str, wh: Warehouse, args, since: datetime) -> datetime:
    """Load the shop's traffic from `since` to 10 minutes ago; return the new end of history.

    The shop keeps trading while a size is benched: without this, the next size's ticks
    would come half an hour after the newest history and their lookback window would hold
    less of it than the first size's did.
    """
    end = utc_now() - timedelta(minutes=10)
    count = round((end - since) / timedelta(days=1) * args.daily_events)
    if count > 0:
        events = traffic(since, end, count, seed=int(end.timestamp()), users=args.users)
        with connect(engine, wh, args) as conn:
            raw_events.load_events(
                conn, engine, events, wh.raw_schema, spool_key=f"catchup-{end:%H%M%S}"
            )
    return end


def load_tick(conn, engine: str, wh: Warehouse, args, tick: int, users: int, mode: str) -> None:
    """Append a tick of fresh events, received now (as a loader would)."""
    now = utc_now()
    events = list(traffic(now - timedelta(minutes=1), now, args.tick_events, 10**9 + tick, users))
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    for event in events:
        event["receivedAt"] = stamp
    raw_events.load_events(conn, engine, events, wh.raw_schema, spool_key=f"{mode}-tick{tick}")


TICK_ARGS = ["build", "--selector", "trigger_path", "--quiet"]


def save_state(engine: str, wh: Warehouse) -> Path | None:
    """Keep the warehouse as the full refresh left it (DuckDB: a copy of the closed file)."""
    if engine != "duckdb":
        return None
    saved = wh.duckdb_path.with_suffix(".before-ticks")
    shutil.copyfile(wh.duckdb_path, saved)
    return saved


def restore_state(engine: str, wh: Warehouse, args, saved: Path | None) -> None:
    """Put the warehouse back as the full refresh left it, so both modes tick the same state.

    Without this the runner's ticks would also re-read the CLI ticks' events, which lie inside
    every model's `lookback_minutes` window. DuckDB gets its file back; PostgreSQL loses the
    CLI ticks' raw rows and rebuilds the selection from scratch (not timed).
    """
    if saved is not None:
        wal = wh.duckdb_path.with_name(wh.duckdb_path.name + ".wal")
        wal.unlink(missing_ok=True)
        saved.replace(wh.duckdb_path)
        return
    drop_tick_events(engine, wh, args, "cli")
    run_dbt(wh, *TICK_ARGS, "--full-refresh")


def drop_tick_events(engine: str, wh: Warehouse, args, mode: str) -> None:
    """Delete the raw events of one mode's ticks (`cli` or `runner`)."""
    placeholder = "?" if engine == "duckdb" else "%s"
    with connect(engine, wh, args) as conn:
        for stream in raw_events.STREAM_COLUMNS:
            conn.execute(
                f'delete from "{wh.raw_schema}"."{stream}" where _spool_key like {placeholder}',
                (f"{mode}-tick%",),
            )


def lookback_events(engine: str, wh: Warehouse, args) -> int:
    """Raw events a tick re-reads besides its own: those within the project's
    `lookback_minutes` of the newest receipt, in every stream."""
    minutes = yaml.safe_load((PROJECT / "dbt_project.yml").read_text())["vars"]["lookback_minutes"]
    with connect(engine, wh, args) as conn:
        return sum(
            conn.execute(
                f'select count(*) from "{wh.raw_schema}"."{stream}" where received_at >= '
                f'(select max(received_at) from "{wh.raw_schema}"."{stream}")'
                f" - interval '{int(minutes)} minutes'"
            ).fetchone()[0]
            for stream in raw_events.STREAM_COLUMNS
        )


def cli_ticks(engine: str, wh: Warehouse, args, size: int) -> list[float]:
    times = []
    for tick in range(args.ticks):
        with connect(engine, wh, args) as conn:
            load_tick(conn, engine, wh, args, tick + size, users=args.users, mode="cli")
        started = time.perf_counter()
        run_dbt(wh, *TICK_ARGS)
        times.append(time.perf_counter() - started)
        print(f"{engine:8} {size:>9} cli    tick {tick + 1}: {times[-1]:7.2f} s", flush=True)
    return times


def runner_ticks(engine: str, args_dict: dict, size: int, queue) -> None:
    """Child process: one long-lived TickRunner for this engine; reports tick times.

    The warm-up is the parse plus a first tick; ticks then reuse the parsed project.
    """
    args = argparse.Namespace(**args_dict)
    wh = warehouse_for(engine, args)
    try:
        started = time.perf_counter()
        runner = TickRunner(wh)
        runner.invoke(*TICK_ARGS, reuse_connections=True)
        warmup = time.perf_counter() - started
    except DbtFailed as error:
        queue.put(("error", f"warm-up failed: {error}"))
        return
    times = []
    conn = connect(engine, wh, args)  # DuckDB: shares the runner's open database in-process
    try:
        for tick in range(args.ticks):
            load_tick(conn, engine, wh, args, 10**6 + tick + size, users=args.users, mode="runner")
            started = time.perf_counter()
            try:
                runner.invoke(*TICK_ARGS, reuse_connections=True)
            except DbtFailed as error:
                queue.put(("error", f"tick {tick + 1} failed: {error}"))
                return
            times.append(time.perf_counter() - started)
            print(f"{engine:8} {size:>9} runner tick {tick + 1}: {times[-1]:7.2f} s", flush=True)
    finally:
        conn.close()
    queue.put(("ok", (warmup, times)))


def bench_engine(engine: str, args: argparse.Namespace) -> list[dict]:
    wh = warehouse_for(engine, args)
    reset(engine, wh, args)
    now = utc_now()
    history_end = now - timedelta(minutes=10)
    have = 0
    rows = []
    for size in args.sizes:
        # The previous size's runner ticks were received minutes ago: left in, they would sit
        # inside every model's lookback window and this size's ticks would re-read them on top
        # of their own, as the runner would the CLI ticks' (restore_state). The full refresh
        # below rebuilds everything without them.
        drop_tick_events(engine, wh, args, "runner")
        started = time.perf_counter()
        load_history(engine, wh, args, have, size, now)
        history_end = catch_up(engine, wh, args, history_end)
        have = size
        print(
            f"{engine:8} {size:>9} loaded history in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        started = time.perf_counter()
        run_dbt(wh, "run", "--full-refresh", "--quiet")  # everything, nightly models included
        everything = time.perf_counter() - started
        print(f"{engine:8} {size:>9} dbt run --full-refresh (all models, CLI): {everything:.2f} s")
        started = time.perf_counter()
        run_dbt(wh, *TICK_ARGS, "--full-refresh")  # the baseline: same selection, from scratch
        full = time.perf_counter() - started
        print(f"{engine:8} {size:>9} full refresh of trigger_path (CLI): {full:.2f} s", flush=True)
        saved = save_state(engine, wh)
        cli = cli_ticks(engine, wh, args, size)
        restore_state(engine, wh, args, saved)  # the runner starts where the CLI started
        lookback = lookback_events(engine, wh, args)
        print(f"{engine:8} {size:>9} raw events in the lookback window before ticks: {lookback}")
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=runner_ticks, args=(engine, vars(args), size, queue))
        child.start()
        status, payload = queue.get()
        child.join()
        if status != "ok":
            raise SystemExit(f"{engine}: long-lived runner {payload}")
        warmup, runner = payload
        rows.append(
            {
                "engine": engine,
                "size": size,
                "full": full,
                "cli": cli,
                "warmup": warmup,
                "runner": runner,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", default="1000000", help="history size, or several comma-separated growing sizes"
    )
    parser.add_argument("--ticks", type=int, default=5, help="ticks per mode and size")
    parser.add_argument("--tick-events", type=int, default=1000, help="new events per tick")
    parser.add_argument("--users", type=int, default=10_000, help="shoppers in the simulated shop")
    parser.add_argument(
        "--daily-events",
        type=int,
        default=20_000,
        help="events a day: history of N events covers N / daily-events days before now",
    )
    parser.add_argument("--engines", default="duckdb,postgres", help="duckdb, postgres or both")
    parser.add_argument(
        "--workdir",
        default="/tmp/signalmail-bench-dbt",
        help="where the DuckDB files and dbt target folders go",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "SIGNALMAIL_PG_URL", "postgresql://signalmail:signalmail@127.0.0.1:5432/signalmail_test"
        ),
        help="PostgreSQL for the postgres engine (schemas bench_raw, bench_signals)",
    )
    args = parser.parse_args()
    args.sizes = sorted(int(size) for size in args.events.split(","))

    results = []
    for engine in args.engines.split(","):
        results.extend(bench_engine(engine.strip(), args))

    print(
        "\nengine   events     full(s)  cli tick(s)  runner tick(s)  runner max(s)  runner/full"
        "  cli/full  warm-up(s)"
    )
    for row in results:
        cli, runner = statistics.median(row["cli"]), statistics.median(row["runner"])
        print(
            f"{row['engine']:8} {row['size']:>9} {row['full']:8.2f} {cli:12.2f} {runner:15.2f}"
            f" {max(row['runner']):14.2f} {runner / row['full']:12.1%} {cli / row['full']:9.1%}"
            f" {row['warmup']:11.2f}"
        )
    print(
        "(median of ticks, and the slowest runner tick; tick = append events + dbt build"
        " --selector trigger_path; full = the same build with --full-refresh, CLI)"
    )


if __name__ == "__main__":
    main()
