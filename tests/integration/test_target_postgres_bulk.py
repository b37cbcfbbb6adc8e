"""target-postgres-bulk as a real process, fed by tap-rudderstack's real output, into PostgreSQL.

The tap runs over a spool written with tests/helpers/spool.py (every event kind, duplicates
inside a file and across files, bad lines, a NUL); its Singer messages are piped into
`python -m target_postgres_bulk`. The warehouse must then hold every message_id exactly once,
also after a replay and with BATCH files, and hold exactly what MeltanoLabs' target-postgres
0.8.1 writes from the same messages (columns, types, keys, rows), so dbt reads it unchanged
(a dbt build of the staging models proves that). A SIGKILL in the middle of a load (the
loader's upsert held by a lock this test takes) must leave nothing of that batch and no STATE
for it, and a resume from the last STATE must converge. The `slow` tests run the real
`meltano --environment prod run` of the prod jobs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tap_rudderstack.sync import CRASH_ENV

from tests.helpers import REPO_ROOT
from tests.helpers.meltano import MELTANO, meltano_run
from tests.helpers.servers import wait_until
from tests.helpers.singer import LiveTarget
from tests.helpers.spool import KINDS, STREAM_OF, event, run_tap, ts_of, write_segment

pytestmark = pytest.mark.postgres

TARGET = [sys.executable, "-m", "target_postgres_bulk"]
TARGET_POSTGRES = REPO_ROOT / ".meltano/loaders/target-postgres/venv/bin/target-postgres"
TABLES = [*STREAM_OF.values(), "rejected_events"]


def make_spool(root: Path) -> set[str]:
    """Two segments with every kind, in-file and cross-file duplicates, bad lines and a NUL."""
    first = [event(KINDS[n % 6], n) for n in range(60)]
    first.insert(10, event("track", 0, properties={"product_id": "late-edit"}))  # dup in file
    first.insert(20, event("track", 95, properties={"note": "a\x00b"}))  # NUL, one level deep
    first += [b"{not json", json.dumps({"type": "track"})]  # rejected, never loaded as events
    write_segment(root, ts_of(0), first)
    second = [event(KINDS[n % 6], n) for n in range(50, 90)]  # 50..59 again: cross-file dups
    write_segment(root, ts_of(300), second)
    return {f"m-{KINDS[n % 6]}-{n}" for n in range(90)} | {"m-track-95"}


def write_config(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def run_loader(command: list[str], config: Path, messages: list[dict]) -> list[dict]:
    """Pipe `messages` into a loader CLI; return the STATE messages it printed."""
    done = subprocess.run(
        [*command, "--config", str(config)],
        input="".join(json.dumps(m) + "\n" for m in messages).encode(),
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line]


def bulk_config(tmp_path: Path, pg_url: str, schema: str, **extra: Any) -> Path:
    return write_config(
        tmp_path,
        f"bulk-{schema}.json",
        {"sqlalchemy_url": pg_url, "default_target_schema": schema, **extra},
    )


def warehouse_ids(pg_url: str, schema: str) -> Counter:
    ids: Counter = Counter()
    with psycopg.connect(pg_url) as conn:
        for stream in STREAM_OF.values():
            if conn.execute("select to_regclass(%s)", (f'"{schema}".{stream}',)).fetchone()[0]:
                rows = conn.execute(f'select message_id from "{schema}".{stream}').fetchall()
                ids.update(r[0] for r in rows)
    return ids


@pytest.fixture
def other_schema(pg_url: str, pg_schema: str) -> Iterator[str]:
    """A second fresh schema, for the loader this test compares with."""
    name = f"{pg_schema}_b"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'drop schema if exists "{name}" cascade')


def test_same_tables_and_rows_as_target_postgres(
    meltano_installed, tmp_path: Path, pg_url: str, pg_schema: str, other_schema: str
) -> None:
    """The same tap output through both loaders: identical columns, types, keys and rows."""
    spool = tmp_path / "spool"
    make_spool(spool)
    messages = run_tap({"source": str(spool)})
    baseline = write_config(
        tmp_path,
        "target-postgres.json",
        {  # meltano.yml's settings of the target-postgres plugin
            "sqlalchemy_url": pg_url.replace("postgresql://", "postgresql+psycopg://"),
            "default_target_schema": other_schema,
            "load_method": "upsert",
            "use_copy": True,
            "sanitize_null_text_characters": True,
            "validate_records": False,
            "add_record_metadata": False,
            "activate_version": False,
        },
    )
    run_loader([str(TARGET_POSTGRES)], baseline, messages)
    run_loader(TARGET, bulk_config(tmp_path, pg_url, pg_schema), messages)

    def described(schema: str) -> tuple[list, list, dict]:
        with psycopg.connect(pg_url) as conn:
            columns = conn.execute(
                "select table_name, column_name, data_type, is_nullable, ordinal_position,"
                " column_default from information_schema.columns where table_schema = %s"
                " order by table_name, ordinal_position",
                (schema,),
            ).fetchall()
            keys = conn.execute(
                "select c.relname, k.conname, pg_get_constraintdef(k.oid) from pg_constraint k"
                " join pg_class c on c.oid = k.conrelid join pg_namespace n"
                " on n.oid = k.connamespace where n.nspname = %s order by 1, 2",
                (schema,),
            ).fetchall()
            rows = {
                table: conn.execute(f'select * from "{schema}".{table} order by 1').fetchall()
                for table in TABLES
            }
        return columns, keys, rows

    base_columns, base_keys, base_rows = described(other_schema)
    bulk_columns, bulk_keys, bulk_rows = described(pg_schema)
    assert bulk_columns == base_columns
    assert bulk_keys == base_keys
    assert len(base_columns) > 150
    assert {k[0] for k in base_keys} == set(TABLES)
    for table in TABLES:
        assert bulk_rows[table] == base_rows[table], table
    # Both keep the later copy of a duplicate and write NUL as U+FFFD.
    with psycopg.connect(pg_url) as conn:
        edited, note = conn.execute(
            f"select (select properties ->> 'product_id' from \"{pg_schema}\".tracks"
            " where message_id = 'm-track-0'),"
            f" (select properties ->> 'note' from \"{pg_schema}\".tracks"
            " where message_id = 'm-track-95')"
        ).fetchone()
    assert (edited, note) == ("late-edit", "a\ufffdb")


def test_tap_output_lands_exactly_once_and_a_replay_writes_nothing(
    tmp_path: Path, pg_url: str, pg_schema: str
) -> None:
    spool = tmp_path / "spool"
    expected = make_spool(spool)
    messages = run_tap({"source": str(spool)})
    emitted = [
        m["record"]["message_id"]
        for m in messages
        if m["type"] == "RECORD" and m["stream"] != "rejected_events"
    ]
    assert len(emitted) > len(expected), "the spool should make the tap emit duplicates"
    config = bulk_config(tmp_path, pg_url, pg_schema, batch_size_rows=7)  # many batches
    states = run_loader(TARGET, config, messages)
    assert states, "no STATE after a complete load"
    assert states[-1] == [m for m in messages if m["type"] == "STATE"][-1]["value"]
    ids = warehouse_ids(pg_url, pg_schema)
    assert set(ids) == expected
    assert max(ids.values()) == 1

    def versions() -> dict[str, tuple]:
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute(f'select message_id, xmin::text, t.* from "{pg_schema}".tracks t')
            return {row[0]: row[1:] for row in rows}

    before = versions()
    run_loader(TARGET, config, messages)  # the same data again (an at-least-once replay)
    assert warehouse_ids(pg_url, pg_schema) == ids
    after = versions()
    assert {k: v[1:] for k, v in after.items()} == {k: v[1:] for k, v in before.items()}
    # A record emitted once is not even rewritten (its row version stays). One emitted twice
    # with different values (the same event in two files: another _spool_key) is set to the
    # older copy and back to the newer one by the replay, as the first run did.
    once = {k for k, n in Counter(emitted).items() if n == 1 and k.startswith("m-track-")}
    assert once
    assert all(after[k][0] == before[k][0] for k in once)


def test_tap_batch_messages_land_exactly_once_and_files_go(
    tmp_path: Path, pg_url: str, pg_schema: str
) -> None:
    spool = tmp_path / "spool"
    expected = make_spool(spool)
    batches = tmp_path / "batches"
    batches.mkdir()
    messages = run_tap(
        {
            "source": str(spool),
            "batch_config": {
                "encoding": {"format": "jsonl", "compression": "gzip"},
                "storage": {"root": batches.as_uri()},
                "batch_size": 5,
            },
        }
    )
    assert not [m for m in messages if m["type"] == "RECORD"]
    assert len([m for m in messages if m["type"] == "BATCH"]) >= 6
    config = bulk_config(tmp_path, pg_url, pg_schema, delete_batch_files=True)
    states = run_loader(TARGET, config, messages)
    assert states[-1] == [m for m in messages if m["type"] == "STATE"][-1]["value"]
    ids = warehouse_ids(pg_url, pg_schema)
    assert set(ids) == expected
    assert max(ids.values()) == 1
    assert list(batches.iterdir()) == []  # each file deleted once its rows were committed


def count_rows(pg_url: str, schema: str, table: str) -> int:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(f'select count(*) from "{schema}".{table}').fetchone()[0]


def test_sigkill_mid_load_leaves_nothing_of_the_batch_and_a_resume_converges(
    tmp_path: Path, pg_url: str, pg_schema: str
) -> None:
    spool = tmp_path / "spool"
    expected = make_spool(spool)
    batches = tmp_path / "batches"
    batches.mkdir()
    tap_config = {
        "source": str(spool),
        "state_every_records": 10,
        "batch_config": {
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {"root": batches.as_uri()},
            "batch_size": 5,
        },
    }
    messages = run_tap(tap_config)
    state_at = [i for i, m in enumerate(messages) if m["type"] == "STATE"]
    assert len(state_at) >= 4, "the test needs STATE messages between batches"
    cut = state_at[2] + 1  # through the third STATE
    first, rest = messages[:cut], messages[cut:]
    assert any(m["type"] == "BATCH" and m["stream"] == "tracks" for m in rest)

    live = LiveTarget(TARGET, bulk_config(tmp_path, pg_url, pg_schema), finish_timeout=120)
    locker = psycopg.connect(pg_url)
    try:
        live.send(*first)
        wait_until(lambda: first[-1]["value"] in live.lines, timeout=60, what="the third STATE")
        committed_tracks = count_rows(pg_url, pg_schema, "tracks")
        # Hold the loader's next tracks upsert: it has COPYed its batch and waits on the lock.
        locker.execute(f'lock table "{pg_schema}".tracks in share mode')
        locker_pid = locker.info.backend_pid
        live.send(*rest)

        def blocked() -> bool:
            with psycopg.connect(pg_url) as conn:
                return bool(
                    conn.execute(
                        "select count(*) from pg_stat_activity"
                        " where %s = any(pg_blocking_pids(pid))",
                        (locker_pid,),
                    ).fetchone()[0]
                )

        wait_until(blocked, timeout=60, what="the loader to wait on the lock mid-load")
        written_before_kill = list(live.lines)
        live.kill()
    finally:
        if live.proc.poll() is None:
            live.kill()
        locker.rollback()
        locker.close()
    # Nothing of the interrupted batch, no STATE for it or for anything after it.
    assert count_rows(pg_url, pg_schema, "tracks") == committed_tracks
    assert written_before_kill == live.lines
    last_state = live.lines[-1]
    states_sent = [m["value"] for m in messages if m["type"] == "STATE"]
    assert last_state in states_sent
    assert states_sent.index(last_state) < len(states_sent) - 1, "the kill came too late"

    # Resume as Meltano would: the tap from the last STATE the loader wrote.
    resumed = run_tap(tap_config, state=last_state)
    assert resumed[-1]["type"] == "STATE"
    run_loader(TARGET, bulk_config(tmp_path, pg_url, pg_schema), resumed)
    ids = warehouse_ids(pg_url, pg_schema)
    assert set(ids) == expected
    assert max(ids.values()) == 1


def test_sigkill_mid_stream_leaves_no_state_for_uncommitted_rows(
    tmp_path: Path, pg_url: str, pg_schema: str
) -> None:
    cfg = bulk_config(tmp_path, pg_url, pg_schema, batch_size_rows=3)
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

    def rows() -> list[tuple]:
        with psycopg.connect(pg_url) as conn:
            return conn.execute(
                f'select message_id, n from "{pg_schema}".tracks order by 1'
            ).fetchall()

    live = LiveTarget(TARGET, cfg, finish_timeout=120)
    try:
        # m1..m3 fill a batch: it loads, then the state seen so far (line 2) is written.
        live.send(schema, rec(1), rec(2), state(2), rec(3))
        wait_until(lambda: len(live.lines) >= 1, timeout=60, what="the first STATE")
        # m4 and state 4 stay buffered: the batch is not full, so nothing is committed.
        live.send(rec(4), state(4))
    finally:
        live.kill()
    assert live.lines == [state(2)["value"]]
    assert rows() == [("m1", 1), ("m2", 2), ("m3", 3)]

    # Resume from the saved bookmark (line 2): m3 comes again, m4 arrives; all exactly once.
    live = LiveTarget(TARGET, cfg, finish_timeout=120)
    try:
        live.send(schema, rec(3), rec(4), state(4))
        assert live.finish() == 0
    finally:
        if live.proc.poll() is None:
            live.kill()
    assert live.lines == [state(4)["value"]]
    assert rows() == [("m1", 1), ("m2", 2), ("m3", 3), ("m4", 4)]


def test_a_wrong_password_fails_without_showing_it(tmp_path: Path, pg_url: str) -> None:
    secret = "not-the-password-7f3a9"  # a test value that must never be printed
    user, _, rest = pg_url.removeprefix("postgresql://").partition("@")
    bad_url = f"postgresql+psycopg://{user.split(':')[0]}:{secret}@{rest}"
    for config in (
        {"sqlalchemy_url": bad_url},
        {"host": "127.0.0.1", "user": "signalmail", "password": secret, "database": "x"},
    ):
        cfg = write_config(tmp_path, "bad.json", {**config, "default_target_schema": "nowhere"})
        done = subprocess.run(
            [*TARGET, "--config", str(cfg)],
            input=b'{"type":"SCHEMA","stream":"s","schema":{"properties":{"id":{"type":"string"}}},'
            b'"key_properties":["id"]}\n',
            capture_output=True,
            cwd=REPO_ROOT,
            timeout=60,
        )
        assert done.returncode != 0
        output = (done.stdout + done.stderr).decode()
        assert "password authentication failed" in output or "does not exist" in output
        assert secret not in output


def test_dbt_staging_reads_the_bulk_loaded_tables(
    tmp_path: Path, pg_url: str, pg_schema: str, other_schema: str
) -> None:
    """dbt-postgres builds and tests the staging models over what this loader wrote."""
    from testkit.harness import Warehouse, run_dbt

    spool = tmp_path / "spool"
    expected = make_spool(spool)
    run_loader(TARGET, bulk_config(tmp_path, pg_url, pg_schema), run_tap({"source": str(spool)}))
    warehouse = Warehouse(
        dialect="postgres",
        schema=other_schema,
        raw_schema=pg_schema,
        ledger_schema=f"{other_schema}_ledger",
        pg_url=pg_url,
        target_dir=tmp_path / "dbt",
    )
    models = [
        "stg_rudderstack__tracks",
        "stg_rudderstack__pages",
        "stg_rudderstack__identifies",
        "stg_rudderstack__aliases",
        "stg_rudderstack__product_events",
    ]
    try:
        run_dbt(warehouse, "build", "--select", *models)
        with psycopg.connect(pg_url) as conn:
            tracks = conn.execute(
                f'select count(*), count(distinct message_id) from "{other_schema}"'
                ".stg_rudderstack__tracks"
            ).fetchone()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{other_schema}_ledger" cascade')
    assert tracks[0] == tracks[1] == len({i for i in expected if i.startswith("m-track-")})


# --- through Meltano --------------------------------------------------------------------------

PLUGIN_BIN = REPO_ROOT / ".meltano/loaders/target-postgres-bulk/venv/bin/target-postgres-bulk"


@pytest.fixture(scope="session")
def bulk_loader_installed(meltano_installed) -> None:
    """`meltano install loader target-postgres-bulk` when its venv is missing."""
    if not PLUGIN_BIN.exists():
        done = subprocess.run(
            [MELTANO, "install", "loader", "target-postgres-bulk"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert PLUGIN_BIN.exists(), (
        "the plugin venv has no target-postgres-bulk script: pyproject.toml must declare"
        ' target-postgres-bulk = "target_postgres_bulk.target:TargetPostgresBulk.cli"'
    )


@pytest.fixture
def prod_env(tmp_path: Path, pg_url: str, pg_schema: str) -> dict[str, str]:
    """The prod environment's variables, with the warehouse schema of this test."""
    return {
        "SIGNALMAIL_SPOOL": str(tmp_path / "spool"),
        "SIGNALMAIL_PG_URL": pg_url,
        "TARGET_POSTGRES_BULK_DEFAULT_TARGET_SCHEMA": pg_schema,
    }


