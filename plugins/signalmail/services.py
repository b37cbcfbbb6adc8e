"""The local services the demo, the tests and the benches start: collector and Mandrill sandbox.

Each runs as a real child process (`signalmail collect`, `signalmail sandbox`) on a free port of
127.0.0.1, is ready when it answers its health endpoint, and stops with SIGTERM when the block
ends. Keys travel in the child's environment, never on its command line (visible in `ps`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

#: How a child process of this package is started: the same interpreter and CLI.
SIGNALMAIL = (sys.executable, "-m", "signalmail")


class ServiceError(click.ClickException):
    """A local service could not start or stop; the message carries the end of its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(log_path: Path, lines: int = 20) -> str:
    """Return the end of a child process's log, for error messages."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log_path})"


def wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    what: str,
    log_path: Path,
    timeout: float,
) -> None:
    """Poll `ready` until it holds; fail with the child's log if it exits or times out first.

    Readiness polling, not a sleep standing in for synchronisation: the loop ends the moment
    the server answers.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise ServiceError(
                f"{what} exited with {process.returncode} during start-up. "
                f"Log:\n{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} not ready after {timeout}s. Log:\n{log_tail(log_path)}")
        time.sleep(0.05)


def _get_json(url: str) -> object | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - our own service
            return json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class CollectorProcess:
    """A `signalmail collect` child process and how to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    write_key: str

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of the collector's log, for error messages."""
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the collector closes its spool, publishing the open segment."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise ServiceError(
                    f"collector did not stop within {timeout}s of SIGTERM; killed it. "
                    f"Log:\n{self.log_tail()}"
                ) from None
        return int(self.process.returncode)


