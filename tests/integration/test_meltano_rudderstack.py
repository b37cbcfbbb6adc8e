"""Real `meltano run tap-rudderstack target-duckdb-jwills|target-postgres`, reconciled with spools.

Each test writes its own spool (duplicates, bad lines, a truncated gzip, a late file), runs the
pipeline through Meltano as a subprocess with its own DuckDB file / PostgreSQL schema and its own
state backend, then checks the warehouse: every message_id the spool holds (and the tap could read)
is there exactly once, and nothing else is. The kill-and-resume tests SIGKILL the tap mid-run
through its test hook and prove that the rerun resumes from the saved bookmark and that the
loader's upsert turns at-least-once into exactly-once.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from tap_rudderstack.sync import CRASH_ENV

from tests.helpers.meltano import meltano_run
from tests.helpers.spool import KINDS, STREAM_OF, event, ts_of, write_segment

pytestmark = pytest.mark.slow


def sync_counts(output: str) -> dict[str, int]:
    """The tap's end-of-run counts, as Meltano relays its log."""
    match = re.search(r"Spool sync finished: (\{[^}]*\})", output)
    assert match, f"no end-of-run counts in the output:\n{output[-3000:]}"
    return json.loads(match[1])


def recoverable_lines(path: Path) -> list[bytes]:
    """Complete lines of a possibly truncated gzip file, read with the standard gzip module."""
    data = bytearray()
    with gzip.open(path, "rb") as handle:
        try:
            while chunk := handle.read(256):
                data += chunk
        except (EOFError, OSError):
            pass
    return bytes(data).split(b"\n")[:-1]


