"""The send engine against a scripted in-memory Mandrill: batching, ledger, every error class.

The fake speaks the client's translated interface (same exception classes the real client
raises), so these tests pin the engine's decisions; tests/integration and tests/reliability
repeat the important ones over HTTP against the sandbox with the real client.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from target_mailchimp_transactional.blocks import BlockRenderer
from target_mailchimp_transactional.campaigns import load_campaigns
from target_mailchimp_transactional.client import (
    AmbiguousError,
    InvalidKeyError,
    PermanentError,
    RetryableError,
    TemplateError,
    ValidationFailed,
)
from target_mailchimp_transactional.dispatch import Dispatcher, RunStopped, Settings
from target_mailchimp_transactional.ledger import Ledger, LedgerEntry

REPO = Path(__file__).resolve().parents[2]
BLOCKS = REPO / "templates" / "blocks"
CAMPAIGNS = REPO / "templates" / "campaigns"
ONE = "browse_abandonment"  # a campaign with a single variant: one call per batch


def iso(minutes: float) -> str:
    return (
        dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=minutes)
    ).isoformat()


def row(n: int, campaign: str = "cart_abandonment", **over: Any) -> dict[str, Any]:
    base = {
        "trigger_id": f"{campaign}:{n}", "campaign": campaign, "user_id": f"u{n}",
        "email": f"u{n}@example.com", "first_name": f"A{n}", "send_after": iso(-1),
        "expires_at": iso(60), "holdout": False,
        "payload": {"products": [{"name": "Shoe", "url": "https://s.example/p"}], "order_id": "o",
                    "recommendations": [], "cart_total": 5, "currency": "EUR"},
    }  # fmt: skip
    base.update(over)
    return base


class FakeMandrill:
    """Records every call; `script` is a list of exceptions (or None) consumed per send."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.script: list[Exception | None] = []
        self.stored: list[dict[str, Any]] = []  # what "Mandrill" has, for search
        self.searches: list[str] = []
        self.reject: dict[str, str] = {}
        self.invalid_rcpt: set[str] = set()
        self.store_then_fail = False
        self.lock = threading.Lock()
        self.host = "fake"

    def ping(self) -> str:
        return "PONG!"

    def metadata_list(self) -> list[dict[str, Any]]:
        return [{"name": "trigger_id"}]

    def metadata_add(self, name: str) -> None:  # pragma: no cover - listed already
        pass

    def send_template(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        with self.lock:
            self.calls.append(json.loads(json.dumps(body)))
            error = self.script.pop(0) if self.script else None
        to = [r["email"] for r in body["message"]["to"]]
        if isinstance(error, ValidationFailed) and not (set(to) & self.invalid_rcpt):
            error = None  # a bisected half without the bad address goes through
        if error is not None and not (self.store_then_fail and isinstance(error, AmbiguousError)):
            raise error
        results = []
        meta = {m["rcpt"]: m["values"] for m in body["message"]["recipient_metadata"]}
        for email in to:
            status = "rejected" if email in self.reject else "sent"
            result = {"email": email, "status": status, "_id": f"id-{email}",
                      "reject_reason": self.reject.get(email)}  # fmt: skip
            results.append(result)
            with self.lock:
                self.stored.append({"_id": result["_id"], "state": status, "metadata": meta[email]})
        if error is not None:
            raise error  # stored, then the answer was lost
        return results

    send_mc_template = send_template

    def search(self, query: str, date_from: str | None = None, limit: int = 1000) -> list[dict]:
        self.searches.append(query)
        return [m for m in self.stored if f'"{m["metadata"]["trigger_id"]}"' in query]

    def sent_ids(self) -> Counter[str]:
        return Counter(m["metadata"]["trigger_id"] for m in self.stored)


@pytest.fixture
def campaigns():
    return load_campaigns(CAMPAIGNS, BLOCKS)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"duckdb:///{tmp_path / 'ledger.duckdb'}")
    yield led
    led.close()


def make(campaigns, ledger, fake, **settings) -> Dispatcher:
    defaults = {"max_recipients_per_call": 100, "concurrency": 3, "max_retries": 3,
                "backoff_base_seconds": 0.0, "backoff_max_seconds": 0.0,
                "search_calls_per_minute": 60_000,
                "reconcile_grace_seconds": 0}  # as if the next run came long after  # fmt: skip
    defaults.update(settings)
    d = Dispatcher(Settings(**defaults), campaigns, BlockRenderer(BLOCKS), fake, ledger,
                   sleep=lambda s: None)  # fmt: skip
    d.start()
    return d


