"""`signalmail collect` as a command: options, environment, a second writer, clean stops."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from rudderstack.analytics.client import Client
from signalmail.cli import main
from signalmail.collector.cli import absorb_replayed_stop_signals

from tests.helpers.servers import collector_ready, free_port, wait_until

SIGNALMAIL = str(Path(sys.executable).with_name("signalmail"))


def test_help_lists_every_setting():
    result = CliRunner().invoke(main, ["collect", "--help"])
    assert result.exit_code == 0
    for option in (
        "--spool",
        "--write-key",
        "--source-id",
        "--journal-dir",
        "--max-segment-bytes",
        "--max-segment-age",
        "--queue-capacity",
        "--max-request-bytes",
        "--storage-options",
        "--mandrill-webhook-key",
        "--mandrill-webhook-url",
    ):
        assert option in result.output


def test_missing_write_key_and_bad_settings_fail_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALMAIL_")}
    runner = CliRunner(env=env)
    result = runner.invoke(main, ["collect", "--spool", str(tmp_path)])
    assert result.exit_code == 2
    assert "--write-key" in result.output
    result = runner.invoke(
        main,
        ["collect", "--spool", str(tmp_path), "--source-id", "a.b"],
        env={"SIGNALMAIL_WRITE_KEY": "k"},
    )
    assert result.exit_code == 1
    assert "source_id 'a.b' is invalid" in result.output
    result = runner.invoke(
        main,
        ["collect", "--spool", str(tmp_path), "--storage-options", "{nope"],
        env={"SIGNALMAIL_WRITE_KEY": "k"},
    )
    assert result.exit_code == 2
    assert "must be a JSON object" in result.output


def test_second_collector_on_same_spool_is_refused(tmp_path):
    port = free_port()
    env = {**os.environ, "SIGNALMAIL_WRITE_KEY": "cli-key"}
    first = subprocess.Popen(
        [SIGNALMAIL, "collect", "--port", str(port), "--spool", str(tmp_path)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: collector_ready(port, "signalmail") or first.poll() is not None,
            what="first collector",
        )
        second = subprocess.run(
            [SIGNALMAIL, "collect", "--port", str(free_port()), "--spool", str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert "another process is writing source 'signalmail'" in second.stderr
        assert "cli-key" not in second.stderr
    finally:
        first.terminate()
        first.wait(60)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_publishes_everything_and_exits_0(tmp_path, stop):
    """A graceful stop is a success: exit 0 (not -15/143), open segment published, no journal."""
    port = free_port()
    proc = subprocess.Popen(
        [SIGNALMAIL, "collect", "--port", str(port), "--spool", str(tmp_path)],
        env={**os.environ, "SIGNALMAIL_WRITE_KEY": "cli-key"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: collector_ready(port, "signalmail") or proc.poll() is not None,
            what="collector",
        )
        assert proc.poll() is None, proc.stderr.read()
        client = Client("cli-key", host=f"http://127.0.0.1:{port}", sync_mode=True, max_retries=0)
        sent = [client.track(user_id="u", event=f"e{i}")[1]["messageId"] for i in range(3)]
        proc.send_signal(stop)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert f"stopped on {stop.name}" in stderr
    segments = list((tmp_path / "rudder-logs" / "signalmail").rglob("*.json.gz"))
    assert len(segments) == 1  # the age limit (60 s) never hit: the stop published it
    with gzip.open(segments[0], "rt") as handle:
        assert [json.loads(line)["messageId"] for line in handle] == sent
    assert not list((tmp_path / ".journal" / "signalmail").glob("*.journal"))


def test_stop_signal_handler_records_stops_and_escalates_after_run():
    """In-process: the replayed signal is absorbed; one after `run` returned aborts; the
    handlers found before are back afterwards."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    server = SimpleNamespace(should_exit=False)
    with absorb_replayed_stop_signals(server) as stop:
        signal.raise_signal(signal.SIGTERM)  # what uvicorn does after its graceful shutdown
        assert stop.received == [signal.SIGTERM]
        assert server.should_exit is True
        stop.run_returned = True
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
