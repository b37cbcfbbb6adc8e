"""The collector app served by a real uvicorn in a thread on 127.0.0.1, for tests."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import uvicorn
from signalmail.collector.app import CollectorSettings, create_app
from signalmail.collector.spool import SpoolWriter

from tests.helpers.servers import port_open, wait_until

WRITE_KEY = "wk_test_123"


@dataclass
class Running:
    url: str
    root: Path
    writer: SpoolWriter

    def events(self) -> list[dict]:
        """Every event in published segments (flushes the open journal first)."""
        self.writer.flush()
        out = []
        for path in sorted((self.root / "rudder-logs").rglob("*.json.gz")):
            with gzip.open(path, "rt") as handle:
                out.extend(json.loads(line) for line in handle)
        return out

    def metrics(self) -> dict:
        return requests.get(f"{self.url}/metrics", timeout=5).json()


@contextlib.contextmanager
def serve(tmp_path: Path, **overrides) -> Iterator[Running]:
    """The app on a free port, over a spool in `tmp_path` (source `src`)."""
    writer = SpoolWriter(tmp_path, "src")
    settings = CollectorSettings(write_key=WRITE_KEY, **overrides)
    # bound here and handed to uvicorn: no window in which another process can take the port.
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets that say TCP, and
    # without that every response waited for the client's delayed ACK (about 45 ms a request)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, writer), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started and port_open(port), what="collector listening")
    try:
        yield Running(f"http://127.0.0.1:{port}", tmp_path, writer)
    finally:
        server.should_exit = True
        thread.join(10)
        writer.close()