def left_by_a_killed_run(ledger, ids: list[str], state: str = "sending", **kw: Any) -> None:
    """Rows as a run killed after claiming (`claimed`) or while calling (`sending`) leaves them."""
    run = "gone:1:run"
    ledger.claim([LedgerEntry(trigger_id=t, **kw) for t in ids], max_attempts=3, run_id=run)
    if state == "sending":
        ledger.mark_sending(ids, run)


def accept_control(ledger, fake, trigger_id: str = "control:1") -> None:
    """A message Mandrill accepted now (after every claim so far), as an earlier run sent it."""
    ledger.claim([LedgerEntry(trigger_id=trigger_id)], max_attempts=3, run_id="past:1:run")
    ledger.settle([LedgerEntry(trigger_id=trigger_id, state="sent", mandrill_id="m-control",
                               claimed_by="past:1:run")])  # fmt: skip
    fake.stored.append(
        {"_id": "m-control", "state": "sent", "metadata": {"trigger_id": trigger_id}}
    )


def states(ledger) -> dict[str, str]:
    return {r["trigger_id"]: r["state"] for r in ledger.all_rows()}


def test_batches_carry_per_recipient_data_and_never_mix_variants(campaigns, ledger):
    fake = FakeMandrill()
    d = make(campaigns, ledger, fake, max_recipients_per_call=40)
    d.dispatch([row(i) for i in range(230)])
    d.close()
    assert sum(len(c["message"]["to"]) for c in fake.calls) == 230
    assert max(len(c["message"]["to"]) for c in fake.calls) == 40
    for call in fake.calls:
        msg = call["message"]
        assert msg["preserve_recipients"] is False
        assert msg["merge_language"] == "handlebars"
        assert msg["tags"] == ["cart_abandonment"]
        variant = msg["metadata"]["variant"]
        assert msg["metadata"]["campaign"] == "cart_abandonment"
        emails = [t["email"] for t in msg["to"]]
        assert [m["rcpt"] for m in msg["merge_vars"]] == emails
        for m in msg["recipient_metadata"]:
            n = m["rcpt"].removeprefix("u").removesuffix("@example.com")
            assert m["values"] == {
                "trigger_id": f"cart_abandonment:{n}",
                "campaign": "cart_abandonment",
                "variant": variant,
                "user_id": f"u{n}",
            }
            assert campaigns["cart_abandonment"].variant_for(f"u{n}", "x").name == variant
        for m in msg["merge_vars"]:
            names = {v["name"]: v["content"] for v in m["vars"]}
            assert isinstance(names["products"], list)
            assert "utm_source=signalmail" in names["products"][0]["url"]
            assert "<table" in names["block_cart_items"]
        assert {c["name"] for c in call["template_content"]} == {"cart_items", "recommendations"}
    assert set(states(ledger).values()) == {"sent"}
    assert fake.sent_ids() == Counter({f"cart_abandonment:{i}": 1 for i in range(230)})


def test_same_address_twice_goes_in_separate_calls(campaigns, ledger):
    fake = FakeMandrill()
    d = make(campaigns, ledger, fake)
    d.dispatch([row(1), row(2, email="u1@example.com", user_id="u1")])
    d.close()
    assert len(fake.calls) == 2
    assert states(ledger) == {"cart_abandonment:1": "sent", "cart_abandonment:2": "sent"}


