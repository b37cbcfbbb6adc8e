"""Run the sandbox inside a test: uvicorn on a free port in a thread, ready when yielded.

    from signalmail.sandbox.testing import run_sandbox

    with run_sandbox(tmp_path, api_keys=["test-key"]) as sandbox:
        client = sandbox.client("test-key")          # real mailchimp_transactional.Client
        client.users.ping()                           # "PONG!"
        sandbox.set_faults(errors={"GeneralError": 0.2}, seed=7)
        sandbox.simulate(message_id, "open")
        sandbox.wait_webhooks()

`sandbox.api_host` is what `client.api_client.host` must be (`<base_url>/api/1.3`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from signalmail.sandbox.app import AutoEvents, Sandbox, SandboxConfig, create_app
from signalmail.sandbox.faults import FaultPlan


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningSandbox:
    """A sandbox serving on `base_url`; helpers for what tests do most."""

    base_url: str
    sandbox: Sandbox

    @property
    def api_host(self) -> str:
        """The value for `client.api_client.host`."""
        return self.base_url + "/api/1.3"

    def client(self, api_key: str, timeout: float = 10.0) -> Any:
        """Return a real `mailchimp_transactional.Client` pointed at this sandbox."""
        import mailchimp_transactional

        client = mailchimp_transactional.Client(api_key)
        client.api_client.host = self.api_host
        client.api_client.set_timeout(timeout)
        return client

    def admin(self, path: str, payload: Any | None = None, timeout: float = 30.0) -> Any:
        """POST (or GET without payload) a `/sandbox/...` admin endpoint; returns its JSON."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(  # noqa: S310 - our own local URL
            self.base_url + path,
            data=data,
            method="POST" if data is not None else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())

    def set_faults(self, **plan: Any) -> dict[str, Any]:
        """Replace the fault plan (see `FaultPlan`); `set_faults()` clears every fault."""
        return self.admin("/sandbox/faults", plan)

    def faults_injected(self) -> dict[str, int]:
        """Faults drawn since the plan was last set, by kind (see `FaultInjector.injected`)."""
        return dict(self.admin("/sandbox/faults/injected"))

    def simulate(self, message_id: str, event: str, url: str | None = None) -> dict[str, Any]:
        """Apply an open/click/hard_bounce/soft_bounce/spam/unsub and fire its webhook."""
        return self.admin("/sandbox/events", {"message_id": message_id, "event": event, "url": url})

    def seed_mc_templates(self, templates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create Mailchimp templates (mctemplates/*); returns them with their ids."""
        return self.admin("/sandbox/mctemplates", templates)

    def wait_webhooks(self, timeout: float = 10.0) -> None:
        """Block until every queued webhook batch is delivered or given up."""
        if not self.sandbox.dispatcher.wait_idle(timeout):
            raise TimeoutError(f"webhooks still pending after {timeout}s")

    def wait_delivered(self, timeout: float = 10.0) -> None:
        """Block until background delivery (queued -> sent, send events) has caught up."""
        self.sandbox._delivery.submit(lambda: None).result(timeout)
        self.wait_webhooks(timeout)


@contextlib.contextmanager
def run_sandbox(
    tmp_path: Path,
    api_keys: list[str] | None = None,
    *,
    port: int | None = None,
    faults: FaultPlan | None = None,
    auto_events: AutoEvents | None = None,
    startup_timeout: float = 15.0,
    **options: Any,
) -> Iterator[RunningSandbox]:
    """Serve a sandbox whose database lives in `tmp_path`; stop it on exit.

    `options` are any other `SandboxConfig` fields (error_style, webhook_urls, webhook_key,
    search_calls_per_minute, index_all_metadata, subaccounts, probe_webhooks, seed, ...).
    Re-using the same `tmp_path` re-opens the same database: messages survive a restart.
    """
    port = port or _free_port()
    base_url = f"http://127.0.0.1:{port}"
    config = SandboxConfig(
        db_path=Path(tmp_path) / "sandbox.sqlite3",
        api_keys=api_keys or ["sandbox-key"],
        public_url=base_url,
        faults=faults or FaultPlan(),
        auto_events=auto_events or AutoEvents(),
        **options,
    )
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"sandbox-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"sandbox did not start on {base_url} within {startup_timeout}s")
        time.sleep(0.01)  # readiness polling, not synchronisation
    try:
        yield RunningSandbox(base_url, app.state.sandbox)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
