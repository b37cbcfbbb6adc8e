"""tap-rudderstack killed with SIGKILL at many points, rerun from its last flushed STATE each time.

The tap runs as a real process (`tap-rudderstack --config ... --state ...`) and is killed by its
test hook, which flushes the records written so far and then SIGKILLs itself, so the records
after the last STATE reach the output but the STATE covering them never does: the harshest case
for resume. The chain of runs (each resuming from the previous run's last STATE) must emit every
event at least once, re-emit only what came after the last bookmark, and end with nothing left.
The spool holds a truncated gzip, bad lines, a late file and several sources to make the kill
land in every kind of place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from tap_rudderstack.sync import CRASH_ENV

from tests.helpers.spool import KINDS, event, ts_of, write_segment

TAP = str(Path(sys.executable).parent / "tap-rudderstack")

pytestmark = pytest.mark.slow


def run(config: Path, state: dict | None, tmp: Path, crash_after: int | None):
    args = [TAP, "--config", str(config)]
    if state is not None:
        state_file = tmp / "state.json"
        state_file.write_text(json.dumps(state))
        args += ["--state", str(state_file)]
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_after is not None:
        env[CRASH_ENV] = str(crash_after)
    done = subprocess.run(args, env=env, capture_output=True, timeout=120)
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, messages, done.stderr.decode()


def keys(messages) -> list[str]:
    return [
        m["record"].get("message_id") or m["record"]["rejected_id"]
        for m in messages
        if m["type"] == "RECORD"
    ]


def build(root: Path) -> None:
    """Two sources, a bad line, a truncated gzip, a US-style date folder."""
    write_segment(root, ts_of(0), [event(KINDS[n % 6], n) for n in range(120)] + ["{bad"])
    write_segment(root, ts_of(30), [event("track", 500 + n) for n in range(80)], source_id="ios")
    write_segment(root, ts_of(60), [event("page", 600 + n) for n in range(300)], truncate_to=3000)
    write_segment(root, ts_of(90), [event("identify", 900 + n) for n in range(60)], us_date=True)


@pytest.fixture(scope="module")
def spool(tmp_path_factory) -> tuple[Path, Counter]:
    """The spool, its config file and what one uninterrupted run emits."""
    tmp = tmp_path_factory.mktemp("crash")
    build(tmp / "spool")
    config = tmp / "config.json"
    config.write_text(json.dumps({"source": str(tmp / "spool"), "state_every_records": 25}))
    code, reference, _ = run(config, None, tmp, None)
    assert code == 0
    everything = Counter(keys(reference))
    assert len(everything) > 250
    return config, everything


# Kill points: first record, inside a checkpoint interval, at the truncated file, in the late
# part of the order, near the end.
@pytest.mark.parametrize("crash_after", [1, 37, 150, 199, 262])
def test_killed_then_resumed_emits_everything_at_least_once(spool, tmp_path, crash_after):
    config, everything = spool

    code, crashed, _ = run(config, None, tmp_path, crash_after)
    assert code == -signal.SIGKILL
    assert len(keys(crashed)) == crash_after  # the hook flushed exactly what it wrote
    states = [m["value"] for m in crashed if m["type"] == "STATE"]
    state = states[-1] if states else None

    code, resumed, _ = run(config, state, tmp_path, None)
    assert code == 0
    got = Counter(keys(crashed)) + Counter(keys(resumed))
    assert set(got) == set(everything)  # at least once
    # Re-emitted lines are only those after the last bookmark: at most one checkpoint's worth.
    duplicates = sum(got.values()) - sum(everything.values())
    assert 0 <= duplicates <= 25

    code, after, _ = run(
        config, [m for m in resumed if m["type"] == "STATE"][-1]["value"], tmp_path, None
    )
    assert code == 0
    assert keys(after) == []


def test_a_late_file_arriving_between_a_crash_and_the_resume_is_read(tmp_path):
    root = tmp_path / "spool"
    build(root)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"source": str(root), "state_every_records": 25}))
    code, crashed, _ = run(config, None, tmp_path, 300)
    assert code == -signal.SIGKILL
    state = [m["value"] for m in crashed if m["type"] == "STATE"][-1]
    write_segment(root, ts_of(10), [event("track", 7000 + n) for n in range(5)])
    code, resumed, stderr = run(config, state, tmp_path, None)
    assert code == 0
    assert {f"m-track-{7000 + n}" for n in range(5)} <= set(keys(resumed))
    assert "Reading late spool file" in stderr
