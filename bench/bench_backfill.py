"""Backfill bench: a shop's history through the real `meltano run` path, then the nightly build.

    python bench/bench_backfill.py                                   # 20,000,000 events
    python bench/bench_backfill.py --events 2000000 --chunks 4       # a quick look

What a shop that adopts signalmail does on day one: its RudderStack history lands in the spool,
and `meltano run tap-rudderstack target-duckdb-bulk` (the dev environment: BATCH files) loads it.
The history arrives here in `--chunks` deliveries; each is one `meltano run` that resumes from
the previous run's state, so every run loads into a table that already holds the ones before.
That is the question: does a batch cost the same when the table holds 18M rows as when it is
empty (the loader deduplicates on messageId without an index over all history, docs/ingest.md)?

Receive times are spread over `--days` (100: 200,000 events a day at 20M, the 10x shop of
docs/scaling.md), as a real history's are: the loader's deduplication window (72 hours of
received_at) then covers a slice of the table, not all of it. With the history packed into a
day or two, every batch's window holds the whole table (the loader's documented worst case).

Each delivery carries `--retry-share` SDK retries: a second copy of an event (same messageId,
a receive time 1-120 s later) written into the next spool file, so copies straddle batches and
runs, as RudderStack's retries do.

Printed, all measured in this run:
- per delivery: rows already in the table, wall seconds, events/s, peak RSS of the whole
  process tree (Meltano, tap, loader), CPU seconds;
- the decay: the last delivery's events/s over the first's;
- DuckDB's own `read_json` of the whole spool into a table (the ceiling) and the mean load rate
  as a share of it;
- the warehouse file's size, and bytes per event;
- the nightly build (`dbt build --selector nightly --full-refresh`: every model and test) over
  the loaded history: seconds, peak RSS;
- the extrapolation to `--extrapolate` events (300M by default): load hours from the measured
  seconds per event against rows already loaded (a straight line through the deliveries; the
  flat rate when that line falls, which measures no growth), disk
  from bytes per event, the nightly build at the measured seconds per event (assumed linear).

Needs Meltano's plugins installed (`meltano install`). Takes about an hour at 20M events on the
2-core build machine; `--workdir` keeps the files for a look afterwards (`--keep`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
from bench_ingest import REPO, Measured, make_event, private_meltano_sys_dir, run_measured

BIN = Path(sys.executable).parent
START = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def stamp(at: dt.datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def generate_delivery(job: tuple[Path, int, int, int, float, int, float]) -> tuple[int, int]:
    """Write one delivery's spool files: `count` events numbered from `first`, plus retries.

    Returns (events, retry copies). Segment numbers continue across deliveries, so receive
    times only grow, as a real spool's do.
    """
    root, first, count, per_file, retry_share, seed, file_seconds = job
    rng = random.Random(seed)
    encode = msgspec.json.encode
    segment = first // per_file
    written = retries = 0
    carried: list[bytes] = []
    n = first
    while n < first + count:
        chunk = min(per_file, first + count - n)
        ts = int(START.timestamp() + segment * file_seconds)
        at0 = dt.datetime.fromtimestamp(ts, dt.UTC)
        folder = root / "rudder-logs" / "bench" / at0.strftime("%Y-%m-%d")
        folder.mkdir(parents=True, exist_ok=True)
        lines = carried
        carried = []
        for i in range(chunk):
            at = at0 + dt.timedelta(seconds=i * file_seconds / chunk)
            event = make_event(rng, n + i, at)
            lines.append(encode(event))
            if rng.random() < retry_share:
                # the SDK did not see the answer and sends again: same messageId, later receipt
                event["receivedAt"] = stamp(at + dt.timedelta(seconds=rng.uniform(1, 120)))
                carried.append(encode(event))
                retries += 1
        name = f"{ts}.bench.{uuid.UUID(int=rng.getrandbits(128)).hex}.json.gz"
        (folder / name).write_bytes(gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1))
        written += chunk
        n += chunk
        segment += 1
    if carried:  # the last file's retries go into a file of their own, a second after it
        ts = int(START.timestamp() + (segment - 1) * file_seconds) + 1
        folder = (
            root
            / "rudder-logs"
            / "bench"
            / dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")
        )
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{ts}.bench.{uuid.UUID(int=rng.getrandbits(128)).hex}.json.gz"
        (folder / name).write_bytes(gzip.compress(b"\n".join(carried) + b"\n", compresslevel=1))
    return written, retries


def move_into(spool: Path, delivery: Path) -> None:
    """Publish a delivery's files into the live spool (a rename per file, as the collector does)."""
    for path in sorted(delivery.rglob("*.json.gz")):
        target = spool / path.relative_to(delivery)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)