def test_never_sent_cases_are_recorded_without_a_call(campaigns, ledger):
    fake = FakeMandrill()
    d = make(campaigns, ledger, fake)
    d.dispatch([
        row(1, holdout=True),
        row(2, expires_at=iso(-5)),
        row(3, email="not-an-email"),
        row(4, payload="{broken json"),
        row(5, payload="[1, 2]"),
        row(6, campaign="post_purchase", payload={"products": []}),  # order_id required
        row(7, campaign="no_such_campaign"),
        row(8, send_after=iso(90)),  # not due: deferred, not recorded
        row(9, send_after="yesterday-ish"),
    ])  # fmt: skip
    d.close()
    got = {r["trigger_id"]: r for r in ledger.all_rows()}
    assert fake.calls == []
    assert got["cart_abandonment:1"]["state"] == "held_out"
    assert (got["cart_abandonment:2"]["state"], got["cart_abandonment:2"]["reject_reason"]) == (
        "invalid",
        "expired",
    )
    assert got["cart_abandonment:3"]["reject_reason"] == "invalid-email"
    assert "not JSON" in got["cart_abandonment:4"]["error"]
    assert "not a JSON object" in got["cart_abandonment:5"]["error"]
    assert "order_id" in got["post_purchase:6"]["error"]
    assert got["no_such_campaign:7"]["state"] == "failed"
    assert "no_such_campaign.yml" in got["no_such_campaign:7"]["error"]
    assert "cart_abandonment:8" not in got
    assert got["cart_abandonment:9"]["state"] == "invalid"
    assert d.stats.counts["deferred_not_due"] == 1


def test_duplicates_in_one_run_and_across_runs_are_sent_once(campaigns, ledger):
    fake = FakeMandrill()
    d = make(campaigns, ledger, fake)
    d.dispatch([row(1), row(2), row(1)])
    d.dispatch([row(2), row(3)])  # a later batch of the same run
    d.close()
    again = make(campaigns, ledger, fake)
    again.dispatch([row(1), row(2), row(3), row(4)])
    again.close()
    assert fake.sent_ids() == Counter({f"cart_abandonment:{i}": 1 for i in (1, 2, 3, 4)})
    assert again.stats.counts["skipped_already_sent"] == 3


def test_retryable_errors_back_off_then_succeed(campaigns, ledger):
    fake = FakeMandrill()
    fake.script = [RetryableError("GeneralError"), RetryableError("503", status_code=503)]
    delays: list[float] = []
    d = make(campaigns, ledger, fake, concurrency=1, backoff_base_seconds=1.0,
             backoff_max_seconds=10.0)  # fmt: skip
    d.sleep = delays.append
    d.dispatch([row(1), row(2)])  # two variants: two calls, the first fails twice
    d.close()
    assert len(fake.calls) == 4
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert set(states(ledger).values()) == {"sent"}


def test_retries_exhausted_leave_failed_and_give_the_try_back(campaigns, ledger):
    """An outage is no try of the email: runs every few seconds would spend them all."""
    fake = FakeMandrill()
    for _ in range(3):  # more runs than max_attempts, each giving up
        fake.script = [RetryableError("GeneralError")] * 4
        d = make(campaigns, ledger, fake, max_retries=3, max_attempts=2)
        d.dispatch([row(1)])
        d.close()
        first = ledger.get("cart_abandonment:1")
        assert (first["state"], first["attempts"]) == ("failed", 0)
        assert "gave up after 4 tries" in first["error"]
    d = make(campaigns, ledger, fake, max_retries=3, max_attempts=2)
    d.dispatch([row(1)])  # Mandrill is back
    d.close()
    final = ledger.get("cart_abandonment:1")
    assert (final["state"], final["attempts"]) == ("sent", 1)
    assert fake.sent_ids()["cart_abandonment:1"] == 1


def test_failed_trigger_succeeds_on_a_later_run(campaigns, ledger):
    fake = FakeMandrill()
    fake.script = [PermanentError("PaymentRequired: no balance", "PaymentRequired")]
    d = make(campaigns, ledger, fake)
    d.dispatch([row(1)])
    d.close()
    assert ledger.get("cart_abandonment:1")["state"] == "failed"
    d = make(campaigns, ledger, fake)
    d.dispatch([row(1)])
    d.close()
    final = ledger.get("cart_abandonment:1")
    # an unpaid account is no try of the email (ACCOUNT_ERROR_NAMES): one try, the one sent
    assert (final["state"], final["attempts"], final["error"]) == ("sent", 1, None)


def test_a_size_refusal_counts_as_a_try_and_a_revoked_key_does_not(campaigns, ledger):
    fake = FakeMandrill()
    fake.script = [PermanentError("HTTP 413 with an empty body")]
    d = make(campaigns, ledger, fake)
    d.dispatch([row(1)])
    d.close()
    assert ledger.get("cart_abandonment:1")["attempts"] == 1
    fake.script = [InvalidKeyError("Invalid_Key", "Invalid_Key")]
    d = make(campaigns, ledger, fake, max_recipients_per_call=1, concurrency=1)
    d.dispatch([row(1, ONE), row(2, ONE)])
    with pytest.raises(RunStopped):
        d.flush()
    d.close()
    # the key's call and the call the stop kept from going: neither email was tried
    assert ledger.get(f"{ONE}:1")["attempts"] == 0
    assert ledger.get(f"{ONE}:2")["attempts"] == 0
    assert {ledger.get(f"{ONE}:{n}")["state"] for n in (1, 2)} == {"failed"}


