"""`signalmail simulate --spool`: the fast path that writes the collector's spool directly."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from signalmail.collector.readback import read_spool
from signalmail.simulate import iter_events
from signalmail.simulate.cli import simulate

START = datetime(2026, 2, 1, tzinfo=UTC)


def spool_events(root, source):
    summary = read_spool(root, source)
    events = []
    for path in summary.segments:
        with gzip.open(path, "rt") as handle:
            events.extend(json.loads(line) for line in handle)
    return summary, events


def test_spool_holds_the_generated_stream_with_collector_fields(tmp_path):
    args = [
        "--spool",
        str(tmp_path),
        "--source-id",
        "bulk",
        "--users",
        "60",
        "--days",
        "10",
        "--start",
        "2026-02-01",
        "--compress-time",
        "--seed",
        "9",
        "--json",
    ]
    result = CliRunner().invoke(simulate, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    spooled, events = spool_events(tmp_path, "bulk")
    expected = list(iter_events(seed=9, users=60, days=10, start=START))
    assert [e["messageId"] for e in events] == [e["messageId"] for e in expected]
    assert summary["events"] == summary["accepted"] == len(events) == spooled.events
    assert summary["events_by_name"]["identify"] == spooled.by_type["identify"]
    for event in events:
        assert event["timestamp"] == event["originalTimestamp"]  # sentAt is the wall clock
        assert event["receivedAt"] >= event["timestamp"]
        assert event["sentAt"] == event["receivedAt"]
        assert event["request_ip"] == event["context"]["ip"]
    # nothing but published segments under rudder-logs (journals live in a dot-folder)
    files = [p for p in (tmp_path / "rudder-logs").rglob("*") if p.is_file()]
    assert files
    assert all(p.name.endswith(".json.gz") and ".bulk." in p.name for p in files)
    assert 0.55 < summary["cart_abandonment_rate"] < 0.9


def test_limit_and_a_second_run_append_new_segments(tmp_path):
    args = [
        "--spool",
        str(tmp_path),
        "--users",
        "30",
        "--days",
        "5",
        "--start",
        "2026-02-01",
        "--compress-time",
        "--limit",
        "100",
        "--json",
    ]
    first = CliRunner().invoke(simulate, args, catch_exceptions=False)
    second = CliRunner().invoke(simulate, args, catch_exceptions=False)
    assert json.loads(first.output)["events"] == 100
    assert sum(json.loads(first.output)["events_by_name"].values()) == 100
    spooled, _ = spool_events(tmp_path, "simulator")
    # same seed twice: 200 events, 100 distinct messageIds, which is what dedup downstream is for
    assert spooled.events == 200
    assert len(spooled.message_ids) == 100
    assert len(spooled.segments) == 2
    assert second.exit_code == 0


def test_a_spool_source_locked_by_another_writer_is_a_clear_error(tmp_path):
    from signalmail.collector.spool import SpoolWriter

    with SpoolWriter(str(tmp_path), "busy"):
        result = CliRunner().invoke(
            simulate, ["--spool", str(tmp_path), "--source-id", "busy", "--compress-time"]
        )
    assert result.exit_code == 1
    assert "cannot open the destination" in result.output
    assert "another process" in result.output


def test_seed_is_deterministic_across_processes_and_hash_seeds(tmp_path):
    """`--seed` alone fixes the stream: two separate processes with different string-hash seeds
    (PYTHONHASHSEED) produce the same events, ids and simulated times; another seed does not."""
    signalmail = str(Path(sys.executable).with_name("signalmail"))
    # receivedAt/sentAt are the wall clock of the write; everything else must match
    wall_clock = {"receivedAt", "sentAt"}

    def stream(seed: str, hash_seed: str, out: str) -> list[str]:
        root = tmp_path / out
        args = ["--users", "25", "--days", "4", "--start", "2026-02-01", "--seed", seed]
        subprocess.run(
            [signalmail, "simulate", "--spool", str(root), "--compress-time", *args],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True,
            capture_output=True,
            timeout=120,
        )
        _, events = spool_events(root, "simulator")
        return [
            json.dumps({k: v for k, v in e.items() if k not in wall_clock}, sort_keys=True)
            for e in events
        ]

    first = stream("11", "1", "a")
    again = stream("11", "2", "b")
    other = stream("12", "1", "c")
    assert len(first) > 100
    assert first == again
    assert set(first).isdisjoint(other)


def test_a_failing_disk_is_a_sink_error_and_every_event_is_counted_failed(tmp_path, monkeypatch):
    """fsync failing mid-run: the spool sink raises SinkError (not a raw SpoolError) and counts
    every event it took as failed, so `accepted = sent - failed` is 0, not an overstatement."""
    from signalmail.collector import spool as spool_module
    from signalmail.simulate.sinks import SinkError, SpoolSink

    def broken_fdatasync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool_module.os, "fdatasync", broken_fdatasync)
    sink = SpoolSink(str(tmp_path), "broken", chunk_size=10, in_flight=2)
    stream = iter_events(seed=1, users=10, days=2, start=START)
    with pytest.raises(SinkError, match="spool write failed"):  # noqa: PT012 (send raises mid-stream)
        for event in stream:
            sink.send(event)
        raise AssertionError("a broken disk accepted the whole stream")
    for _ in range(3):  # a caller that carries on: buffered, and refused at close
        sink.send(next(stream))
    with pytest.raises(SinkError, match="spool write failed"):
        sink.close()
    assert sink.sent >= 10
    assert sink.failed == sink.sent
    assert read_spool(tmp_path, "broken").events == 0


def test_live_events_are_received_as_sent_and_reach_the_writer_within_a_second(tmp_path):
    """Live mode stamps each event now: a chunk's one receivedAt put receipts before events."""
    import concurrent.futures
    import json

    from signalmail.collector.spool import DEFAULT_MAX_SEGMENT_AGE_S
    from signalmail.simulate.sinks import SpoolSink

    handed: list[bytes] = []
    ages: list[float] = []

    class Writer:
        def __init__(self, root, source_id, max_segment_age_s):
            ages.append(max_segment_age_s)

        def submit_lines(self, data, count):
            handed.append(data)
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done

        def close(self):
            pass

    now = [0.0]
    sink = SpoolSink(str(tmp_path), "live", writer_factory=Writer, live=True, clock=lambda: now[0])
    stream = iter_events(seed=1, users=10, days=2, start=START)
    for _ in range(30):  # three events a second, for ten seconds
        event = next(stream)
        event["originalTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        sink.send(event)
        now[0] += 1 / 3
    assert ages == [DEFAULT_MAX_SEGMENT_AGE_S]
    # a chunk about every second (at three a second, five events at most), not at 5,000
    assert handed
    assert max(chunk.count(b"\n") for chunk in handed) <= 5
    sink.close()
    events = [json.loads(line) for chunk in handed for line in chunk.splitlines()]
    assert len(events) == 30
    assert all(e["receivedAt"] >= e["originalTimestamp"] for e in events)
