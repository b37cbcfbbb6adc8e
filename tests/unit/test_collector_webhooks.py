"""Mandrill webhook signature and event conversion."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import urlencode

import pytest
from signalmail.collector import webhooks

KEY = "whk_test_key"
URL = "https://hooks.example.com/webhooks/mandrill"


def mandrill_event(kind: str, **extra) -> dict:
    event = {
        "event": kind,
        "ts": 1767225600,
        "_id": "abc123mandrill",
        "msg": {
            "ts": 1767225500,
            "_id": "abc123mandrill",
            "email": "Jane.Doe@Example.com",
            "subject": "You left something behind",
            "sender": "shop@example.com",
            "tags": ["cart_abandonment"],
            "state": "sent",
            "metadata": {
                "trigger_id": "trg-1",
                "campaign": "cart_abandonment",
                "variant": "b",
                "user_id": "user-7",
            },
        },
    }
    event.update(extra)
    return event


def test_signature_is_hmac_sha1_of_url_and_sorted_params():
    params = {"mandrill_events": "[]", "a_first": "1"}
    expected = base64.b64encode(
        hmac.new(
            KEY.encode(), (URL + "a_first1" + "mandrill_events[]").encode(), hashlib.sha1
        ).digest()
    ).decode()
    assert webhooks.signature(KEY, URL, params) == expected
    assert webhooks.verify(KEY, URL, params, expected)


@pytest.mark.parametrize(
    ("key", "url", "params", "given"),
    [
        ("other-key", URL, {"mandrill_events": "[]"}, None),
        (KEY, URL + "?x=1", {"mandrill_events": "[]"}, None),
        (KEY, URL, {"mandrill_events": "[{}]"}, None),
        (KEY, URL, {"mandrill_events": "[]"}, ""),
    ],
    ids=["wrong-key", "other-url", "tampered-body", "empty-header"],
)
def test_signature_mismatches_fail(key, url, params, given):
    good = webhooks.signature(KEY, URL, {"mandrill_events": "[]"})
    assert not webhooks.verify(key, url, params, good if given is None else given)


def test_parse_form_and_events():
    body = urlencode({"mandrill_events": json.dumps([mandrill_event("open")])}).encode()
    params = webhooks.parse_form(body)
    assert webhooks.parse_events(params)[0]["event"] == "open"
    with pytest.raises(webhooks.WebhookError, match="missing form field"):
        webhooks.parse_events({})
    with pytest.raises(webhooks.WebhookError, match="not valid JSON"):
        webhooks.parse_events({"mandrill_events": "[{"})
    with pytest.raises(webhooks.WebhookError, match="must be a JSON array"):
        webhooks.parse_events({"mandrill_events": "{}"})


@pytest.mark.parametrize(
    ("kind", "name", "extra"),
    [
        ("open", "Email Opened", {}),
        ("click", "Email Link Clicked", {"url": "https://shop.example.com/cart"}),
        ("hard_bounce", "Email Bounced", {"bounce_type": "hard"}),
        ("soft_bounce", "Email Bounced", {"bounce_type": "soft"}),
        ("spam", "Marked as Spam", {}),
        ("unsub", "Unsubscribed", {}),
        ("reject", "Email Rejected", {}),
        ("delivered", "Email Delivered", {}),
    ],
)
def test_each_outcome_becomes_its_track_event_with_metadata(kind, name, extra):
    source = mandrill_event(kind, url="https://shop.example.com/cart")
    events, counts = webhooks.convert([source])
    assert counts == {"converted": 1}
    (event,) = events
    assert event["type"] == "track"
    assert event["event"] == name
    assert event["userId"] == "user-7"
    assert "anonymousId" not in event
    props = event["properties"]
    assert props["trigger_id"] == "trg-1"
    assert props["campaign"] == "cart_abandonment"
    assert props["variant"] == "b"
    assert props["mandrill_id"] == "abc123mandrill"
    assert props["email"] == "Jane.Doe@Example.com"
    assert props["tags"] == ["cart_abandonment"]
    for key, value in extra.items():
        assert props[key] == value
    assert event["originalTimestamp"] == "2026-01-01T00:00:00.000Z"


def test_recipient_without_user_id_gets_stable_anonymous_id():
    source = mandrill_event("open")
    del source["msg"]["metadata"]["user_id"]
    (event,), _ = webhooks.convert([source])
    digest = hashlib.sha1(b"jane.doe@example.com").hexdigest()
    assert event["anonymousId"] == f"mandrill:{digest}"
    assert "userId" not in event


def test_message_id_is_deterministic_across_retries_and_distinct_per_event():
    first, _ = webhooks.convert([mandrill_event("open")])
    retry, _ = webhooks.convert([mandrill_event("open")])
    assert first[0]["messageId"] == retry[0]["messageId"]
    later, _ = webhooks.convert([mandrill_event("open", ts=1767225601)])
    assert later[0]["messageId"] != first[0]["messageId"]
    clicks, _ = webhooks.convert(
        [
            mandrill_event("click", url="https://a.example"),
            mandrill_event("click", url="https://b.example"),
        ]
    )
    assert clicks[0]["messageId"] != clicks[1]["messageId"]


def test_send_deferral_sync_and_malformed_events_are_counted_not_converted():
    events, counts = webhooks.convert(
        [
            mandrill_event("send"),
            mandrill_event("deferral"),
            {"type": "blacklist", "action": "add"},
            {"event": "open", "ts": "yesterday", "_id": "x", "msg": {"email": "a@b.c"}},
            # out of datetime's range: only this event is malformed, the POST still succeeds
            {"event": "open", "ts": 1e20, "_id": "y", "msg": {"email": "a@b.c"}},
            {"event": "open", "ts": float("inf"), "_id": "z", "msg": {"email": "a@b.c"}},
            {"event": "open", "ts": True, "_id": "t", "msg": {"email": "a@b.c"}},
            "not an object",
            mandrill_event("click", url="https://x.example"),
        ]
    )
    assert [e["event"] for e in events] == ["Email Link Clicked"]
    assert counts == {
        "ignored_send": 1,
        "ignored_deferral": 1,
        "ignored_blacklist": 1,
        "malformed": 5,
        "converted": 1,
    }


def test_event_and_sync_types_that_are_lists_or_objects_are_ignored_not_an_error():
    """`event` and `type` may be any JSON: a list or an object looked up in a set raised
    TypeError, failing the whole POST with a 500 that Mandrill would retry forever."""
    events, counts = webhooks.convert(
        [
            mandrill_event(["open"]),
            mandrill_event({"name": "open"}),
            {"type": [0.0]},
            {"type": {"blacklist": True}},
            mandrill_event("open"),
        ]
    )
    assert [e["event"] for e in events] == ["Email Opened"]
    assert counts == {"ignored_unknown": 4, "converted": 1}


def test_a_reject_carries_mandrills_reason_from_its_message_info():
    """Mandrill's message info holds it as reject.reason; dbt suppresses by it."""
    source = mandrill_event("reject")
    source["msg"]["reject"] = {"reason": "unsigned", "last_event_at": "2026-01-01 00:00:00"}
    (event,), _ = webhooks.convert([source])
    assert event["properties"]["reject_reason"] == "unsigned"