def meltano_env(work: Path, spool: Path, db: Path) -> dict[str, str]:
    sys_dir = private_meltano_sys_dir(work)
    batches = work / "batches"
    batches.mkdir(exist_ok=True)
    return {
        **os.environ,
        "MELTANO_SYS_DIR_ROOT": str(sys_dir),
        "MELTANO_STATE_BACKEND_URI": f"file://{work}/state",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "SIGNALMAIL_SPOOL": str(spool),
        "SIGNALMAIL_DUCKDB_PATH": str(db),
        "TAP_RUDDERSTACK_SOURCE": str(spool),
        "TAP_RUDDERSTACK_BATCH_CONFIG": json.dumps(
            {
                "encoding": {"format": "jsonl", "compression": "none"},
                "storage": {"root": batches.as_uri()},
                "batch_size": 200_000,
            }
        ),
        "TARGET_DUCKDB_BULK_FILEPATH": str(db),
        "TARGET_DUCKDB_BULK_DELETE_BATCH_FILES": "true",
    }


def raw_counts(db: Path) -> tuple[int, int]:
    """(rows, distinct message ids) over every raw event table."""
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        tables = [
            row[0]
            for row in con.execute(
                "select table_name from information_schema.columns"
                " where table_schema = 'rudderstack_raw' and column_name = 'message_id'"
            ).fetchall()
        ]
        union = " union all ".join(
            f'select message_id from rudderstack_raw."{name}"' for name in tables
        )
        rows, distinct = con.execute(
            f"select count(*), count(distinct message_id) from ({union})"
        ).fetchone()
    return int(rows), int(distinct)


