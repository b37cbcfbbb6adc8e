"""kill -9 the collector under concurrent load; every acknowledged event is in the spool once.

`signalmail collect` runs as a real subprocess with small segments and a short age, so rotations
(compress, rename, journal delete) happen all through the load and the SIGKILL can land in any
step. Senders use fresh messageIds on every attempt and never retry, so each acknowledged id
must appear exactly once and no id may appear twice.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path

import requests

from tests.helpers.servers import collector_ready, free_port, wait_until

WRITE_KEY = "reliability-key"
SENDERS = 6
BATCH = 40


def start_collector(spool: Path, port: int) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).with_name("signalmail")),
        "collect",
        "--port",
        str(port),
        "--spool",
        str(spool),
        "--source-id",
        "rel",
        "--max-segment-bytes",
        "60000",
        "--max-segment-age",
        "0.3",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(command, env={**os.environ, "SIGNALMAIL_WRITE_KEY": WRITE_KEY})
    wait_until(
        lambda: collector_ready(port, "rel") or proc.poll() is not None, what="collector start"
    )
    assert proc.poll() is None, "collector exited at start"
    return proc


class Sender(threading.Thread):
    """Posts batches until the first failure; remembers what was acknowledged."""

    def __init__(self, url: str, stop: threading.Event, compress: bool) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.compress = url, stop, compress
        self.acked: list[str] = []
        self.attempted: list[str] = []

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            ids = [str(uuid.uuid4()) for _ in range(BATCH)]
            self.attempted.extend(ids)
            body = json.dumps(
                {
                    "batch": [
                        {"type": "track", "event": "Product Viewed", "userId": "u", "messageId": m}
                        for m in ids
                    ]
                }
            ).encode()
            headers = {"Content-Type": "application/json"}
            if self.compress:
                body = gzip.compress(body)
                headers["Content-Encoding"] = "gzip"
            try:
                response = session.post(
                    self.url, data=body, headers=headers, auth=(WRITE_KEY, ""), timeout=10
                )
            except requests.RequestException:
                return  # the collector died mid-request: this batch is unacknowledged
            if response.status_code != 200:
                return
            self.acked.extend(ids)


def spool_message_ids(spool: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in (spool / "rudder-logs").rglob("*.json.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                counts[json.loads(line)["messageId"]] += 1
    return counts


def run_load(port: int, until_acked: int, kill: subprocess.Popen | None) -> list[Sender]:
    stop = threading.Event()
    senders = [
        Sender(f"http://127.0.0.1:{port}/v1/batch", stop, compress=i % 2 == 0)
        for i in range(SENDERS)
    ]
    for sender in senders:
        sender.start()
    wait_until(
        lambda: sum(len(s.acked) for s in senders) >= until_acked, timeout=60, what="load acked"
    )
    if kill is not None:
        kill.send_signal(signal.SIGKILL)
        kill.wait(10)
    stop.set()
    for sender in senders:
        sender.join(15)
    return senders


def test_sigkill_under_load_loses_and_duplicates_nothing_acknowledged(tmp_path):
    spool = tmp_path / "spool"
    port = free_port()
    first = start_collector(spool, port)
    try:
        phase1 = run_load(port, until_acked=6000, kill=first)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    journals_left = list((spool / ".journal" / "rel").glob("*.journal"))

    port = free_port()
    second = start_collector(spool, port)  # recovers the killed process's journals first
    try:
        # recovery runs before the port opens: the killed process's journals are all gone
        assert [p.name for p in journals_left if p.exists()] == []
        phase2 = run_load(port, until_acked=400, kill=None)
    finally:
        second.send_signal(signal.SIGTERM)  # clean stop publishes the open journal
        assert second.wait(60) == 0

    acked = [m for s in phase1 + phase2 for m in s.acked]
    attempted = {m for s in phase1 + phase2 for m in s.attempted}
    counts = spool_message_ids(spool)
    assert len(acked) >= 6400
    missing = [m for m in acked if counts[m] != 1]
    assert missing == [], f"{len(missing)} acknowledged events missing or duplicated"
    assert max(counts.values()) == 1, "some event was written twice"
    assert set(counts) <= attempted  # nothing invented; unacknowledged ones may or may not land
    assert not list((spool / ".journal" / "rel").glob("*.journal"))
    assert not [p for p in spool.rglob("*") if p.name.endswith(".partial")]
    print(
        f"acked {len(acked)}, spool holds {sum(counts.values())} events, "
        f"{len(journals_left)} journals recovered after SIGKILL"
    )
