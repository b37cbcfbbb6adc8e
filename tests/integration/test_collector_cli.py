"""`signalmail collect` as a command: options, environment, refusal of a second writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from signalmail.cli import main

from tests.conftest import free_port, port_open, wait_until

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
        wait_until(lambda: port_open(port) or first.poll() is not None, what="first collector")
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
