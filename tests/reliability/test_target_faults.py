"""The target under Mandrill faults and crashes: every trigger ends sent at most once.

All through the real mailchimp-transactional client and the sandbox's fault injection
(POST /sandbox/faults); the crash test kills a real `target-mailchimp-transactional` process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from target_mailchimp_transactional.dispatch import RunStopped
from target_mailchimp_transactional.ledger import Ledger, LedgerEntry
from target_mailchimp_transactional.target import TargetMailchimpTransactional

from tests.helpers.mailchimp_target import (
    API_KEY,
    data_plane,
    ledger_rows,
    run_target,
    sandbox_messages,
    seed_templates,
    singer_lines,
    target_config,
    trigger,
)
from tests.helpers.servers import wait_until

run_sandbox = pytest.importorskip("signalmail.sandbox.testing").run_sandbox
SEND = ["messages/send-template"]


@pytest.fixture
def sandbox(tmp_path):
    with run_sandbox(tmp_path / "sandbox", api_keys=[API_KEY], search_calls_per_minute=600) as sb:
        seed_templates(sb)
        yield sb


def per_trigger(sandbox) -> Counter[str]:
    return Counter(m["metadata"]["trigger_id"] for m in sandbox_messages(sandbox))


def test_transient_faults_are_retried_and_nothing_is_sent_twice(sandbox, tmp_path, caplog):
    sandbox.set_faults(errors={"GeneralError": 0.2}, http_429=0.15, http_5xx=0.15, only=SEND,
                       seed=11)  # fmt: skip
    cfg = target_config(sandbox, tmp_path, max_recipients_per_call=10, max_retries=10)
    rows = [trigger(i) for i in range(80)]
    with caplog.at_level(logging.WARNING, logger="target_mailchimp_transactional"):
        run_target(cfg, singer_lines(rows))
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert any("HTTP 503 with an empty body" in m for m in retried)  # the raw-Response quirk
    assert any("RequestLimitExceeded" in m for m in retried)
    assert any("GeneralError" in m for m in retried)
    assert per_trigger(sandbox) == Counter({f"cart_abandonment:{i}": 1 for i in range(80)})
    assert {r["state"] for r in ledger_rows(cfg).values()} <= {"sent", "queued"}


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"errors": {"GeneralError": 1.0}}, "GeneralError"),
        ({"errors": {"ServiceUnavailable": 1.0}}, "ServiceUnavailable"),
        ({"http_5xx": 1.0}, "HTTP 503 with an empty body"),
        ({"http_429": 1.0}, "RequestLimitExceeded"),
    ],
)
def test_retries_exhausted_are_failed_then_sent_on_the_next_run(sandbox, tmp_path, fault, error):
    sandbox.set_faults(**fault, only=SEND)
    cfg = target_config(sandbox, tmp_path, max_retries=2)
    rows = [trigger(i) for i in range(5)]
    run_target(cfg, singer_lines(rows))
    ledger = ledger_rows(cfg)
    assert {r["state"] for r in ledger.values()} == {"failed"}
    assert "gave up after 3 tries" in ledger["cart_abandonment:0"]["error"]
    assert error in ledger["cart_abandonment:0"]["error"]
    assert sandbox_messages(sandbox) == []
    sandbox.set_faults()
    run_target(cfg, singer_lines(rows))
    assert per_trigger(sandbox) == Counter({f"cart_abandonment:{i}": 1 for i in range(5)})
    # the outage gave its try back: the send that worked is the first counted
    assert {r["attempts"] for r in ledger_rows(cfg).values()} == {1}


def test_invalid_key_stops_the_run_without_showing_the_key(sandbox, tmp_path, caplog):
    cfg = target_config(sandbox, tmp_path, api_key="wrong-key-SECRET-42")
    with caplog.at_level(logging.DEBUG), pytest.raises(RunStopped) as err:
        run_target(cfg, singer_lines([trigger(1)]))
    assert "Invalid_Key" in str(err.value)
    assert "api_key" in str(err.value)
    assert "SECRET-42" not in str(err.value)
    assert "SECRET-42" not in caplog.text
    assert ledger_rows(cfg) == {}  # stopped before claiming anything


def test_invalid_key_mid_run_releases_claims_for_the_next_run(sandbox, tmp_path):
    sandbox.set_faults(errors={"Invalid_Key": 1.0}, only=SEND)
    cfg = target_config(sandbox, tmp_path, max_recipients_per_call=5, concurrency=1)
    rows = [trigger(i) for i in range(12)]
    with pytest.raises(RunStopped, match="Invalid_Key"):
        run_target(cfg, singer_lines(rows))
    assert {r["state"] for r in ledger_rows(cfg).values()} == {"failed"}
    sandbox.set_faults()
    run_target(cfg, singer_lines(rows))
    assert per_trigger(sandbox) == Counter({f"cart_abandonment:{i}": 1 for i in range(12)})


def test_validation_error_records_invalid(sandbox, tmp_path):
    sandbox.set_faults(errors={"ValidationError": 1.0}, only=SEND)
    cfg = target_config(sandbox, tmp_path)
    run_target(cfg, singer_lines([trigger(i) for i in range(4)]))
    ledger = ledger_rows(cfg)
    assert {r["state"] for r in ledger.values()} == {"invalid"}
    assert "ValidationError" in ledger["cart_abandonment:0"]["error"]
    assert sandbox_messages(sandbox) == []


def test_timeout_is_reconciled_not_resent(sandbox, tmp_path):
    sandbox.set_faults(timeout=1.0, timeout_s=1.5, only=SEND)
    with data_plane(tmp_path / "spool", "wk") as plane:
        cfg = target_config(sandbox, tmp_path, timeout=0.4, data_plane_url=plane.url,
                            write_key="wk")  # fmt: skip
        rows = [trigger(i, "browse_abandonment") for i in range(6)]
        run_target(cfg, singer_lines(rows))
        assert {r["state"] for r in ledger_rows(cfg).values()} <= {"sending", "sent", "queued"}
        sandbox.set_faults()
        # The hung request lands after the client gave up, as a slow upstream does.
        wait_until(lambda: len(sandbox_messages(sandbox)) == 6, timeout=10, what="late delivery")
        run_target(cfg, singer_lines(rows))
        ledger = ledger_rows(cfg)
        assert {r["state"] for r in ledger.values()} <= {"sent", "queued"}
        assert per_trigger(sandbox) == Counter({f"browse_abandonment:{i}": 1 for i in range(6)})
        assert all(r["mandrill_id"] for r in ledger.values())
        # Email Sent once per trigger, emitted by whichever reconciliation found the message.
        wait_until(lambda: len(plane.events) >= 6, timeout=10, what="Email Sent events")
        sent = [e["properties"] for e in plane.events if e.get("event") == "Email Sent"]
    assert sorted(p["trigger_id"] for p in sent) == sorted(ledger)
    assert {p["mandrill_id"] for p in sent} == {r["mandrill_id"] for r in ledger.values()}


def test_lost_answer_is_not_success_and_is_reconciled_not_resent(sandbox, tmp_path, caplog):
    """Mandrill sends, the answer comes back 200 `[]` (a raw Response from the client)."""
    sandbox.set_faults(lost_answer=1.0, only=SEND)
    cfg = target_config(sandbox, tmp_path, max_recipients_per_call=4)
    rows = [trigger(i) for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="target_mailchimp_transactional"):
        run_target(cfg, singer_lines(rows))
    assert any("with an empty list" in r.getMessage() for r in caplog.records)
    assert per_trigger(sandbox) == Counter({f"cart_abandonment:{i}": 1 for i in range(10)})
    # End-of-run reconciliation found every message: recorded with Mandrill's _id, never resent.
    ledger = ledger_rows(cfg)
    assert {r["state"] for r in ledger.values()} == {"sent"}
    by_id = {m["metadata"]["trigger_id"]: m["_id"] for m in sandbox_messages(sandbox)}
    assert {t: r["mandrill_id"] for t, r in ledger.items()} == by_id
    assert {r["attempts"] for r in ledger.values()} == {1}
    sandbox.set_faults()
    run_target(cfg, singer_lines(rows))  # the tap re-delivers: nothing goes out again
    assert per_trigger(sandbox) == Counter({f"cart_abandonment:{i}": 1 for i in range(10)})


def test_connection_refused_mid_run_is_retried_then_failed(sandbox, tmp_path):
    """Through the real client: nothing listens on the API port once the key is proven."""
    from target_mailchimp_transactional.client import MandrillClient
    from target_mailchimp_transactional.dispatch import Dispatcher

    from tests.helpers.servers import free_port

    target = TargetMailchimpTransactional(config=target_config(sandbox, tmp_path))
    dispatcher: Dispatcher = target.dispatcher  # key proven, metadata indexed, reconciled
    dispatcher.client = MandrillClient(API_KEY, f"http://127.0.0.1:{free_port()}/api/1.3", 2)
    assert dispatcher.ledger is not None
    waits: list[float] = []
    dispatcher.sleep = waits.append
    dispatcher.s.max_retries = 3
    try:
        dispatcher.dispatch([trigger(i) for i in range(3)])
        dispatcher.flush()
        rows = {r["trigger_id"]: r for r in dispatcher.ledger.all_rows()}
    finally:
        dispatcher.pool.shutdown(wait=True)
        dispatcher.ledger.close()
    assert {r["state"] for r in rows.values()} == {"failed"}
    assert "gave up after 4 tries" in rows["cart_abandonment:0"]["error"]
    assert "connection refused" in rows["cart_abandonment:0"]["error"]
    # Each call (one per A/B variant) tried 4 times with a backoff before each retry.
    assert dispatcher.stats.calls % 4 == 0
    assert len(waits) == 3 * (dispatcher.stats.calls // 4) > 0
    assert all(0 < w <= 0.05 for w in waits)  # jittered, capped by backoff_max_seconds
    assert sandbox_messages(sandbox) == []


def test_claims_a_killed_run_never_sent_go_out_on_the_next_run_at_once(sandbox, tmp_path):
    cfg = target_config(sandbox, tmp_path)
    ledger = Ledger(cfg["ledger_url"])
    ids = [f"cart_abandonment:{i}" for i in range(3)]
    ledger.claim([LedgerEntry(trigger_id=t) for t in ids], 3, run_id="killed:1:run")
    ledger.close()  # as a process killed after its claim, before its request left
    run_target(cfg, singer_lines([trigger(i) for i in range(3)]))
    rows = ledger_rows(cfg)
    assert {r["state"] for r in rows.values()} == {"sent"}
    assert {r["attempts"] for r in rows.values()} == {2}
    assert per_trigger(sandbox) == Counter({t: 1 for t in ids})


FAULT_ROUNDS = 10


def test_lost_answers_dropped_requests_and_a_lagging_index_send_each_email_once(sandbox, tmp_path):
    """Sends and searches fail together; the shop keeps sending; nothing goes out twice.

    Answers lost after the work was done (sends and searches), requests that never reach
    Mandrill, slow answers that land after the client gave up, and an index one second behind
    the sends. Each round the tap offers every trigger again plus a few new ones, as the mart
    does while a shop is open; rounds go on until every trigger has been settled.
    """
    sandbox.set_faults(lost_answer=0.2, dropped=0.2, timeout=0.1, timeout_s=0.6,
                       search_lag_s=1.0, only=[*SEND, "messages/search"], seed=5)  # fmt: skip
    cfg = target_config(sandbox, tmp_path, timeout=0.3, max_recipients_per_call=4,
                        reconcile_grace_seconds=2, max_attempts=10)  # fmt: skip
    offered: list[dict] = []
    settled_at = None
    stopped = 0
    injected: dict[str, int] = {}
    for round_no in range(120):
        if round_no == FAULT_ROUNDS:  # the storm ends; the shop stays open
            injected = sandbox.faults_injected()
            sandbox.set_faults()
        # new triggers every round: after the storm their sends are the later messages a
        # search must see before it may call an earlier trigger absent (docs/activation.md)
        offered += [trigger(f"r{round_no}-{i}") for i in range(8 if round_no < FAULT_ROUNDS else 1)]
        try:
            run_target(cfg, singer_lines(offered))
        except RunStopped:  # a search failing every retry stops a run; the next one goes on
            stopped += 1
        states = {r["state"] for r in ledger_rows(cfg).values()}
        if round_no >= FAULT_ROUNDS and states <= {"sent", "queued"}:
            settled_at = round_no
            break
    assert settled_at is not None, f"not settled after 120 rounds: {Counter(states)}"
    assert {"lost_answer", "dropped", "timeout"} <= set(injected), injected
    sent = per_trigger(sandbox)
    assert max(sent.values()) == 1, [t for t, n in sent.items() if n > 1]
    assert set(sent) == {row["trigger_id"] for row in offered}
    ledger = ledger_rows(cfg)
    assert {r["state"] for r in ledger.values()} <= {"sent", "queued"}
    by_id = {m["metadata"]["trigger_id"]: m["_id"] for m in sandbox_messages(sandbox)}
    assert {t: r["mandrill_id"] for t, r in ledger.items()} == by_id
    assert max(r["attempts"] for r in ledger.values()) > 1  # dropped sends really went again
    assert stopped < settled_at


@pytest.mark.slow
def test_killed_mid_send_is_reconciled_on_rerun(sandbox, tmp_path, pg_url, pg_schema):
    """kill -9 while a send is in flight; the rerun finds it with messages/search."""
    url = pg_url.replace("postgresql://", "postgresql+psycopg://")
    cfg = target_config(sandbox, tmp_path, ledger_url=url, ledger_schema=pg_schema, timeout=60)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(cfg))
    rows = [trigger(i, "browse_abandonment") for i in range(20)]
    input_path = tmp_path / "input.jsonl"
    input_path.write_text(singer_lines(rows))
    sandbox.set_faults(timeout=1.0, timeout_s=2.0, only=SEND)  # the call hangs 2 s, then lands
    arrived: list[str] = []
    injector = sandbox.sandbox.faults
    original_draw = injector.draw

    def draw(operation):  # observe requests reaching the sandbox
        arrived.append(operation)
        return original_draw(operation)

    injector.draw = draw
    exe = Path(sys.executable).with_name("target-mailchimp-transactional")
    with input_path.open() as stdin:
        proc = subprocess.Popen(
            [str(exe), "--config", str(config_path)], stdin=stdin,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        ledger = Ledger(url, pg_schema)

        def in_flight() -> bool:
            return len(ledger.in_flight()) == 20 and SEND[0] in arrived

        wait_until(in_flight, timeout=30, what="`sending` recorded and the call at Mandrill")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert len(ledger.in_flight()) == 20
    sandbox.set_faults()
    wait_until(lambda: len(sandbox_messages(sandbox)) == 20, timeout=15, what="late delivery")
    run_target(cfg, singer_lines(rows))
    states = {r["trigger_id"]: r for r in ledger.all_rows()}
    ledger.close()
    assert {r["state"] for r in states.values()} <= {"sent", "queued"}
    assert {r["attempts"] for r in states.values()} == {1}  # reconciled, not re-claimed
    assert per_trigger(sandbox) == Counter({f"browse_abandonment:{i}": 1 for i in range(20)})