def test_invalid_key_stops_the_run_and_releases_claims(campaigns, ledger):
    fake = FakeMandrill()
    fake.script = [InvalidKeyError("Mandrill rejected the API key (Invalid_Key)", "Invalid_Key")]
    d = make(campaigns, ledger, fake, max_recipients_per_call=5, concurrency=1)
    with pytest.raises(RunStopped, match="Invalid_Key"):
        d.dispatch([row(i) for i in range(12)])
    d.close()
    assert len(fake.calls) == 1
    assert set(states(ledger).values()) == {"failed"}  # nothing left `sending`, nothing sent
    assert len(states(ledger)) == 12
    # the key's call, those in flight and those never submitted: no email was tried, no try
    # is spent (the watch runs the target every few seconds)
    assert {r["attempts"] for r in ledger.all_rows()} == {0}


def test_template_error_fails_that_campaign_only(campaigns, ledger):
    fake = FakeMandrill()
    original = fake.send_template

    def send(body):
        if body["template_name"] == "post-purchase":
            fake.calls.append(body)
            raise TemplateError('No such template "post-purchase"', "Unknown_Template")
        return original(body)

    fake.send_template = send
    d = make(campaigns, ledger, fake, max_recipients_per_call=2, concurrency=1)
    d.dispatch([row(i, "post_purchase") for i in range(6)] + [row(i) for i in range(4)])
    d.close()
    got = states(ledger)
    assert [got[f"post_purchase:{i}"] for i in range(6)] == ["failed"] * 6
    assert [got[f"cart_abandonment:{i}"] for i in range(4)] == ["sent"] * 4
    post_calls = [c for c in fake.calls if c.get("template_name") == "post-purchase"]
    assert len(post_calls) == 1  # later calls of the broken campaign are not attempted
    assert "Unknown_Template" in ledger.get("post_purchase:5")["error"]

    # a template unpublished for an hour spends no try: the watch runs the target every few
    # seconds, and counted tries ran out in three runs, losing every pending email for good
    for _ in range(4):
        d = make(campaigns, ledger, fake, max_recipients_per_call=2, concurrency=1)
        d.dispatch([row(i, "post_purchase") for i in range(6)])
        d.close()
    assert {ledger.get(f"post_purchase:{i}")["attempts"] for i in range(6)} == {0}
    fake.send_template = original  # published again
    d = make(campaigns, ledger, fake, max_recipients_per_call=2, concurrency=1)
    d.dispatch([row(i, "post_purchase") for i in range(6)])
    d.close()
    got = states(ledger)
    assert [got[f"post_purchase:{i}"] for i in range(6)] == ["sent"] * 6


def test_an_unexpected_error_in_one_call_leaves_it_sending_and_the_run_goes_on(campaigns, ledger):
    """Not one of the client's answers (a bug, an answer it could not read): the request may
    have gone out, so that call's triggers wait for reconciliation; the other calls' outcomes
    are recorded and nothing raises out of the run."""
    fake = FakeMandrill()
    fake.script = [ValueError("answer could not be read")]
    d = make(campaigns, ledger, fake, max_recipients_per_call=2, concurrency=1)
    d.dispatch([row(i, ONE) for i in range(6)])
    d.flush()
    got = states(ledger)
    assert [got[f"{ONE}:{i}"] for i in range(6)] == ["sending"] * 2 + ["sent"] * 4
    # the end of the run asks Mandrill, which never got that call (the later sends prove the
    # search covers it): released, and the next run sends each trigger once
    d.close()
    assert [states(ledger)[f"{ONE}:{i}"] for i in range(2)] == ["failed"] * 2
    d = make(campaigns, ledger, fake, max_recipients_per_call=2, concurrency=1)
    d.dispatch([row(i, ONE) for i in range(6)])
    d.close()
    assert fake.sent_ids() == Counter({f"{ONE}:{i}": 1 for i in range(6)})


