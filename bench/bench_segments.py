"""What one-second segments cost the capture step: the same events in many small files or one.

    python bench/bench_segments.py                    # 60,000 events: 300 files of 200 vs 1
    python bench/bench_segments.py --events 20000 --per-file 200

The collector publishes a segment per second of traffic when run with `--max-segment-age 1`
(what `signalmail watch` needs for seconds from event to warehouse). This writes the same
events twice with the collector's own SpoolWriter, once as `--events / --per-file` segments and
once as one segment (the baseline), then times the watch's capture step (tap-rudderstack ->
target-duckdb-bulk in-process, BATCH files, as the watch runs it) over each spool:

- in one run, as a catch-up after downtime reads them;
- in runs of `--files-per-cycle` new files each, as the watch meets them cycle by cycle (its
  cycles take a few seconds), each run from the previous bookmark.

Prints seconds per file for each, the extra cost per file against the single file, and the
state (bookmark) size the window of files makes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from signalmail.collector.spool import SpoolWriter
from signalmail.watch.late import LateEvents
from signalmail.watch.settings import WatchSettings
from signalmail.watch.state import StateFile
from signalmail.watch.steps import Capture

REPO = Path(__file__).resolve().parents[1]


def make_events(n: int) -> list[dict]:
    from signalmail.simulate.model import Simulation, SimulationConfig

    sim = Simulation(SimulationConfig(seed=3, users=5000, days=30))
    events = []
    for _, event in sim.timed():
        event.setdefault("receivedAt", event["originalTimestamp"])
        event.setdefault("sentAt", event["originalTimestamp"])
        event.setdefault("timestamp", event["originalTimestamp"])
        events.append(event)
        if len(events) >= n:
            break
    return events


def write_spool(root: Path, events: list[dict], per_file: int) -> int:
    """Segments of `per_file` events each, as a collector rotating every second writes them."""
    clock = [1_796_000_000.0]
    writer = SpoolWriter(str(root), "shop", max_segment_age_s=3600, clock=lambda: clock[0])
    files = 0
    for start in range(0, len(events), per_file):
        writer.append(events[start : start + per_file])
        writer.flush()
        files += 1
        clock[0] += 1
    writer.close()
    return files


def capture_settings(work: Path, spool: Path) -> WatchSettings:
    return WatchSettings(
        project_root=REPO,
        spool=str(spool),
        duckdb_path=work / "warehouse.duckdb",
        state_dir=work / "state",
        late_file_minutes=10,
    )


def timed_capture(
    work: Path, spool: Path, files_per_run: int | None, total_files: int
) -> tuple[float, int, int]:
    """Seconds of all capture runs; number of runs; final bookmark size in bytes.

    With `files_per_run`, the spool is revealed `files_per_run` segments at a time (the rest
    wait in a staging folder), as a collector publishing every second reveals them.
    """
    import duckdb

    settings = capture_settings(work, spool)
    state = StateFile(settings.state_path)
    anchor = duckdb.connect(str(settings.path(settings.duckdb_path)))  # held, as the watch does
    capture = Capture(settings, state, LateEvents(state, settings.lookback_seconds))
    staged = sorted((spool / "rudder-logs").rglob("*.json.gz"))
    hidden = work / "hidden"
    if files_per_run:
        hidden.mkdir()
        for path in staged:
            path.rename(hidden / path.name)
    elapsed, runs = 0.0, 0
    revealed = 0
    while True:
        if files_per_run:
            batch = staged[revealed : revealed + files_per_run]
            if not batch:
                break
            for path in batch:
                (hidden / path.name).rename(path)
            revealed += len(batch)
        began = time.perf_counter()
        result = capture.run()
        elapsed += time.perf_counter() - began
        runs += 1
        if not files_per_run:
            break
        assert result.ran
    anchor.close()
    return elapsed, runs, len(json.dumps(state.get("capture")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--per-file", type=int, default=200, help="Events per segment.")
    parser.add_argument("--files-per-cycle", type=int, default=5)
    args = parser.parse_args()
    events = make_events(args.events)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-segments-") as tmp:
        for label, per_file, per_run in (
            ("one file (baseline)", len(events), None),
            ("one-second files, one run", args.per_file, None),
            (
                f"one-second files, {args.files_per_cycle} per run",
                args.per_file,
                args.files_per_cycle,
            ),
        ):
            work = Path(tmp) / label.replace(" ", "-").replace(",", "").replace("(", "").replace(
                ")", ""
            )
            work.mkdir()
            files = write_spool(work / "spool", events, per_file)
            seconds, runs, state_bytes = timed_capture(work, work / "spool", per_run, files)
            results[label] = (files, seconds, runs, state_bytes)
            shutil.rmtree(work)
    base_files, base_seconds, _, _ = results["one file (baseline)"]
    print(f"{args.events:,} events; one-second segments of {args.per_file} events "
          f"({args.per_file:g} events/s of traffic): 86,400 files a day per collector")  # fmt: skip
    for label, (files, seconds, runs, state_bytes) in results.items():
        extra = (seconds - base_seconds) / max(files - base_files, 1)
        print(
            f"  {label:<32} {files:>5} files {runs:>4} runs  {seconds:6.2f}s "
            f"({seconds / files * 1000:7.1f} ms/file, {seconds / base_seconds:4.2f}x baseline, "
            f"+{extra * 1000:5.1f} ms per extra file)  bookmark {state_bytes / 1024:,.0f} KiB"
        )


if __name__ == "__main__":
    main()