@pytest.mark.slow
def test_meltano_prod_capture_job_is_incremental_and_exactly_once(
    bulk_loader_installed, tmp_path: Path, pg_url: str, pg_schema: str, prod_env: dict[str, str]
) -> None:
    """`meltano --environment prod run capture-postgres`, as the prod jobs run it."""
    spool = tmp_path / "spool"
    expected = make_spool(spool)
    env = {**prod_env, "TARGET_POSTGRES_BULK_BATCH_SIZE_ROWS": "13"}
    done = meltano_run(tmp_path, env, "capture-postgres", environment="prod")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "target-postgres-bulk" in done.stdout + done.stderr
    ids = warehouse_ids(pg_url, pg_schema)
    assert set(ids) == expected
    assert max(ids.values()) == 1

    # A newer file (two new events, one re-sent), now as BATCH files the loader deletes.
    write_segment(spool, ts_of(600), [event("track", 500), event("page", 501), event("track", 0)])
    batches = tmp_path / "batches"
    env["TAP_RUDDERSTACK_BATCH_CONFIG"] = json.dumps(
        {
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {"root": batches.as_uri()},
            "batch_size": 2,
        }
    )
    env["TARGET_POSTGRES_BULK_DELETE_BATCH_FILES"] = "true"
    done = meltano_run(tmp_path, env, "tap-rudderstack", "target-postgres-bulk", environment="prod")
    assert done.returncode == 0, done.stderr[-3000:]
    ids = warehouse_ids(pg_url, pg_schema)
    assert set(ids) == expected | {"m-track-500", "m-page-501"}
    assert max(ids.values()) == 1
    assert batches.is_dir()
    assert list(batches.iterdir()) == []


