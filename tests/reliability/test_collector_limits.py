"""A collector that cannot be starved: idle and slow clients, too many connections, a full
disk, a read-only spool. Real `signalmail collect` processes on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers.servers import collector_ready, free_port, wait_until

pytestmark = pytest.mark.slow

WRITE_KEY = "limits-key"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


@contextlib.contextmanager
def collector(
    spool: Path, *args: str, nofile: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()

    def limit() -> None:  # in the child, before exec: its own handle limit
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen(
        [sys.executable, "-m", "signalmail", "collect", "--host", "127.0.0.1", "--port",
         str(port), "--spool", str(spool), "--source-id", "lim", "--log-level", "warning",
         *args],
        env={**os.environ, "SIGNALMAIL_WRITE_KEY": WRITE_KEY}, preexec_fn=limit,
    )  # fmt: skip
    try:
        wait_until(
            lambda: collector_ready(port, "lim") or process.poll() is not None,
            what="collector start",
        )
        assert process.poll() is None, "the collector exited at start"
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


def batch(n: int = 5) -> dict:
    return {"batch": [{"type": "track", "event": "Product Viewed", "anonymousId": "a",
                       "messageId": str(uuid.uuid4())} for _ in range(n)]}  # fmt: skip


def post(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/v1/batch", json=body, headers=AUTH, timeout=10)


def health(url: str) -> int:
    return requests.get(f"{url}/health", timeout=5).status_code


def published_ids(spool: Path) -> list[str]:
    import gzip

    ids = []
    for path in sorted((spool / "rudder-logs").rglob("*.json.gz")):
        with gzip.open(path, "rt") as handle:
            ids += [json.loads(line)["messageId"] for line in handle]
    return ids


def test_idle_and_slow_clients_cannot_exhaust_the_handles(tmp_path):
    with (
        collector(tmp_path / "spool", "--client-timeout", "1", nofile=256) as (url, _proc),
        contextlib.ExitStack() as sockets,
    ):
        host, port = url.removeprefix("http://").split(":")
        idle = []
        for _ in range(300):  # more than the process may open: connected, saying nothing
            sock = sockets.enter_context(socket.create_connection((host, int(port)), timeout=5))
            idle.append(sock)
        # a slow body: a head, then nothing more of the promised 1,000 bytes. While the idle
        # connections fill the server to its limit it may refuse the head with a 503 (its
        # documented answer at the limit); once they are closed the head is admitted and the
        # missing body must end in a 408, not a connection held forever.
        answers: list[str] = []

        def slow_body_answered_408() -> bool:
            try:
                with socket.create_connection((host, int(port)), timeout=10) as slow:
                    slow.sendall(
                        f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: "
                        f"{AUTH['Authorization']}\r\nContent-Type: application/json\r\n"
                        "Content-Length: 1000\r\n\r\n{".encode()
                    )
                    answers.append(slow.recv(4096).decode(errors="replace"))
            except (ConnectionResetError, BrokenPipeError):
                return False  # refused while the server had no handle to spare: try again
            if not answers[-1]:
                return False  # closed unanswered at the limit: try again
            assert answers[-1].startswith(("HTTP/1.1 408", "HTTP/1.1 503")), answers[-1]
            return answers[-1].startswith("HTTP/1.1 408")

        wait_until(slow_body_answered_408, timeout=30, what="a 408 for the slow body")
        # the idle ones are closed by the server within the head timeout; the next client
        # is served, and the spool was never hurt
        wait_until(lambda: post(url, batch()).status_code == 200, timeout=30,
                   what="a request served after the idle connections")  # fmt: skip
        assert health(url) == 200
        closed = 0
        for sock in idle:
            sock.settimeout(5)
            try:
                closed += sock.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(idle)
        metrics = requests.get(f"{url}/metrics", timeout=5).json()
        assert metrics["rejected_requests"].get("body_timeout") == 1


def test_a_full_disk_refuses_events_until_there_is_room_and_loses_none(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("mounting a small tmpfs needs root")
    try:
        spool = disk / "spool"
        with collector(spool, "--max-segment-age", "0.2") as (url, _proc):
            acked: list[str] = []
            filler = disk / "filler"
            with filler.open("wb") as handle, contextlib.suppress(OSError):
                while True:  # take every byte left
                    handle.write(b"\0" * 65536)
                    handle.flush()
            refused = 0
            for _ in range(20):
                body = batch(50)
                answer = post(url, body)
                if answer.status_code == 200:
                    acked += [e["messageId"] for e in body["batch"]]
                else:
                    assert answer.status_code == 503, answer.text
                    assert answer.headers.get("Retry-After") == "1"
                    refused += 1
            assert refused > 0
            assert health(url) == 200  # refused for now, not broken
            filler.unlink()
            body = batch(50)
            wait_until(lambda: post(url, body).status_code == 200, timeout=30,
                       what="events accepted once there is room")  # fmt: skip
            acked += [e["messageId"] for e in body["batch"]]
        ids = published_ids(spool)
        assert set(acked) <= set(ids)
        assert len(ids) == len(set(ids))
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_read_only_spool_is_a_clear_error_at_start(tmp_path):
    disk = tmp_path / "ro"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "signalmail", "collect", "--port", str(free_port()),
             "--spool", str(disk / "spool")],
            env={**os.environ, "SIGNALMAIL_WRITE_KEY": WRITE_KEY},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1
        assert "cannot write the spool" in done.stderr
        assert "Read-only file system" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        subprocess.run(["umount", str(disk)], check=False)