def test_a_request_that_cannot_be_built_fails_that_call_without_sending(
    campaigns, ledger, monkeypatch
):
    """Nothing went out, so the triggers are `failed` (a later run retries them), not left
    `sending` for a reconciliation that could only find nothing; other campaigns still go."""
    fake = FakeMandrill()
    d = make(campaigns, ledger, fake, max_recipients_per_call=2, concurrency=1)
    build = d.body_for

    def body_for(call):
        if call[0].campaign.name == "post_purchase":
            raise KeyError("region")
        return build(call)

    monkeypatch.setattr(d, "body_for", body_for)
    d.dispatch([row(i, "post_purchase") for i in range(2)] + [row(i) for i in range(2)])
    d.close()
    got = states(ledger)
    assert [got[f"post_purchase:{i}"] for i in range(2)] == ["failed"] * 2
    assert [got[f"cart_abandonment:{i}"] for i in range(2)] == ["sent"] * 2
    assert "request not built" in ledger.get("post_purchase:0")["error"]
    assert all(c.get("template_name") != "post-purchase" for c in fake.calls)


def test_validation_error_isolates_the_bad_recipient(campaigns, ledger):
    fake = FakeMandrill()
    fake.invalid_rcpt = {"u5@example.com"}
    fake.script = [ValidationFailed("ValidationError: bad")] * 10
    d = make(campaigns, ledger, fake, concurrency=1)
    d.dispatch([row(i) for i in range(8)])
    d.close()
    got = states(ledger)
    assert got.pop("cart_abandonment:5") == "invalid"
    assert set(got.values()) == {"sent"}
    assert len(fake.calls) <= 1 + 2 * 3  # bisection, log2(8) levels


def test_rejected_recipient_recorded_with_reason(campaigns, ledger):
    fake = FakeMandrill()
    fake.reject = {"u2@example.com": "unsub"}
    d = make(campaigns, ledger, fake)
    d.dispatch([row(1), row(2)])
    d.close()
    assert (
        ledger.get("cart_abandonment:2")["state"],
        ledger.get("cart_abandonment:2")["reject_reason"],
    ) == ("rejected", "unsub")


def test_ambiguous_failure_is_never_resent_blindly(campaigns, ledger):
    fake = FakeMandrill()
    fake.store_then_fail = True  # Mandrill took the call, the answer was lost
    fake.script = [AmbiguousError("read timeout")]
    d = make(campaigns, ledger, fake)
    d.dispatch([row(1, ONE), row(2, ONE)])
    d.close()  # end-of-run reconciliation finds both
    assert len(fake.calls) == 1
    assert states(ledger) == {"browse_abandonment:1": "sent", "browse_abandonment:2": "sent"}
    assert fake.sent_ids() == Counter({"browse_abandonment:1": 1, "browse_abandonment:2": 1})


def test_ambiguous_failure_not_found_waits_for_evidence_then_goes_once(campaigns, ledger):
    fake = FakeMandrill()
    fake.script = [AmbiguousError("read timeout")]  # and Mandrill never got it
    d = make(campaigns, ledger, fake)
    d.dispatch([row(1, ONE)])
    d.close()
    assert ledger.get("browse_abandonment:1")["state"] == "sending"
    # the next start searches, finds nothing, and has no control: an empty answer proves nothing
    d = make(campaigns, ledger, fake)
    assert ledger.get("browse_abandonment:1")["state"] == "sending"
    assert d.stats.counts["reconcile_waiting"] == 1
    d.dispatch([row(1, ONE), row(2, ONE)])  # 1 is re-delivered and skipped; 2 goes out
    d.close()
    assert fake.sent_ids() == Counter({"browse_abandonment:2": 1})
    # later: the search finds 2 (accepted after 1's request left) but not 1: 1 is not there
    d = make(campaigns, ledger, fake)
    assert ledger.get("browse_abandonment:1")["state"] == "failed"
    assert "browse_abandonment:2" in fake.searches[-1]
    d.dispatch([row(1, ONE)])
    d.close()
    assert fake.sent_ids() == Counter({"browse_abandonment:1": 1, "browse_abandonment:2": 1})
    assert ledger.get("browse_abandonment:1")["attempts"] == 2


