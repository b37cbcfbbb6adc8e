"""The backfill's bottleneck: the tap reading the spool in Python, against DuckDB reading it.

    python bench/bench_spool_read.py                    # 1,000,000 events
    python bench/bench_spool_read.py --events 200000    # a quick look

The backfill bench (bench_backfill.py) loads at about a quarter of DuckDB's own `read_json` of
the spool, and its goal is half. The tap is the critical path: one Python process that decodes
each event, builds its record and encodes it again. This bench measures, on one spool and in
one run, what a tap that handed the reading to DuckDB could reach, before anyone builds it:

- **ceiling**: DuckDB's `read_json` of the whole spool into a table (bench_backfill's ceiling);
- **tap-rudderstack**: the tap alone, writing its BATCH files (JSON lines, as the backfill's
  `meltano run` does) with its output thrown away: the tap's part of a delivery today;
- **duckdb read**: one DuckDB statement that reads the spool with the raw tables' columns
  (`read_json` with explicit types, the flattened context fields extracted) and writes a
  Parquet file per event type: what a DuckDB-reading tap's batch files would cost to make.
  It has none of the tap's checks (rejections with their reasons, timestamp normalisation,
  the text and object rules of tap_rudderstack.records, line numbers): a lower bound;
- **parquet load**: those files into one DuckDB table per stream: the loader's part, were
  the batch files Parquet rather than JSON lines.

Each is a subprocess; printed are wall seconds, CPU seconds, peak RSS and events/s as a share
of the ceiling's. The machine's speed moves between hours; the shares, measured in the same
run, are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench_backfill import ceiling, generate_delivery
from bench_ingest import Measured, run_measured

BIN = Path(sys.executable).parent

#: The source fields the raw tables take (tap_rudderstack.records), read with explicit types so
#: DuckDB does not sample the files to guess them.
SOURCE_COLUMNS = {
    "messageId": "VARCHAR",
    "type": "VARCHAR",
    "anonymousId": "VARCHAR",
    "userId": "VARCHAR",
    "channel": "VARCHAR",
    "originalTimestamp": "VARCHAR",
    "sentAt": "VARCHAR",
    "receivedAt": "VARCHAR",
    "timestamp": "VARCHAR",
    "request_ip": "VARCHAR",
    "context": "JSON",
    "event": "VARCHAR",
    "properties": "JSON",
    "traits": "JSON",
    "name": "VARCHAR",
    "category": "VARCHAR",
    "previousId": "VARCHAR",
    "groupId": "VARCHAR",
}

#: The records' columns (docs/contracts.md section 3) from the source fields.
RECORD_SQL = """
select
    messageId as message_id, type, nullif(anonymousId, '') as anonymous_id,
    nullif(userId, '') as user_id, channel, originalTimestamp as original_timestamp,
    sentAt as sent_at, receivedAt as received_at, timestamp, request_ip,
    context ->> '$.ip' as context_ip, context ->> '$.userAgent' as context_user_agent,
    context ->> '$.page.url' as context_page_url, context ->> '$.locale' as context_locale,
    context ->> '$.timezone' as context_timezone,
    context ->> '$.library.name' as context_library_name,
    context ->> '$.library.version' as context_library_version,
    context, filename as _spool_key, event, properties, traits, name, category,
    previousId as previous_id, groupId as group_id
from read_json(?, format = 'newline_delimited', columns = {columns}, filename = true,
    maximum_object_size = 16777216)
"""

DUCKDB_READ = """
import duckdb, sys
c = duckdb.connect()
c.execute("set enable_progress_bar = false")
c.execute(
    "copy (" + sys.argv[3] + ") to '" + sys.argv[2] + "'"
    " (format parquet, partition_by (type), compression zstd)",
    [sys.argv[1]],
)
"""

PARQUET_LOAD = """
import duckdb, pathlib, sys
c = duckdb.connect(sys.argv[2])
c.execute("set enable_progress_bar = false")
for folder in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    name = folder.name.split("=", 1)[1]
    c.execute(f'create table "{name}" as select * from read_parquet(?)', [f"{folder}/*.parquet"])
c.execute("checkpoint")
print(sum(
    c.execute(f'select count(*) from "{t}"').fetchone()[0]
    for (t,) in c.execute("select table_name from duckdb_tables()").fetchall()
))
"""


def tap_alone(spool: Path, work: Path) -> Measured:
    """tap-rudderstack over the spool in BATCH mode (JSON lines), its messages discarded."""
    config = work / "tap.json"
    batches = work / "tap-batches"
    config.write_text(
        json.dumps(
            {
                "source": str(spool),
                "batch_config": {
                    "encoding": {"format": "jsonl", "compression": "none"},
                    "storage": {"root": batches.as_uri()},
                    "batch_size": 200_000,
                },
            }
        )
    )
    try:
        return run_measured(
            [str(BIN / "tap-rudderstack"), "--config", str(config)], dict(os.environ)
        )
    finally:
        shutil.rmtree(batches, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--per-file", type=int, default=50_000, help="events per spool file")
    parser.add_argument("--retry-share", type=float, default=0.005, help="events sent twice")
    parser.add_argument("--workdir", default="", help="default: a temporary folder")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-spool-read-"))
    if args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    spool = work / "spool"
    env = dict(os.environ)
    try:
        # 432 s a file: 50,000 events a file spread over 100 days at 20M, as bench_backfill
        events, retries = generate_delivery(
            (spool, 0, args.events, args.per_file, args.retry_share, 1, 432.0)
        )
        lines = events + retries
        files = str(spool / "rudder-logs/**/*.json.gz")
        select = RECORD_SQL.replace("{columns}", duckdb_struct(SOURCE_COLUMNS))
        parquet = work / "parquet"
        runs: list[tuple[str, Measured]] = [
            ("ceiling: read_json into a table", ceiling(spool)),
            ("tap-rudderstack alone (BATCH, JSON lines)", tap_alone(spool, work)),
            (
                "duckdb read: spool to Parquet per type",
                run_measured([sys.executable, "-c", DUCKDB_READ, files, str(parquet), select], env),
            ),
        ]
        counted = work / "count.txt"
        with counted.open("w") as out:
            loaded = run_measured(
                [sys.executable, "-c", PARQUET_LOAD, str(parquet), str(work / "p.duckdb")],
                env,
                stdout=out,
            )
        runs.append(("parquet load: a table per stream", loaded))
        rows = int(counted.read_text().split()[-1])
        assert rows == lines, f"the Parquet path lost lines: {rows:,} of {lines:,}"
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    top = runs[0][1].secs
    print(f"\n{lines:,} spool lines ({events:,} events, {retries:,} retry copies)\n")
    print(
        f"{'step':<44} {'secs':>7} {'cpu s':>7} {'peak MB':>8} {'events/s':>10} {'of ceiling':>10}"
    )
    for label, measured in runs:
        print(
            f"{label:<44} {measured.secs:>7.2f} {measured.cpu:>7.2f}"
            f" {measured.peak / 2**20:>8,.0f} {lines / measured.secs:>10,.0f}"
            f" {top / measured.secs:>10.2f}"
        )
    duck = runs[2][1].secs + runs[3][1].secs
    print(
        f"\nduckdb read + parquet load, one after the other: {duck:.2f} s,"
        f" {top / duck:.2f} of the ceiling (no overlap, no checks, no Meltano)"
    )


def duckdb_struct(columns: dict[str, str]) -> str:
    """A DuckDB struct literal for read_json's `columns`."""
    return "{" + ", ".join(f"{name}: '{kind}'" for name, kind in columns.items()) + "}"


if __name__ == "__main__":
    main()