@pytest.mark.slow
def test_meltano_kill_and_resume_is_exactly_once(
    bulk_loader_installed, tmp_path: Path, pg_url: str, pg_schema: str, prod_env: dict[str, str]
) -> None:
    """The tap SIGKILLed mid-run (its test hook): the rerun resumes and converges."""
    spool = tmp_path / "spool"
    expected: set[str] = set()
    for f in range(3):
        items = [event(KINDS[n % 6], f * 100 + n) for n in range(100)]
        write_segment(spool, ts_of(f * 60), items)
        expected |= {item["messageId"] for item in items}
    env = {
        **prod_env,
        "TAP_RUDDERSTACK_STATE_EVERY_RECORDS": "40",
        "TARGET_POSTGRES_BULK_BATCH_SIZE_ROWS": "15",
    }
    crashed = meltano_run(
        tmp_path,
        {**env, CRASH_ENV: "170"},
        "tap-rudderstack",
        "target-postgres-bulk",
        environment="prod",
    )
    assert crashed.returncode != 0
    assert sum(warehouse_ids(pg_url, pg_schema).values()) < 300
    resumed = meltano_run(
        tmp_path, env, "tap-rudderstack", "target-postgres-bulk", environment="prod"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ids = warehouse_ids(pg_url, pg_schema)
    assert set(ids) == expected
    assert max(ids.values()) == 1
