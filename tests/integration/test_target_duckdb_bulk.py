"""target-duckdb-bulk as a real process, fed by tap-rudderstack's real output.

The tap runs over a spool written with tests/helpers/spool.py (every event kind,
duplicates inside a file and across files, bad lines); its Singer messages are piped into
`python -m target_duckdb_bulk`. The warehouse must then hold every message_id exactly once, also
after a second run over the same data and when the tap sends BATCH files instead of RECORDs.
A SIGKILL mid-stream proves STATE is only written for rows DuckDB has committed.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers.meltano import MELTANO, meltano_run
from tests.helpers.servers import wait_until
from tests.helpers.singer import LiveTarget
from tests.helpers.spool import (
    KINDS,
    STREAM_OF,
    event,
    run_tap,
    ts_of,
    write_segment,
)

TARGET = [sys.executable, "-m", "target_duckdb_bulk"]


def make_spool(root: Path) -> set[str]:
    """Two segments with every kind, in-file and cross-file duplicates and bad lines."""
    first = [event(KINDS[n % 6], n) for n in range(60)]
    first.insert(10, event("track", 0, properties={"product_id": "late-edit"}))  # dup in file
    first += [b"{not json", json.dumps({"type": "track"})]  # rejected, never loaded as events
    write_segment(root, ts_of(0), first)
    second = [event(KINDS[n % 6], n) for n in range(50, 90)]  # 50..59 again: cross-file dups
    write_segment(root, ts_of(300), second)
    return {f"m-{KINDS[n % 6]}-{n}" for n in range(90)}


def run_target(config: dict[str, Any], messages: list[dict], tmp_path: Path) -> list[dict]:
    """Pipe `messages` into the target CLI; return the STATE messages it printed."""
    cfg = tmp_path / "target.json"
    cfg.write_text(json.dumps(config))
    data = "".join(json.dumps(m) + "\n" for m in messages)
    done = subprocess.run(
        [*TARGET, "--config", str(cfg)],
        input=data.encode(),
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line]


def warehouse_ids(db: Path) -> Counter:
    con = duckdb.connect(str(db), read_only=True)
    try:
        ids: Counter = Counter()
        for stream in STREAM_OF.values():
            rows = con.execute(f"select message_id from rudderstack_raw.{stream}").fetchall()
            ids.update(r[0] for r in rows)
        return ids
    finally:
        con.close()


def test_tap_output_lands_exactly_once_and_reruns_upsert(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    expected = make_spool(spool)
    messages = run_tap({"source": str(spool)})
    emitted = [
        m["record"]["message_id"]
        for m in messages
        if m["type"] == "RECORD" and m["stream"] != "rejected_events"
    ]
    assert len(emitted) > len(expected), "the spool should make the tap emit duplicates"
    db = tmp_path / "w.duckdb"
    config = {"filepath": str(db), "batch_size_rows": 7}  # many batches: many "first rows"
    states = run_target(config, messages, tmp_path)
    assert states, "no STATE after a complete load"
    assert states[-1] == [m for m in messages if m["type"] == "STATE"][-1]["value"]
    ids = warehouse_ids(db)
    assert set(ids) == expected
    assert max(ids.values()) == 1

    # The same data again (an at-least-once replay): still exactly once.
    run_target(config, messages, tmp_path)
    assert warehouse_ids(db) == ids

    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute(
            "select original_timestamp, json_extract_string(properties, '$.product_id'),"
            " typeof(original_timestamp), typeof(properties), context_user_agent"
            " from rudderstack_raw.tracks where message_id = 'm-track-0'"
        ).fetchone()
        rejected = con.execute("select count(*) from rudderstack_raw.rejected_events").fetchone()
    finally:
        con.close()
    # The in-file duplicate came later in the file, so its properties won.
    assert row == (
        dt.datetime(2026, 11, 20, 0, 0),
        "late-edit",
        "TIMESTAMP",
        "JSON",
        "Mozilla/5.0",
    )
    assert rejected == (2,)


def test_tap_batch_messages_land_exactly_once(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    expected = make_spool(spool)
    batches = tmp_path / "batches"
    batches.mkdir()
    messages = run_tap(
        {
            "source": str(spool),
            "batch_config": {
                "encoding": {"format": "jsonl", "compression": "gzip"},
                "storage": {"root": f"file://{batches}"},
                "batch_size": 5,
            },
        }
    )
    assert not [m for m in messages if m["type"] == "RECORD"]
    assert len([m for m in messages if m["type"] == "BATCH"]) >= 6
    db = tmp_path / "w.duckdb"
    run_target({"filepath": str(db)}, messages, tmp_path)
    ids = warehouse_ids(db)
    assert set(ids) == expected
    assert max(ids.values()) == 1


def test_sigkill_mid_stream_leaves_no_state_for_uncommitted_rows(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    cfg = tmp_path / "target.json"
    cfg.write_text(json.dumps({"filepath": str(db), "batch_size_rows": 3}))
    schema = {
        "type": "SCHEMA",
        "stream": "tracks",
        "key_properties": ["message_id"],
        "schema": {
            "type": "object",
            "properties": {"message_id": {"type": "string"}, "n": {"type": "integer"}},
        },
    }

    def rec(n: int) -> dict:
        return {"type": "RECORD", "stream": "tracks", "record": {"message_id": f"m{n}", "n": n}}

    def state(n: int) -> dict:
        return {"type": "STATE", "value": {"bookmarks": {"tracks": {"line": n}}}}

    live = LiveTarget(TARGET, cfg)
    try:
        # m1..m3 fill a batch: it loads, then the state seen so far (line 2) is written.
        live.send(schema, rec(1), rec(2), state(2), rec(3))
        wait_until(lambda: len(live.lines) >= 1, timeout=60, what="the first STATE")
        # m4 and state 4 stay buffered: the batch is not full, so nothing is committed.
        live.send(rec(4), state(4))
        live.send(rec(4), state(4))  # an idempotent repeat of the same STATE adds no output
    finally:
        live.kill()
    assert live.lines == [state(2)["value"]]
    con = duckdb.connect(str(db), read_only=True)
    try:
        loaded = con.execute("select message_id from rudderstack_raw.tracks order by 1").fetchall()
    finally:
        con.close()
    assert loaded == [("m1",), ("m2",), ("m3",)]

    # Resume from the saved bookmark (line 2): m3 comes again, m4 arrives; all exactly once.
    live = LiveTarget(TARGET, cfg)
    try:
        live.send(schema, rec(3), rec(4), state(4))
        assert live.finish() == 0
    finally:
        if live.proc.poll() is None:
            live.kill()
    assert live.lines == [state(4)["value"]]
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("select message_id, n from rudderstack_raw.tracks order by 1").fetchall()
    finally:
        con.close()
    assert rows == [("m1", 1), ("m2", 2), ("m3", 3), ("m4", 4)]


def test_locked_database_fails_with_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    # Another process holds the file read-write (DuckDB admits one writer process).
    # Leaving the `with` closes its stdin, which ends it, and waits for it.
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb,sys;c=duckdb.connect(sys.argv[1]);print('up',"
            " flush=True);sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as blocker:
        assert blocker.stdout is not None
        assert blocker.stdout.readline().strip() == b"up"
        cfg = tmp_path / "target.json"
        cfg.write_text(json.dumps({"filepath": str(db)}))
        done = subprocess.run(
            [*TARGET, "--config", str(cfg)],
            input=b'{"type":"SCHEMA","stream":"s","schema":{"properties":{"id":{"type":"string"}}},'
            b'"key_properties":["id"]}\n',
            capture_output=True,
            cwd=REPO_ROOT,
            timeout=60,
        )
    assert done.returncode != 0
    assert b"cannot open DuckDB file" in done.stderr


PLUGIN_BIN = REPO_ROOT / ".meltano/loaders/target-duckdb-bulk/venv/bin/target-duckdb-bulk"


@pytest.fixture(scope="session")
def bulk_loader_installed() -> None:
    """`meltano install loader target-duckdb-bulk` when its venv is missing."""
    if not PLUGIN_BIN.exists():
        done = subprocess.run(
            [MELTANO, "install", "loader", "target-duckdb-bulk"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert PLUGIN_BIN.exists(), (
        "the plugin venv has no target-duckdb-bulk script: pyproject.toml must declare"
        ' target-duckdb-bulk = "target_duckdb_bulk.target:TargetDuckDBBulk.cli"'
    )


@pytest.mark.slow
@pytest.mark.usefixtures("bulk_loader_installed")
@pytest.mark.parametrize("mode", ["batch", "record"])
def test_meltano_run_is_incremental_and_exactly_once(tmp_path: Path, mode: str) -> None:
    spool = tmp_path / "spool"
    expected = make_spool(spool)
    db = tmp_path / "w.duckdb"
    # batch: `target-duckdb`, the name users type, which runs this loader with dev's settings
    loader = "target-duckdb" if mode == "batch" else "target-duckdb-bulk"
    prefix = loader.upper().replace("-", "_")
    env = {
        "TAP_RUDDERSTACK_SOURCE": str(spool),
        f"{prefix}_FILEPATH": str(db),
        f"{prefix}_BATCH_SIZE_ROWS": "13",
    }
    batches = tmp_path / "batches"
    if mode == "batch":
        # The dev environment's BATCH settings, with the files under tmp_path and small batches.
        env["TAP_RUDDERSTACK_BATCH_CONFIG"] = json.dumps(
            {
                "encoding": {"format": "jsonl", "compression": "none"},
                "storage": {"root": batches.as_uri()},
                "batch_size": 7,
            }
        )
    environment = "dev" if mode == "batch" else "dev-records"

    def run() -> None:
        done = meltano_run(tmp_path, env, "tap-rudderstack", loader, environment=environment)
        assert done.returncode == 0, done.stderr[-3000:]

    run()
    ids = warehouse_ids(db)
    assert set(ids) == expected
    assert max(ids.values()) == 1
    if mode == "batch":
        # BATCH was used, and every file was deleted once loaded (delete_batch_files in dev).
        assert batches.is_dir()
        assert list(batches.iterdir()) == []
    # A newer file (two new events, one re-sent): the second run reads only what is new.
    write_segment(spool, ts_of(600), [event("track", 500), event("page", 501), event("track", 0)])
    run()
    ids = warehouse_ids(db)
    assert set(ids) == expected | {"m-track-500", "m-page-501"}
    assert max(ids.values()) == 1