class Spool:
    """A spool under construction plus the ground truth of what it holds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.expected: dict[str, set[str]] = {stream: set() for stream in STREAM_OF.values()}
        self.rejects = 0

    def add(self, ts: int, events: list, *, bad: list[str] = (), **kwargs) -> Path:
        path = write_segment(self.root, ts, [*events, *bad], **kwargs)
        for item in events:
            self.expected[STREAM_OF[item["type"]]].add(item["messageId"])
        self.rejects += len(bad)
        return path

    def add_truncated(self, ts: int, events: list, cut: int) -> None:
        path = write_segment(self.root, ts, events, truncate_to=cut)
        lines = recoverable_lines(path)
        assert 0 < len(lines) < len(events), "the cut must leave a partial file"
        for line in lines:
            item = json.loads(line)
            self.expected[STREAM_OF[item["type"]]].add(item["messageId"])
        self.rejects += 1  # the quarantine row


def build_spool(root: Path) -> Spool:
    spool = Spool(root)
    first = [event(kind, n) for n in range(8) for kind in KINDS]
    spool.add(ts_of(0), first, bad=["{not json", "[]", '{"type":"track","messageId":"z"}'])
    # Duplicates: a retried batch across files and a repeat inside one file, US-style folder.
    again = [event("track", n) for n in range(4)] + [event("track", 100)] * 3
    spool.add(ts_of(600), again, us_date=True)
    spool.add_truncated(ts_of(900), [event("page", 200 + n) for n in range(300)], cut=2500)
    return spool


def add_second_batch(spool: Spool) -> None:
    # A late file: opened before files already read, uploaded after the first run.
    spool.add(ts_of(300), [event("identify", 300 + n) for n in range(5)])
    spool.add(ts_of(1200), [event(kind, 400) for kind in KINDS], bad=["Z" * 9000])


# --- warehouse readers ----------------------------------------------------------------------------


def duckdb_ids(path: Path) -> dict[str, Counter]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        result = {
            stream: Counter(
                row[0]
                for row in con.execute(
                    f"select message_id from rudderstack_raw.{stream}"
                ).fetchall()
            )
            for stream in STREAM_OF.values()
        }
        result["rejected_events"] = Counter(
            row[0]
            for row in con.execute(
                "select rejected_id from rudderstack_raw.rejected_events"
            ).fetchall()
        )
        return result
    finally:
        con.close()


def postgres_ids(url: str, schema: str) -> dict[str, Counter]:
    import psycopg

    with psycopg.connect(url) as conn:
        result = {
            stream: Counter(
                row[0] for row in conn.execute(f'select message_id from "{schema}".{stream}')
            )
            for stream in STREAM_OF.values()
        }
        result["rejected_events"] = Counter(
            row[0] for row in conn.execute(f'select rejected_id from "{schema}".rejected_events')
        )
        return result


def assert_exactly_once(loaded: dict[str, Counter], spool: Spool) -> None:
    for stream, wanted in spool.expected.items():
        assert set(loaded[stream]) == wanted, stream
        repeated = {k: v for k, v in loaded[stream].items() if v != 1}
        assert not repeated, f"{stream}: rows loaded more than once: {repeated}"
    assert len(loaded["rejected_events"]) == spool.rejects
    assert all(count == 1 for count in loaded["rejected_events"].values())


@pytest.fixture
def duckdb_env(tmp_path) -> dict[str, str]:
    return {
        "TAP_RUDDERSTACK_SOURCE": str(tmp_path / "spool"),
        "TARGET_DUCKDB_JWILLS_FILEPATH": str(tmp_path / "warehouse.duckdb"),
    }


@pytest.fixture
def postgres_env(tmp_path, pg_url, pg_schema) -> dict[str, str]:
    return {
        "TAP_RUDDERSTACK_SOURCE": str(tmp_path / "spool"),
        "TARGET_POSTGRES_SQLALCHEMY_URL": pg_url.replace("postgresql://", "postgresql+psycopg://"),
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": pg_schema,
    }


# --- DuckDB -------------------------------------------------------------------------------------


def test_duckdb_reconciles_every_event_exactly_once_across_runs(
    meltano_installed, duckdb_env, tmp_path
):
    spool = build_spool(tmp_path / "spool")
    first = meltano_run(tmp_path, duckdb_env, "tap-rudderstack", "target-duckdb-jwills")
    assert first.returncode == 0, first.stderr[-3000:]
    counts = sync_counts(first.stdout + first.stderr)
    assert counts["files_quarantined"] == 1
    assert_exactly_once(duckdb_ids(Path(duckdb_env["TARGET_DUCKDB_JWILLS_FILEPATH"])), spool)

    add_second_batch(spool)
    second = meltano_run(tmp_path, duckdb_env, "tap-rudderstack", "target-duckdb-jwills")
    assert second.returncode == 0, second.stderr[-3000:]
    counts = sync_counts(second.stdout + second.stderr)
    assert counts["files"] == 2  # only the late file and the new one were read
    assert counts["late_files"] == 1
    assert_exactly_once(duckdb_ids(Path(duckdb_env["TARGET_DUCKDB_JWILLS_FILEPATH"])), spool)

    import duckdb

    con = duckdb.connect(duckdb_env["TARGET_DUCKDB_JWILLS_FILEPATH"], read_only=True)
    try:
        row = con.execute(
            "select original_timestamp, properties->>'product_id', context->'library'->>'name',"
            " typeof(original_timestamp), typeof(properties)"
            " from rudderstack_raw.tracks where message_id = 'm-track-3'"
        ).fetchone()
    finally:
        con.close()
    assert str(row[0]) == "2026-11-20 00:00:03"  # naive UTC
    assert row[1:] == ("p3", "rudder-sdk-python", "TIMESTAMP", "JSON")


def test_duckdb_kill_and_resume_is_exactly_once(meltano_installed, duckdb_env, tmp_path):
    spool = Spool(tmp_path / "spool")
    for f in range(4):
        spool.add(ts_of(f * 60), [event(KINDS[n % 6], f * 100 + n) for n in range(100)])
    env = {**duckdb_env, "TAP_RUDDERSTACK_STATE_EVERY_RECORDS": "40"}
    env["TARGET_DUCKDB_JWILLS_BATCH_SIZE_ROWS"] = "15"

    crashed = meltano_run(
        tmp_path, {**env, CRASH_ENV: "230"}, "tap-rudderstack", "target-duckdb-jwills"
    )
    assert crashed.returncode != 0
    partial = duckdb_ids(Path(env["TARGET_DUCKDB_JWILLS_FILEPATH"]))
    loaded_before = sum(len(c) for c in partial.values())
    assert 0 < loaded_before < 400

    resumed = meltano_run(tmp_path, env, "tap-rudderstack", "target-duckdb-jwills")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    counts = sync_counts(resumed.stdout + resumed.stderr)
    re_emitted = sum(counts.get(s, 0) for s in STREAM_OF.values())
    assert re_emitted < 400 - 150  # resumed from a bookmark, not from the start
    assert re_emitted >= 400 - 230  # and nothing after the crash point was skipped
    assert_exactly_once(duckdb_ids(Path(env["TARGET_DUCKDB_JWILLS_FILEPATH"])), spool)


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_reconciles_every_event_exactly_once_across_runs(
    meltano_installed, postgres_env, tmp_path, pg_url, pg_schema
):
    spool = build_spool(tmp_path / "spool")
    first = meltano_run(tmp_path, postgres_env, "tap-rudderstack", "target-postgres")
    assert first.returncode == 0, first.stderr[-3000:]
    assert_exactly_once(postgres_ids(pg_url, pg_schema), spool)

    # The second run sends BATCH messages (jsonl.gz files) instead of RECORD messages.
    add_second_batch(spool)
    batches = tmp_path / "batches"
    batches.mkdir()
    batch_config = {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": f"file://{batches}"},
        "batch_size": 4,
    }
    env = {**postgres_env, "TAP_RUDDERSTACK_BATCH_CONFIG": json.dumps(batch_config)}
    second = meltano_run(tmp_path, env, "tap-rudderstack", "target-postgres")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(list(batches.glob("*.json.gz"))) >= 5, "the tap wrote no batch files"
    assert_exactly_once(postgres_ids(pg_url, pg_schema), spool)

    import psycopg

    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            f"select original_timestamp, properties->>'product_id', pg_typeof(properties)::text,"
            f" pg_typeof(original_timestamp)::text"
            f' from "{pg_schema}".tracks where message_id = %s',
            ("m-track-3",),
        ).fetchone()
    assert str(row[0]) == "2026-11-20 00:00:03"
    assert row[1:] == ("p3", "jsonb", "timestamp without time zone")


@pytest.mark.postgres
def test_postgres_kill_and_resume_is_exactly_once(
    meltano_installed, postgres_env, tmp_path, pg_url, pg_schema
):
    spool = Spool(tmp_path / "spool")
    for f in range(3):
        spool.add(ts_of(f * 60), [event(KINDS[n % 6], f * 100 + n) for n in range(100)])
    env = {**postgres_env, "TAP_RUDDERSTACK_STATE_EVERY_RECORDS": "40"}
    env["TARGET_POSTGRES_BATCH_SIZE_ROWS"] = "15"

    crashed = meltano_run(tmp_path, {**env, CRASH_ENV: "170"}, "tap-rudderstack", "target-postgres")
    assert crashed.returncode != 0
    resumed = meltano_run(tmp_path, env, "tap-rudderstack", "target-postgres")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    counts = sync_counts(resumed.stdout + resumed.stderr)
    re_emitted = sum(counts.get(s, 0) for s in STREAM_OF.values())
    assert 300 - 170 <= re_emitted < 300
    assert_exactly_once(postgres_ids(pg_url, pg_schema), spool)


def test_meltano_select_limits_streams_and_properties(meltano_installed, duckdb_env, tmp_path):
    """Meltano's `select` extra (here through its env var) reaches the tap as a catalog."""
    spool = build_spool(tmp_path / "spool")
    env = {**duckdb_env, "TAP_RUDDERSTACK__SELECT": json.dumps(["tracks.*", "!tracks.context"])}
    done = meltano_run(tmp_path, env, "tap-rudderstack", "target-duckdb-jwills")
    assert done.returncode == 0, done.stderr[-3000:]
    import duckdb

    con = duckdb.connect(env["TARGET_DUCKDB_JWILLS_FILEPATH"], read_only=True)
    try:
        tables = {
            row[0]
            for row in con.execute(
                "select table_name from information_schema.tables"
                " where table_schema = 'rudderstack_raw'"
            ).fetchall()
        }
        columns = {row[0] for row in con.execute("describe rudderstack_raw.tracks").fetchall()}
        loaded = {
            row[0]
            for row in con.execute("select message_id from rudderstack_raw.tracks").fetchall()
        }
    finally:
        con.close()
    assert tables == {"tracks"}
    assert "context" not in columns
    assert {"message_id", "event", "properties", "context_ip"} <= columns
    assert loaded == spool.expected["tracks"]