def test_claims_a_killed_run_never_sent_are_sendable_at_once(campaigns, ledger):
    fake = FakeMandrill()
    left_by_a_killed_run(ledger, [f"cart_abandonment:{i}" for i in (1, 2)], state="claimed")
    d = make(campaigns, ledger, fake, reconcile_grace_seconds=600)
    assert fake.searches == []  # nothing to ask Mandrill: the requests never left
    assert states(ledger) == {"cart_abandonment:1": "failed", "cart_abandonment:2": "failed"}
    d.dispatch([row(1), row(2)])
    d.close()
    assert fake.sent_ids() == Counter({"cart_abandonment:1": 1, "cart_abandonment:2": 1})


def test_start_reconciles_sending_rows_in_or_batches(campaigns, ledger):
    fake = FakeMandrill()
    left_by_a_killed_run(ledger, [f"t{i}" for i in range(7)], campaign="cart_abandonment")
    fake.stored = [{"_id": f"m{i}", "state": "sent", "metadata": {"trigger_id": f"t{i}"}}
                   for i in (0, 3, 6)]  # fmt: skip
    fake.stored.append({"_id": "q", "state": "queued", "metadata": {"trigger_id": "t1"}})
    accept_control(ledger, fake)
    make(campaigns, ledger, fake, search_batch_size=3)
    assert len(fake.searches) == 3
    assert all(" OR " in q and "u_trigger_id:" in q for q in fake.searches[:2])
    assert all('"control:1"' in q for q in fake.searches)  # the control rides in every batch
    got = {r["trigger_id"]: (r["state"], r["mandrill_id"]) for r in ledger.all_rows()}
    assert got["t0"] == ("sent", "m0")
    assert got["t1"] == ("queued", "q")
    assert got["t2"][0] == "failed"


def test_a_lost_or_lagging_search_answer_never_makes_a_trigger_sendable(campaigns, ledger):
    fake = FakeMandrill()
    left_by_a_killed_run(ledger, ["cart_abandonment:1", "cart_abandonment:2"])
    fake.stored = [{"_id": "m1", "state": "sent", "metadata": {"trigger_id": "cart_abandonment:1"}}]
    accept_control(ledger, fake)
    lost = [True]  # the first answer is lost (or the index is behind): empty
    real_search = fake.search

    def search(query: str, date_from: str | None = None, limit: int = 1000) -> list[dict]:
        if lost.pop() if lost else False:
            fake.searches.append(query)
            return []
        return real_search(query, date_from, limit)

    fake.search = search
    d = make(campaigns, ledger, fake)
    assert states(ledger)["cart_abandonment:2"] == "sending"  # no control seen: no verdict
    assert states(ledger)["cart_abandonment:1"] == "sending"
    d.dispatch([row(1), row(2)])
    d.close()
    assert fake.calls == []
    make(campaigns, ledger, fake).close()  # a later start gets a whole answer
    assert states(ledger)["cart_abandonment:1"] == "sent"
    assert states(ledger)["cart_abandonment:2"] == "failed"


def test_a_control_too_close_to_the_claim_proves_nothing(campaigns, ledger):
    fake = FakeMandrill()
    left_by_a_killed_run(ledger, ["cart_abandonment:1"])
    accept_control(ledger, fake)  # accepted right after the request: it may still be landing
    d = make(campaigns, ledger, fake, reconcile_grace_seconds=600)
    assert states(ledger)["cart_abandonment:1"] == "sending"
    assert d.stats.counts["reconcile_waiting"] == 1


def test_no_evidence_for_a_day_leaves_the_trigger_unconfirmed_and_unsent(campaigns, ledger):
    fake = FakeMandrill()
    left_by_a_killed_run(ledger, ["cart_abandonment:1"])
    d = make(campaigns, ledger, fake, unconfirmed_after_hours=0)
    row1 = ledger.get("cart_abandonment:1")
    assert row1["state"] == "unconfirmed"
    assert "not sent again automatically" in row1["error"]
    d.dispatch([row(1)])
    d.close()
    assert fake.calls == []
    assert d.stats.counts["skipped_already_unconfirmed"] == 1


def test_rows_of_a_run_still_alive_are_left_to_it(campaigns, ledger, monkeypatch):
    from target_mailchimp_transactional.runs import RunLease

    fake = FakeMandrill()
    left_by_a_killed_run(ledger, ["cart_abandonment:1"])
    monkeypatch.setattr(RunLease, "alive", lambda self, run_id: run_id is not None)
    d = make(campaigns, ledger, fake)
    assert d.stats.counts["reconcile_other_run"] == 1
    assert fake.searches == []
    assert states(ledger) == {"cart_abandonment:1": "sending"}