def ceiling(spool: Path) -> Measured:
    """DuckDB's own read_json of the whole spool into a table: what any loader could reach."""
    work = Path(tempfile.mkdtemp(prefix="backfill-ceiling-"))
    code = (
        "import duckdb,sys;c=duckdb.connect(sys.argv[2]);"
        "c.execute('set enable_progress_bar=false');"
        "c.execute(\"create table t as select * from read_json(?, format='newline_delimited',"
        ' union_by_name=true, maximum_object_size=16777216)", [sys.argv[1]])'
    )
    try:
        return run_measured(
            [
                sys.executable,
                "-c",
                code,
                str(spool / "rudder-logs/**/*.json.gz"),
                str(work / "c.db"),
            ],
            dict(os.environ),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def nightly_build(work: Path, db: Path) -> Measured:
    """`dbt build --selector nightly --full-refresh` over the history, by the CLI (as Meltano)."""
    project = REPO / "dbt_project"
    env = {
        **os.environ,
        "SIGNALMAIL_DBT_TARGET": "duckdb",
        "SIGNALMAIL_DUCKDB_PATH": str(db),
        "SIGNALMAIL_LEDGER_PATH": str(work / "ledger.duckdb"),
        "SIGNALMAIL_DBT_SCHEMA": "signals",
        "DBT_TARGET_PATH": str(work / "dbt-target"),
        "DBT_LOG_PATH": str(work / "dbt-logs"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    cmd = [str(BIN / "dbt"), "build", "--selector", "nightly", "--full-refresh", "--quiet"]
    cmd += ["--project-dir", str(project), "--profiles-dir", str(project)]
    return run_measured(cmd, env, cwd=project)


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b x."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = (
        sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    )
    return mean_y - slope * mean_x, slope


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--chunks", type=int, default=10, help="deliveries, one meltano run each")
    parser.add_argument("--per-file", type=int, default=50_000, help="events per spool file")
    parser.add_argument("--retry-share", type=float, default=0.005, help="events sent twice")
    parser.add_argument(
        "--days",
        type=float,
        default=100,
        help="receive times spread over this many days (20M over 100: 200,000 events a day,"
        " the 10x shop of docs/scaling.md); the loader's window covers 72 hours of them",
    )
    parser.add_argument("--extrapolate", type=int, default=300_000_000)
    parser.add_argument("--skip-build", action="store_true", help="no nightly build")
    parser.add_argument("--workdir", default="", help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--json", default="", help="write the figures here too")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-backfill-"))
    if args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    spool, db = work / "spool", work / "warehouse.duckdb"
    per_delivery = -(-args.events // args.chunks) // args.per_file * args.per_file or args.per_file
    # each spool file covers an equal share of the days (RudderStack writes a file per interval)
    file_seconds = args.days * 86400 / max(1, -(-args.events // args.per_file))
    jobs = []
    first = 0
    for number in range(args.chunks):
        count = min(per_delivery, args.events - first)
        if count <= 0:
            break
        jobs.append(
            (
                work / f"delivery-{number}",
                first,
                count,
                args.per_file,
                args.retry_share,
                number + 1,
                file_seconds,
            )
        )
        first += count
    results: dict = {"events": first, "deliveries": []}
    try:
        started = time.perf_counter()
        with multiprocessing.Pool(min(len(jobs), os.cpu_count() or 1)) as pool:
            made = pool.map(generate_delivery, jobs)
        retries = sum(r for _, r in made)
        print(
            f"generated {first:,} events and {retries:,} retry copies in {len(jobs)} deliveries"
            f" ({time.perf_counter() - started:.0f} s)"
        )
        env = meltano_env(work, spool, db)
        cmd = [
            str(BIN / "meltano"),
            "--environment",
            "dev",
            "run",
            "tap-rudderstack",
            "target-duckdb-bulk",
        ]
        print(
            f"\n{'delivery':>8} {'rows before':>12} {'events':>10} {'secs':>7} {'events/s':>9}"
            f" {'peak MB':>8} {'cpu s':>7}"
        )
        rows_before = 0
        for number, ((folder, _first, count, *_rest), (_, copies)) in enumerate(
            zip(jobs, made, strict=True)
        ):
            move_into(spool, folder)
            measured = run_measured(cmd, env, cwd=REPO)
            lines = count + copies
            rate = lines / measured.secs
            print(
                f"{number + 1:>8} {rows_before:>12,} {lines:>10,} {measured.secs:>7.1f}"
                f" {rate:>9,.0f} {measured.peak / 2**20:>8,.0f} {measured.cpu:>7.0f}"
            )
            results["deliveries"].append(
                {
                    "rows_before": rows_before,
                    "lines": lines,
                    "secs": measured.secs,
                    "peak_bytes": measured.peak,
                    "cpu": measured.cpu,
                }
            )
            rows_before += count  # the table keeps one row per message (docs/ingest.md)
        rows, distinct = raw_counts(db)
        print(
            f"\nraw tables: {rows:,} rows, {distinct:,} distinct message ids, {first:,} events"
            f" sent; copies left to staging's deduplication: {rows - distinct:,}"
        )
        results.update(rows=rows, distinct=distinct)
        assert distinct == first, f"lost events: {first - distinct:,}"

        deliveries = results["deliveries"]
        rates = [d["lines"] / d["secs"] for d in deliveries]
        total_lines = sum(d["lines"] for d in deliveries)
        total_secs = sum(d["secs"] for d in deliveries)
        mean_rate = total_lines / total_secs
        peak = max(d["peak_bytes"] for d in deliveries)
        top = ceiling(spool)
        top_rate = total_lines / top.secs
        disk = db.stat().st_size
        print(
            f"load: {mean_rate:,.0f} events/s over {total_secs:.0f} s;"
            f" last/first delivery {rates[-1] / rates[0]:.2f}x"
        )
        print(
            f"ceiling (DuckDB read_json of the spool): {top_rate:,.0f} events/s;"
            f" load/ceiling {mean_rate / top_rate:.2f}"
        )
        print(
            f"peak RSS of a load: {peak / 2**20:,.0f} MB;"
            f" warehouse file {disk / 2**30:.2f} GiB ({disk / first:.0f} bytes/event)"
        )
        results.update(mean_rate=mean_rate, decay=rates[-1] / rates[0], ceiling_rate=top_rate,
                       peak_bytes=peak, disk_bytes=disk)  # fmt: skip

        # seconds per event against rows already loaded: a line through the deliveries
        xs = [d["rows_before"] + d["lines"] / 2 for d in deliveries]
        ys = [d["secs"] / d["lines"] for d in deliveries]
        a, b = fit(xs, ys)
        n = args.extrapolate
        flat_hours = n / mean_rate / 3600
        # a negative slope (later deliveries faster, warm-up or noise) measures no growth: the
        # line through it would promise a load that gets cheaper forever, so the flat rate stands
        hours = (a * n + b * n * n / 2) / 3600 if b > 0 else flat_hours
        print(
            f"\nextrapolated to {n:,} events: load {hours:.1f} h"
            f" (flat at the measured rate: {flat_hours:.1f} h; fitted line: {a * 1e6:.1f} us per"
            f" event, {b * 1e15:+.2f} us more per billion rows already loaded"
            f"{', negative: not used' if b <= 0 else ''}),"
            f" disk {disk / first * n / 2**30:,.0f} GiB"
        )
        results.update(
            extrapolate=n, load_hours=hours, us_per_event=a * 1e6, slope_us_per_billion=b * 1e15
        )

        if not args.skip_build:
            build = nightly_build(work, db)
            print(
                f"nightly build (dbt build --selector nightly --full-refresh): {build.secs:.0f} s,"
                f" peak RSS {build.peak / 2**20:,.0f} MB;"
                f" at {n:,} events, about {build.secs / first * n / 3600:.1f} h if linear"
            )
            results.update(build_secs=build.secs, build_peak_bytes=build.peak)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
