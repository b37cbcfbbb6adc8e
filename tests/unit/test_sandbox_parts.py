"""Offline pieces of the sandbox: search language, faults, signatures, spec corrections, store."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from signalmail.sandbox.faults import FaultInjector, FaultPlan
from signalmail.sandbox.search import QueryError, matches, parse_query
from signalmail.sandbox.store import Store
from signalmail.sandbox.validation import SpecValidator, mandrill_message
from signalmail.sandbox.webhooks import sign, verify_signature

MESSAGE = {
    "id": "abc123",
    "email": "Ann.Lee@Shop.example",
    "subject": "Your cart misses you, Ann",
    "sender": "hello@brand.example",
    "tags": ["cart_abandonment", "variant-a"],
    "template": "cart-abandonment",
    "state": "sent",
    "subaccount": None,
    "metadata": {"trigger_id": "trg-42", "campaign": "cart_abandonment", "user_id": 7},
}


def search(query: str, indexed=("trigger_id", "campaign", "user_id")) -> bool:
    return matches(parse_query(query), MESSAGE, lambda key: key in indexed)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("*", True),
        ("", True),
        ("email:ann.lee@shop.example", True),
        ("email:shop.example", True),
        ("email:bob@shop.example", False),
        ("u_trigger_id:trg-42", True),
        ("u_trigger_id:trg-43", False),
        ('u_trigger_id:"trg-42"', True),
        ("metadata.campaign:cart_abandonment", True),
        ("u_user_id:7", True),
        ("trg-42", True),
        ('"misses you"', True),
        ('subject:"you misses"', False),
        ("subject:cart", True),
        ("subject:car*", True),
        ("tags:variant-a", True),
        ("tag:variant-b", False),
        ("u_trigger_id:trg-4*", True),
        ("u_trigger_id:trg-42 AND tags:variant-b", False),
        ("u_trigger_id:trg-42 OR tags:variant-b", True),
        ("u_trigger_id:trg-43 tags:variant-a", True),  # implicit OR
        ("u_trigger_id:trg-42 NOT state:rejected", True),
        ("u_trigger_id:trg-42 AND -state:sent", False),
        (
            "(email:nobody@x.example OR sender:hello@brand.example) AND template:cart-abandonment",
            True,
        ),
        ("NOT (state:sent)", False),
        ("_id:abc123", True),
    ],
)
def test_search_query_language(query, expected):
    assert search(query) is expected


def test_unindexed_metadata_is_not_searchable():
    assert search("u_trigger_id:trg-42", indexed=()) is False
    assert search("trg-42", indexed=()) is False


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("email:*@shop.example", "leading wildcards"),
        ("bogus:x", "unknown search field"),
        ("(email:a", "missing"),
        ("email:a AND", "ends too early"),
        ("email:a)", "unexpected"),
    ],
)
def test_bad_queries_are_refused(query, message):
    with pytest.raises(QueryError, match=message):
        parse_query(query)


def test_faults_are_reproducible_from_the_seed():
    plan = FaultPlan(errors={"GeneralError": 0.2}, http_429=0.1, http_5xx=0.1, seed=11)
    first = [FaultInjector(plan).draw("messages/send") for _ in range(1)]
    one, two = FaultInjector(plan), FaultInjector(plan)
    seq1 = [one.draw("messages/send") for _ in range(500)]
    seq2 = [two.draw("messages/send") for _ in range(500)]
    assert seq1 == seq2
    assert first[0] == seq1[0]
    kinds = [f.kind if f else None for f in seq1]
    # 500 draws at 20% / 10% / 10%: loose bounds, far from the edges, deterministic anyway
    assert 60 < kinds.count("error") < 140
    assert 25 < kinds.count("429") < 75
    assert 25 < kinds.count("5xx") < 75
    assert all(f.detail == "GeneralError" for f in seq1 if f and f.kind == "error")


def test_fault_plan_only_limits_operations_and_bad_plans_are_refused():
    injector = FaultInjector(FaultPlan(http_5xx=1.0, only=["messages/send-template"]))
    assert injector.draw("users/ping") is None
    assert injector.draw("messages/send-template").kind == "5xx"
    with pytest.raises(ValueError, match="unknown error name"):
        FaultPlan.from_dict({"errors": {"Nope": 0.1}})
    with pytest.raises(ValueError, match="add up to"):
        FaultPlan.from_dict({"errors": {"GeneralError": 0.7}, "http_429": 0.5})
    with pytest.raises(ValueError, match="unknown fault settings"):
        FaultPlan.from_dict({"latency": 5})
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultPlan.from_dict({"timeout": 2})


def test_signature_matches_mandrill_algorithm_and_detects_tampering():
    url = "https://hooks.example/mandrill"
    params = {"mandrill_events": '[{"event":"send"}]'}
    expected = base64.b64encode(
        hmac.new(
            b"secret", (url + "mandrill_events" + params["mandrill_events"]).encode(), hashlib.sha1
        ).digest()
    ).decode()
    assert sign("secret", url, params) == expected
    assert verify_signature("secret", url, params, expected)
    assert not verify_signature("other", url, params, expected)
    assert not verify_signature("secret", url + "x", params, expected)
    assert not verify_signature("secret", url, {"mandrill_events": "[]"}, expected)
    # several fields are concatenated in sorted key order
    assert (
        sign("k", "u", {"b": "2", "a": "1"})
        == base64.b64encode(hmac.new(b"k", b"ua1b2", hashlib.sha1).digest()).decode()
    )


@pytest.fixture(scope="module")
def spec():
    return SpecValidator()


def test_spec_corrections_let_real_requests_through(spec):
    body = {
        "key": "k",
        "template_name": "t",
        "template_content": [{"name": "hero", "content": "<p>x</p>"}],
        "message": {
            "to": [{"email": "a@b.example", "type": "to"}],
            "merge_language": "handlebars",
            "global_merge_vars": [{"name": "products", "content": [{"name": "Hat", "price": 9.5}]}],
            "metadata": {"trigger_id": "t1"},
        },
    }
    assert spec.request_problems("messages/send-template", body) == []
    assert spec.request_problems("templates/info", {"key": "k", "name": "t"}) == []


def test_spec_still_rejects_what_it_should(spec):
    problems = spec.request_problems(
        "messages/send-template",
        {"key": "k", "template_content": [], "message": {"to": "a@b", "merge_language": "jinja"}},
    )
    paths = {p.path for p in problems}
    assert paths == {"", "message.to", "message.merge_language"}
    assert "template_name" in mandrill_message(problems)
    unknown = spec.request_problems("templates/info", {"key": "k", "name": "t", "extra": 1})
    assert unknown
    assert "extra" in unknown[0].message
    assert spec.request_problems("messages/search", {"key": "k", "limit": 5000})


def test_response_validation_catches_wrong_shapes(spec):
    assert spec.response_problems("users/ping", 200, "PONG!") == []
    assert spec.response_problems("users/ping", 200, "PONG")
    assert spec.response_problems("messages/send", 200, [{"email": "a@b.c", "status": "sent"}])
    assert spec.response_problems("messages/send", 299, [])


def test_store_survives_reopen(tmp_path):
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    assert store.add_reject("a@b.example", "custom", "x") is True
    assert store.add_reject("a@b.example", "unsub", "y") is False
    store.close()
    reopened = Store(path)
    assert reopened.find_reject("A@B.example")["reason"] == "unsub"
    assert reopened.delete_reject("a@b.example") is True
    assert reopened.delete_reject("a@b.example") is False
    reopened.close()


def test_scheduled_message_is_sent_once_its_time_has_come(tmp_path):
    from signalmail.sandbox.app import MandrillError, Sandbox, SandboxConfig

    now = [1_800_000_000.0]
    sandbox = Sandbox(
        SandboxConfig(db_path=tmp_path / "db.sqlite3", api_keys=["k"], clock=lambda: now[0])
    )
    try:
        result = sandbox.call(
            "messages/send",
            {
                "key": "k",
                "send_at": "2027-01-16 08:00:00",
                "message": {
                    "html": "<p>x</p>",
                    "from_email": "a@b.example",
                    "to": [{"email": "c@d.example"}],
                },
            },
        )
        assert result[0]["status"] == "scheduled"
        message_id = result[0]["_id"]
        assert sandbox.call("messages/info", {"key": "k", "id": message_id})["state"] == "scheduled"
        now[0] = 1_800_000_000.0 + 86_400 * 3  # 2027-01-18, past send_at
        info = sandbox.call("messages/info", {"key": "k", "id": message_id})
        assert info["state"] == "sent"
        assert info["smtp_events"][0]["ts"] == 1_800_086_400  # sent at its send_at
        with pytest.raises(MandrillError, match="Invalid API key"):
            sandbox.call("users/ping", {"key": "wrong"})
    finally:
        sandbox.close()


def test_webhook_batches_are_dropped_after_max_attempts_with_the_error_recorded(tmp_path):
    import socket

    from signalmail.sandbox.webhooks import WebhookDispatcher

    with socket.socket() as sock:  # a port nothing listens on: connection refused at once
        sock.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    store = Store(tmp_path / "db.sqlite3")
    hook = store.add_webhook(
        {
            "url": dead_url,
            "auth_key": "k",
            "events": ["send"],
            "batches_sent": 0,
            "events_sent": 0,
            "last_error": None,
        }
    )
    store.add_webhook({"url": dead_url, "auth_key": "k", "events": ["open"]})
    dispatcher = WebhookDispatcher(store, max_attempts=3, backoff_s=0.01)
    try:
        assert (
            dispatcher.publish([{"event": "send", "_id": "m1"}, {"event": "click", "_id": "m1"}])
            == 1
        )
        assert dispatcher.wait_idle(10)
        stored = {h["id"]: h for h in store.list_webhooks()}[hook["id"]]
        assert stored["last_error"] == "ConnectionError"
        assert (stored["batches_sent"], stored["events_sent"]) == (0, 0)
    finally:
        dispatcher.close()
        store.close()


def test_vendored_spec_is_mailchimps_published_description():
    """The sandbox ships its own copy of the spec; it must not drift from the reference one."""
    from signalmail.sandbox.validation import DEFAULT_SPEC_PATH

    from tests.helpers import REPO_ROOT

    reference = REPO_ROOT.parent / "shared" / "specs" / DEFAULT_SPEC_PATH.name
    if not reference.exists():
        pytest.skip("no ../shared/specs beside this checkout")
    assert DEFAULT_SPEC_PATH.read_bytes() == reference.read_bytes()


def test_a_recipients_merge_var_replaces_a_global_one_whatever_its_case():
    from signalmail.sandbox import handlebars
    from signalmail.sandbox.endpoints.send_recipients import resolve_recipients

    (ann,) = resolve_recipients({
        "to": [{"email": "Ann@Example.com"}],
        "global_merge_vars": [{"name": "FNAME", "content": "Customer"}],
        "merge_vars": [{"rcpt": "ann@example.com", "vars": [{"name": "fname", "content": "Ann"}]}],
    })  # fmt: skip
    assert ann.merge_vars == {"fname": "Ann"}
    assert handlebars.render("Hi {{FNAME}}", ann.merge_vars, handlebars.RenderOptions()) == "Hi Ann"