def test_a_run_taken_for_dead_that_posts_its_claim_is_not_settled_as_never_sent(
    campaigns, ledger, monkeypatch
):
    """A lease lost with its session makes a live run look dead: its claim may leave meanwhile."""
    from target_mailchimp_transactional.runs import RunLease

    fake = FakeMandrill()
    owner = "gone:1:run"
    left_by_a_killed_run(ledger, ["cart_abandonment:1"], state="claimed")

    def alive_but_lost(self, run_id):
        # while this run decides, the owner (alive after all) marks its claim and posts it
        assert ledger.mark_sending(["cart_abandonment:1"], owner) == {"cart_abandonment:1"}
        fake.stored.append({"_id": "m-owner", "state": "sent",
                            "metadata": {"trigger_id": "cart_abandonment:1"}})  # fmt: skip
        return False

    monkeypatch.setattr(RunLease, "alive", alive_but_lost)
    d = make(campaigns, ledger, fake)
    assert ledger.get("cart_abandonment:1")["state"] == "sending"
    assert d.stats.counts["reconcile_overtaken"] == 1
    d.dispatch([row(1)])
    d.close()
    assert fake.sent_ids()["cart_abandonment:1"] == 1  # the owner's, not a second one


def test_reconciliation_that_cannot_search_stops_before_sending(campaigns, ledger):
    fake = FakeMandrill()
    left_by_a_killed_run(ledger, ["t1"])

    def broken(*a, **k):
        raise PermanentError("messages/search: PaymentRequired")

    fake.search = broken
    with pytest.raises(RunStopped, match="cannot reconcile 1 trigger"):
        make(campaigns, ledger, fake)
    assert fake.calls == []


def test_dry_run_writes_outbox_and_touches_nothing(campaigns, tmp_path):
    outbox = tmp_path / "outbox"
    d = Dispatcher(Settings(dry_run=True, outbox_dir=outbox, max_recipients_per_call=2),
                   campaigns, BlockRenderer(BLOCKS), None, None)  # fmt: skip
    d.start()
    d.dispatch([row(1), row(2), row(3), row(1), row(4, holdout=True)])
    d.close()
    bodies = sorted(outbox.rglob("call-*.json"))
    assert len(bodies) == 2
    recipients = [json.loads(p.read_text())["body"]["message"]["to"] for p in bodies]
    assert sorted(len(r) for r in recipients) == [1, 2]
    previews = sorted(p.name for p in outbox.rglob("*.html"))
    assert previews == ["cart_abandonment_1.html", "cart_abandonment_2.html",
                        "cart_abandonment_3.html"]  # fmt: skip
    page = next(outbox.rglob("cart_abandonment_1.html")).read_text()
    assert "u1@example.com" in page
    assert "<table" in page
    assert "utm_source=signalmail" in page
    assert "key" not in json.loads(bodies[0].read_text())["body"]


def test_latency_runs_from_due_at_to_the_answer(campaigns, ledger):
    fake = FakeMandrill()
    d = make(campaigns, ledger, fake)
    due = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=30)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    send_after = (due - dt.timedelta(minutes=5)).isoformat()
    d.dispatch([row(1, ONE, due_at=due.isoformat()), row(2, ONE, send_after=send_after)])
    d.close()
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    by_id = {a.trigger_id: a for a in d.stats.accepted}
    assert set(by_id) == {f"{ONE}:1", f"{ONE}:2"}
    first = by_id[f"{ONE}:1"]
    assert first.due_at == due
    assert before <= first.sent_at <= after
    assert 30 <= first.latency_seconds <= 30 + (after - before).total_seconds()
    # a mart without due_at (an older build): due when send_after says
    assert by_id[f"{ONE}:2"].due_at == dt.datetime.fromisoformat(send_after)
    stored = ledger.get(f"{ONE}:1")
    assert (stored["due_at"], stored["sent_at"]) == (first.due_at, first.sent_at)