@contextlib.contextmanager
def running_collector(
    spool: Path,
    write_key: str,
    source_id: str,
    port: int | None = None,
    startup_timeout: float = 30.0,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[CollectorProcess]:
    """Run `signalmail collect` for the duration of the block; stop it cleanly afterwards.

    Readiness is GET /health naming our source id: a different server that grabbed the port
    between `free_port()` and our bind never passes as ours.
    """
    port = port or free_port()
    spool.mkdir(parents=True, exist_ok=True)
    log_path = spool.parent / "collector.log"
    command = [
        *SIGNALMAIL, "collect", "--host", "127.0.0.1", "--port", str(port),
        "--spool", str(spool), "--source-id", source_id, *extra_args,
    ]  # fmt: skip
    env = dict(os.environ, SIGNALMAIL_WRITE_KEY=write_key, **(extra_env or {}))
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    collector = CollectorProcess(process, f"http://127.0.0.1:{port}", log_path, write_key)

    def healthy() -> bool:
        body = _get_json(f"{collector.url}/health")
        return isinstance(body, dict) and body.get("source_id") == source_id

    try:
        wait_until_ready(process, healthy, "collector", log_path, startup_timeout)
        yield collector
    finally:
        collector.stop()


@dataclass
class SandboxProcess:
    """A `signalmail sandbox` child process (Mandrill on 127.0.0.1)."""

    process: subprocess.Popen[bytes]
    url: str
    api_key: str
    log_path: Path

    @property
    def api_host(self) -> str:
        """The API root the mailchimp-transactional client and the target use."""
        return f"{self.url}/api/1.3"

    def call(self, path: str, body: dict | None = None) -> object:
        """One Mandrill call through the real client; errors come back as ServiceError."""
        import mailchimp_transactional as mailchimp
        from mailchimp_transactional.api_client import ApiClientError

        client = mailchimp.Client(self.api_key)
        client.api_client.host = self.api_host
        group, method = path.split("/")
        try:
            return getattr(getattr(client, group), method.replace("-", "_"))(dict(body or {}))
        except ApiClientError as exc:
            raise ServiceError(f"sandbox call {path} failed: {exc.text}") from exc

    def set_faults(self, **plan: object) -> dict:
        """Replace the sandbox's fault plan (POST /sandbox/faults); no arguments: no faults."""
        request = urllib.request.Request(  # noqa: S310 - our own local service
            f"{self.url}/sandbox/faults",
            data=json.dumps(plan).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return dict(json.loads(answer.read()))

    def faults_injected(self) -> dict[str, int]:
        """Faults drawn since the plan was last set, by kind (GET /sandbox/faults/injected)."""
        url = f"{self.url}/sandbox/faults/injected"
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - our own service
            return dict(json.loads(answer.read()))

    def messages(self) -> list[dict]:
        """Every message the sandbox holds (messages/search over all time)."""
        found = self.call(
            "messages/search", {"query": "*", "limit": 1000, "date_from": "2000-01-01"}
        )
        return found if isinstance(found, list) else []

    def simulate(self, message_id: str, event: str) -> dict:
        """Make an event happen to a message (open, click, unsub, ...) and fire its webhook."""
        request = urllib.request.Request(  # noqa: S310 - our own local service
            f"{self.url}/sandbox/events",
            data=json.dumps({"message_id": message_id, "event": event}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return dict(json.loads(answer.read()))

    def stop(self) -> None:
        """Stop the sandbox and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_sandbox(
    data_dir: Path,
    webhook_url: str,
    webhook_key: str,
    *,
    open_rate: float = 0.5,
    click_rate: float = 0.4,
    seed: int = 42,
    timeout: float = 30.0,
) -> Iterator[SandboxProcess]:
    """Run `signalmail sandbox` for the block, its webhooks pointed at a collector.

    Opens and clicks are simulated at the given rates, so the engagement models have something
    to count. The API key is random per run and travels in the environment.
    """
    port = free_port()
    api_key = f"local-{secrets.token_hex(8)}"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "sandbox.log"
    command = [
        *SIGNALMAIL, "sandbox", "--port", str(port), "--db", str(data_dir / "sandbox.sqlite"),
        "--webhook-url", webhook_url, "--open-rate", str(open_rate),
        "--click-rate", str(click_rate), "--seed", str(seed),
    ]  # fmt: skip
    env = dict(
        os.environ,
        SIGNALMAIL_SANDBOX_API_KEYS=api_key,
        SIGNALMAIL_SANDBOX_WEBHOOK_KEY=webhook_key,
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    sandbox = SandboxProcess(process, f"http://127.0.0.1:{port}", api_key, log_path)
    try:
        wait_until_ready(
            process,
            lambda: _get_json(f"{sandbox.url}/sandbox/health") is not None,
            "Mandrill sandbox",
            log_path,
            timeout,
        )
        yield sandbox
    finally:
        sandbox.stop()


def publish_starter_templates(
    project_root: Path, api_key: str, api_host: str, record: Path
) -> list[str]:
    """Push templates/mandrill/*.html as drafts with `signalmail templates sync`, then publish.

    Publishing is the marketer's step in real life; the demo and the tests play the marketer.
    """
    env = dict(
        os.environ, SIGNALMAIL_MANDRILL_API_KEY=api_key, SIGNALMAIL_MANDRILL_BASE_URL=api_host
    )
    sync = subprocess.run(  # noqa: S603
        [
            *SIGNALMAIL,
            "templates",
            "sync",
            "--dir",
            str(project_root / "templates" / "mandrill"),
            "--campaigns-dir",
            str(project_root / "templates" / "campaigns"),
            "--record",
            str(record),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if sync.returncode != 0:
        raise ServiceError(f"signalmail templates sync failed:\n{sync.stdout}{sync.stderr}")
    import mailchimp_transactional as mailchimp

    client = mailchimp.Client(api_key)
    client.api_client.host = api_host
    slugs = sorted(path.stem for path in (project_root / "templates" / "mandrill").glob("*.html"))
    for slug in slugs:
        client.templates.publish({"name": slug})
    return slugs
