"""The whole loop under fire: every acknowledged event lands once, every due email goes once.

A workload whose correct outcome is known: scripted shoppers each identify (four in five say
yes to email) and abandon a cart two hours back. Raw HTTP senders post their events and
remember which batches the collector acknowledged, retrying the others with the same
messageIds, as the SDKs do. Meanwhile, round after round:

- `signalmail watch` (tap, loader, dbt, warehouse tap and email target in one process) is
  started and SIGKILLed at a random moment;
- the collector is SIGKILLed at random and started again on the same spool and port;
- the Mandrill sandbox answers 20% of every call, sends and searches alike, with a fault of
  every kind: errors, 429, 5xx, timeouts that land, requests that never arrive, lost answers,
  and an index two seconds behind.

Then the faults stop, the senders finish, and the watch runs to the end. Checked on the
warehouse and on the sandbox's side: every acknowledged event is in the raw tables exactly
once; every shopper who said yes got exactly one email; nobody who said no got any.

Scale and rounds come from SIGNALMAIL_FAULT_SHOPPERS, SIGNALMAIL_FAULT_ROUNDS and
SIGNALMAIL_FAULT_SEED (`make faults` runs the long version; figures in docs/bench.md).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest
import requests
from signalmail.services import publish_starter_templates, running_sandbox

from tests.integration.watch_support import WATCH_VARS
from tests.support import REPO_ROOT, collector_ready, free_port, wait_until

pytestmark = pytest.mark.slow

SHOPPERS = int(os.environ.get("SIGNALMAIL_FAULT_SHOPPERS", "40"))
ROUNDS = int(os.environ.get("SIGNALMAIL_FAULT_ROUNDS", "8"))
SEED = int(os.environ.get("SIGNALMAIL_FAULT_SEED", "7"))
SOURCE = "shop"
FAULTS = {
    "errors": {"GeneralError": 0.03, "ServiceUnavailable": 0.02},
    "http_429": 0.03,
    "http_5xx": 0.03,
    "timeout": 0.03,
    "dropped": 0.03,
    "lost_answer": 0.03,
    "timeout_s": 2.5,
    "search_lag_s": 2.0,
    "seed": SEED,
}


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shopper_events(n: int, now: dt.datetime) -> list[dict]:
    user, opted_in = f"s{n}", n % 5 != 0
    at = now - dt.timedelta(hours=2)
    base = {"anonymousId": f"anon-{user}", "userId": user}
    return [
        {**base, "type": "identify", "messageId": f"id-{user}", "originalTimestamp": iso(at),
         "sentAt": iso(now), "context": {"traits": {"email": f"{user}@example.com",
         "first_name": user.upper(), "email_opt_in": opted_in, "timezone": "UTC"}}},
        {**base, "type": "track", "event": "Product Added", "messageId": f"add-{user}",
         "originalTimestamp": iso(at + dt.timedelta(seconds=5)), "sentAt": iso(now),
         "properties": {"cart_id": f"cart-{user}", "product_id": "p-tent", "sku": "P-TENT",
                        "name": "Dome Tent", "price": 240.0, "quantity": 1, "currency": "EUR",
                        "url": "https://shop.example.com/p/tent"}},
    ]  # fmt: skip


class Collector:
    """`signalmail collect` on a fixed port, killed and restarted at will."""

    def __init__(self, spool: Path, port: int, write_key: str, webhook_key: str) -> None:
        self.spool, self.port, self.url = spool, port, f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "SIGNALMAIL_WRITE_KEY": write_key,
                    "SIGNALMAIL_MANDRILL_WEBHOOK_KEY": webhook_key}  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "signalmail", "collect", "--host", "127.0.0.1",
             "--port", str(self.port), "--spool", str(self.spool), "--source-id", SOURCE,
             "--max-segment-age", "0.5", "--log-level", "warning"],
            env=self.env,
        )  # fmt: skip
        wait_until(
            lambda: collector_ready(self.port, SOURCE) or self.process.poll() is not None,
            what="collector start",
        )
        assert self.process.poll() is None, "the collector exited at start"

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class Sender(threading.Thread):
    """Posts the shoppers' events in small batches until each batch is acknowledged."""

    def __init__(self, url: str, write_key: str, events: list[dict], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.batches = [events[i : i + 6] for i in range(0, len(events), 6)]
        self.rng = rng
        self.acked: list[str] = []
        self.retries = 0

    def run(self) -> None:
        session = requests.Session()
        for batch in self.batches:
            while True:
                try:
                    answer = session.post(
                        f"{self.url}/v1/batch", json={"batch": batch}, timeout=5,
                        headers={"Authorization": self.auth},
                    )  # fmt: skip
                    if answer.status_code == 200:
                        self.acked += [e["messageId"] for e in batch]
                        break
                except requests.RequestException:
                    pass
                self.retries += 1
                time.sleep(0.2)  # a client's back-off before its retry, not a synchronisation
            time.sleep(self.rng.uniform(0, 0.3))  # shoppers arrive over time


def raw_message_ids(path: Path) -> Counter[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        ids: Counter[str] = Counter()
        for table in ("identifies", "tracks"):
            ids.update(
                m
                for (m,) in con.execute(
                    f"select message_id from rudderstack_raw.{table}"
                ).fetchall()
            )
        return ids


def test_acknowledged_events_land_once_and_due_emails_go_once_under_kills_and_faults(tmp_path):
    rng = random.Random(SEED)
    write_key, webhook_key = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    port = free_port()
    collector = Collector(tmp_path / "spool", port, write_key, webhook_key)
    collector.start()
    watch_kills = 0
    try:
        with running_sandbox(
            tmp_path / "sandbox", f"{collector.url}/webhooks/mandrill", webhook_key,
            open_rate=0.0, click_rate=0.0,
        ) as sandbox:  # fmt: skip
            publish_starter_templates(
                REPO_ROOT, sandbox.api_key, sandbox.api_host, tmp_path / "s.json"
            )
            env = {
                **os.environ,
                "SIGNALMAIL_DBT_TARGET": "duckdb",
                "SIGNALMAIL_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
                "SIGNALMAIL_LEDGER_PATH": str(tmp_path / "ledger.duckdb"),
                "SIGNALMAIL_SPOOL": str(tmp_path / "spool"),
                "SIGNALMAIL_MANDRILL_API_KEY": sandbox.api_key,
                "SIGNALMAIL_MANDRILL_BASE_URL": sandbox.api_host,
                "SIGNALMAIL_RECONCILE_GRACE_SECONDS": "4",
                "SIGNALMAIL_MANDRILL_TIMEOUT": "1",  # the sandbox's timeouts hang 2.5 s
            }
            command = [
                sys.executable, "-m", "signalmail", "watch", "--project-root", str(REPO_ROOT),
                "--state-dir", str(tmp_path / "watch"), "--metrics-port", "0", "--view", "quiet",
                "--nightly-at", "never", "--vars", json.dumps(WATCH_VARS), "--exit-when-idle",
            ]  # fmt: skip
            now = dt.datetime.now(dt.UTC)
            events = [e for n in range(SHOPPERS) for e in shopper_events(n, now)]
            sender = Sender(collector.url, write_key, events, rng)
            sender.start()
            sandbox.set_faults(**FAULTS)
            for _ in range(ROUNDS):
                watch = subprocess.Popen(
                    command, cwd=REPO_ROOT, env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    watch.wait(timeout=rng.uniform(1.0, 12.0))
                except subprocess.TimeoutExpired:
                    watch.send_signal(signal.SIGKILL)
                    watch.wait(10)
                    watch_kills += 1
                if rng.random() < 0.5:
                    collector.kill()
                    collector.start()
            sender.join(timeout=300)
            assert not sender.is_alive(), "the senders never got every batch acknowledged"
            injected = sandbox.faults_injected()
            sandbox.set_faults()
            # the shop stays open: a last shopper, whose email is the evidence later searches
            # need to settle a send whose answer was lost (docs/activation.md)
            closing = Sender(collector.url, write_key, shopper_events(SHOPPERS + 1, now), rng)
            closing.run()
            wait_until(lambda: _published(tmp_path / "spool") >= len(sender.acked) + 2,
                       timeout=60, what="every acknowledged event published")  # fmt: skip
            settled = False
            for _ in range(6):  # a send whose answer was lost needs a later run's evidence
                done = subprocess.run(
                    [*command, "--fail-fast"], cwd=REPO_ROOT, env=env,
                    capture_output=True, text=True, timeout=600,
                )  # fmt: skip
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
                with duckdb.connect(str(tmp_path / "ledger.duckdb"), read_only=True) as con:
                    open_rows = con.execute(
                        "select count(*) from signalmail_ledger.send_ledger "
                        "where state in ('claimed', 'sending', 'failed')"
                    ).fetchone()[0]
                if open_rows == 0:
                    settled = True
                    break
            assert settled, "the ledger still holds unsettled sends"

            loaded = raw_message_ids(tmp_path / "warehouse.duckdb")
            assert set(sender.acked) <= set(loaded)
            assert max(loaded.values()) == 1
            sent = Counter(m["email"] for m in sandbox.messages())
            shoppers = [*range(SHOPPERS), SHOPPERS + 1]  # and the closing one
            expected = {f"s{n}@example.com" for n in shoppers if n % 5 != 0}
            assert set(sent) == expected, set(sent) ^ expected
            assert max(sent.values()) == 1, [e for e, c in sent.items() if c > 1]
            assert injected, "no Mandrill fault was drawn: the rounds tested nothing"
            faults = ", ".join(f"{kind} {n}" for kind, n in sorted(injected.items()))
            print(
                f"\nfault harness: {SHOPPERS} shoppers, {ROUNDS} rounds, {watch_kills} watch "
                f"kills, {collector.kills} collector kills, {sender.retries} sender retries, "
                f"{len(sender.acked)} events acknowledged and loaded once, {len(sent)} emails "
                f"sent once, 0 to shoppers who said no; Mandrill faults: {faults}"
            )
    finally:
        collector.stop()


def _published(spool: Path) -> int:
    from signalmail.collector.readback import read_spool

    return len(read_spool(spool, SOURCE).message_ids)