def test_a_scheduled_trigger_waits_for_send_after_without_a_trace(campaigns, ledger):
    fake = FakeMandrill()
    d = make(campaigns, ledger, fake)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    sooner, later = now + dt.timedelta(minutes=90), now + dt.timedelta(hours=3)
    # a second ahead is still early: the target sends no sooner than send_after by default
    early = now + dt.timedelta(seconds=5)
    d.dispatch([
        row(1, ONE, send_after=later.isoformat()),
        row(2, ONE, send_after=sooner.isoformat()),
        row(3, ONE, send_after=early.isoformat()),
    ])  # fmt: skip
    d.close()
    assert fake.calls == []
    assert ledger.all_rows() == []
    assert d.stats.counts["deferred_not_due"] == 3
    assert d.stats.next_deferred_at == early
    assert f"next deferred send at {early.isoformat()}" in d.stats.summary()


def test_reconciled_sends_take_mandrills_own_time(campaigns, ledger):
    fake = FakeMandrill()
    due = dt.datetime(2026, 3, 10, 11, 0, 0)
    left_by_a_killed_run(ledger, ["t1"], campaign=ONE, user_id="u1", email="u1@x.io", due_at=due)
    fake.stored.append({"_id": "m1", "state": "sent", "ts": 1773140405,  # 2026-03-10 11:00:05
                        "metadata": {"trigger_id": "t1"}})  # fmt: skip
    d = make(campaigns, ledger, fake)
    d.close()
    stored = ledger.get("t1")
    assert (stored["state"], stored["sent_at"]) == ("sent", dt.datetime(2026, 3, 10, 11, 0, 5))
    assert [(a.trigger_id, a.latency_seconds) for a in d.stats.accepted] == [("t1", 5.0)]


def test_a_hostile_row_is_invalid_and_the_rest_of_the_run_goes_out(campaigns, ledger):
    """Each of these stopped every run at this row, and every run after it (the row is read
    again): a block comparing a text quantity, a list that is a number, a payload nested past
    Python's stack, a time past year 1 in UTC. Each is now its own trigger's `invalid`."""
    from decimal import Decimal

    deep = '{"products": ' + "[" * 5000 + "]" * 5000 + "}"
    shoe = {"name": "Shoe", "url": "https://s.example/p"}
    fake = FakeMandrill()
    d = make(campaigns, ledger, fake)
    d.dispatch([
        row(1, payload={"products": [{**shoe, "quantity": "2"}], "cart_total": 5}),
        row(2, payload={"products": 5, "cart_total": 5}),
        row(3, payload=deep),
        row(4, expires_at="0001-01-01T00:30:00+01:00"),
        row(5, email="u5@example.com\n"),
        row(6, email='"x" <u6@example.com>'),
        # an object payload as singer-sdk reads it: Decimals, which json.dumps refused
        row(7, payload={"products": [{**shoe, "price": Decimal("19.5")}],
                        "cart_total": Decimal("29.49"), "currency": "EUR",
                        "first_name": "Bob\nBcc: x@evil.example\u202e" + "A" * 500}),
        row(8),
        # one product name of 300 KB would make the whole call too large for Mandrill
        row(9, payload=json.dumps({"products": [{**shoe, "name": "x" * 300_000}]})),
    ])  # fmt: skip
    d.close()
    got = {r["trigger_id"]: r for r in ledger.all_rows()}
    assert got["cart_abandonment:9"]["state"] == "invalid"
    assert "over the 262,144" in got["cart_abandonment:9"]["error"]
    for n in range(1, 7):
        assert got[f"cart_abandonment:{n}"]["state"] == "invalid", got[f"cart_abandonment:{n}"]
    assert "TypeError" in got["cart_abandonment:1"]["error"]
    assert "nested too deeply" in got["cart_abandonment:3"]["error"]
    assert "bad timestamp" in got["cart_abandonment:4"]["error"]
    assert (got["cart_abandonment:7"]["state"], got["cart_abandonment:8"]["state"]) == (
        "sent",
        "sent",
    )
    merged = {
        m["rcpt"]: {v["name"]: v["content"] for v in m["vars"]}
        for call in fake.calls
        for m in call["message"]["merge_vars"]
    }
    seven = merged["u7@example.com"]
    assert seven["cart_total"] == 29.49
    assert seven["products"][0]["price"] == 19.5
    # the payload's copy of the name is what the merge var reads: cleaned as the To name is
    assert "\n" not in seven["first_name"]
    assert "\u202e" not in seven["first_name"]
    assert len(seven["first_name"]) <= 200
