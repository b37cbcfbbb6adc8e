"""`signalmail sandbox` as an operator starts it: a real process, flags, env, clean refusal."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from tests.helpers.servers import free_port, port_open, wait_until

SIGNALMAIL = [sys.executable, "-c", "from signalmail.cli import main; main()"]


def test_cli_serves_keys_faults_and_webhook_flags(tmp_path):
    port = free_port()
    env = {**os.environ, "SIGNALMAIL_SANDBOX_API_KEYS": "env-key-1 env-key-2"}
    process = subprocess.Popen(
        [
            *SIGNALMAIL,
            "sandbox",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "sb.sqlite3"),
            "--fault-error",
            "PaymentRequired=1.0",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-key",
            "whsec",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: port_open(port), timeout=20, what="sandbox CLI listening")
        url = f"http://127.0.0.1:{port}/api/1.3/users/ping.json"
        answer = requests.post(url, json={"key": "env-key-2"}, timeout=5)
        assert (answer.status_code, answer.json()["name"]) == (500, "PaymentRequired")
        requests.post(f"http://127.0.0.1:{port}/sandbox/faults", json={}, timeout=5)
        assert requests.post(url, json={"key": "env-key-1"}, timeout=5).json() == "PONG!"
        assert requests.post(url, json={"key": "nope"}, timeout=5).json()["name"] == "Invalid_Key"
        hooks = requests.post(
            f"http://127.0.0.1:{port}/api/1.3/webhooks/list.json",
            json={"key": "env-key-1"},
            timeout=5,
        ).json()
        assert [(h["url"], h["auth_key"]) for h in hooks] == [("http://127.0.0.1:9/hook", "whsec")]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    assert "env-key" not in output  # keys are never printed
    assert f"http://127.0.0.1:{port}/api/1.3" in output


def test_cli_refuses_bad_fault_settings(tmp_path):
    result = subprocess.run(
        [
            *SIGNALMAIL,
            "sandbox",
            "--db",
            str(tmp_path / "x.sqlite3"),
            "--fault-429",
            "0.8",
            "--fault-5xx",
            "0.4",
            "--fault-lost-answer",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "add up to 1.300 > 1" in result.stderr  # lost_answer counts with the others
