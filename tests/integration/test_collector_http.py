"""The collector over real HTTP: rudder-sdk-python (sync and async) and raw requests.

A real uvicorn server runs the app in a thread on 127.0.0.1; tests wait for its port, then
read what it wrote from the spool itself.
"""

from __future__ import annotations

import gzip
import json
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import requests
from rudderstack.analytics.client import Client
from rudderstack.analytics.request import APIError
from signalmail.collector import spool as spool_module
from signalmail.collector import webhooks
from signalmail.collector.app import CollectorSettings

from tests.helpers.collector import WRITE_KEY, Running, serve
from tests.helpers.servers import wait_until

HOOK_KEY = "mandrill_hook_key"


@pytest.fixture
def collector(tmp_path) -> Iterator[Running]:
    with serve(
        tmp_path, mandrill_webhook_key=HOOK_KEY, max_request_bytes=256 * 1024, queue_capacity=1000
    ) as running:
        yield running


def post(running: Running, path: str, body: bytes | dict, *, key=WRITE_KEY, headers=None):
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    return requests.post(
        f"{running.url}{path}",
        data=data,
        auth=(key, "") if key is not None else None,
        headers=headers or {"Content-Type": "application/json"},
        timeout=10,
    )


# -- the real SDK ------------------------------------------------------------------------------


def test_sdk_sync_mode_every_call_type_lands_enriched(collector):
    client = Client(WRITE_KEY, host=collector.url, sync_mode=True, max_retries=0)
    client.identify(user_id="u1", traits={"email": "a@example.com", "email_opt_in": True})
    client.track(user_id="u1", event="Product Viewed", properties={"product_id": "p1"})
    client.page(anonymous_id="anon-1", name="Home", properties={"url": "https://s.example/"})
    client.screen(user_id="u1", name="Cart")
    client.group(user_id="u1", group_id="g1", traits={"plan": "pro"})
    client.alias(previous_id="anon-1", user_id="u1")
    events = collector.events()
    assert [e["type"] for e in events] == ["identify", "track", "page", "screen", "group", "alias"]
    for event in events:
        assert event["request_ip"] == "127.0.0.1"
        assert event["receivedAt"].endswith("Z")
        # the SDK sends `timestamp` (kept, as rudder-server keeps it) and a batch sentAt, but
        # no originalTimestamp, which rudder-server then sets to receivedAt
        assert event["timestamp"] <= event["sentAt"] <= event["receivedAt"]
        assert event["originalTimestamp"] == event["receivedAt"]
        assert uuid.UUID(event["rudderId"]).version == 4  # rudder-go-kit GetMD5UUID
        assert event["context"]["library"]["name"] == "analytics-python"
    assert events[0]["context"]["traits"]["email_opt_in"] is True
    assert events[1]["properties"] == {"product_id": "p1"}


def test_sdk_async_mode_delivers_every_event_exactly_once(collector):
    failures = []
    client = Client(
        WRITE_KEY,
        host=collector.url,
        sync_mode=False,
        upload_size=50,
        on_error=lambda exc, batch: failures.append(exc),
    )
    sent = []
    for i in range(600):
        ok, msg = client.track(user_id=f"u{i % 7}", event="Product Added", properties={"i": i})
        assert ok
        sent.append(msg["messageId"])
    client.flush()
    client.join()
    assert failures == []
    got = [e["messageId"] for e in collector.events()]
    assert sorted(got) == sorted(sent)
    metrics = collector.metrics()
    assert metrics["accepted_events"] == 600
    assert metrics["spool"]["fsyncs"] <= metrics["accepted_requests"]


def test_sdk_sees_plain_text_errors_as_api_errors(collector):
    client = Client("not-the-key", host=collector.url, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as info:
        client.track(user_id="u", event="x")
    assert info.value.status == 401
    assert info.value.message == "invalid write key"
    assert collector.events() == []


# -- raw HTTP: every error path ----------------------------------------------------------------


def test_missing_and_wrong_write_key_are_401(collector):
    body = {"batch": [{"type": "track", "userId": "u", "event": "e"}]}
    for key in (None, "wrong", ""):
        response = post(collector, "/v1/batch", body, key=key)
        assert (response.status_code, response.text) == (401, "invalid write key")
    assert collector.metrics()["rejected_requests"] == {
        "missing_write_key": 1,
        "invalid_write_key": 2,
    }
    assert collector.events() == []


def test_bad_requests_answer_rudder_server_messages_and_write_nothing(collector):
    cases = [
        (b"{oops", "invalid json"),
        (b'{"batch": []}', "empty batch payload"),
        (
            json.dumps(
                {"batch": [{"type": "track", "userId": "u"}, {"type": "track", "event": "anon"}]}
            ).encode(),
            "request neither has anonymousId nor userId",
        ),
    ]
    for body, message in cases:
        response = post(collector, "/v1/batch", body)
        assert (response.status_code, response.text) == (400, message)
    response = post(collector, "/v1/track", b"{}")
    assert (response.status_code, response.text) == (
        400,
        "request neither has anonymousId nor userId",
    )
    assert collector.events() == []


def test_oversized_raw_body_and_gzip_bomb_are_413(collector):
    big = json.dumps({"batch": [{"type": "track", "userId": "u", "pad": "x" * 300_000}]}).encode()
    response = post(collector, "/v1/batch", big)
    assert response.status_code == 413
    bomb = gzip.compress(b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}", compresslevel=9)
    assert len(bomb) < 256 * 1024
    response = post(
        collector, "/v1/batch", bomb, headers={"Content-Encoding": "gzip", "Content-Type": "x"}
    )
    assert response.status_code == 413
    assert "exceeds max limit" in response.text
    assert collector.metrics()["rejected_requests"]["too_large"] == 2
    # still serving
    assert requests.get(f"{collector.url}/health", timeout=5).json()["status"] == "ok"


def test_gzip_body_accepted_and_bad_gzip_is_400(collector):
    body = {"batch": [{"type": "track", "userId": "u", "event": "zipped", "messageId": "z1"}]}
    ok = post(
        collector,
        "/v1/batch",
        gzip.compress(json.dumps(body).encode()),
        headers={"Content-Encoding": "gzip"},
    )
    assert (ok.status_code, ok.text) == (200, "OK")
    bad = post(collector, "/v1/batch", b"\x1f\x8bnope", headers={"Content-Encoding": "gzip"})
    assert bad.status_code == 400
    assert bad.text.startswith("invalid gzip body")
    assert [e["messageId"] for e in collector.events()] == ["z1"]


def test_queue_full_is_429_while_a_commit_is_stuck(tmp_path, monkeypatch):
    real = spool_module.os.fdatasync
    entered, release = threading.Event(), threading.Event()

    def stuck_fdatasync(fd):
        entered.set()
        assert release.wait(10)
        real(fd)

    monkeypatch.setattr(spool_module.os, "fdatasync", stuck_fdatasync)
    with serve(tmp_path, queue_capacity=5) as running:
        first_result = {}
        batch = {
            "batch": [{"type": "track", "userId": "u", "messageId": f"q{i}"} for i in range(5)]
        }
        sender = threading.Thread(
            target=lambda: first_result.setdefault("r", post(running, "/v1/batch", batch))
        )
        sender.start()
        assert entered.wait(10)
        blocked = post(running, "/v1/track", {"userId": "u", "event": "e"})
        assert blocked.status_code == 429
        assert blocked.headers["Retry-After"] == "1"
        # the first request is still waiting for its fsync: no 200 before durability
        assert sender.is_alive()
        assert "r" not in first_result
        release.set()
        sender.join(10)
        assert first_result["r"].status_code == 200
        assert running.metrics()["rejected_requests"] == {"queue_full": 1}
        assert sorted(e["messageId"] for e in running.events()) == [f"q{i}" for i in range(5)]


def test_sdk_async_backs_off_on_429_and_delivers_after(tmp_path, monkeypatch):
    real = spool_module.os.fdatasync
    entered, release = threading.Event(), threading.Event()

    def stuck_once(fd):
        if not release.is_set():
            entered.set()
            assert release.wait(10)
        real(fd)

    monkeypatch.setattr(spool_module.os, "fdatasync", stuck_once)
    with serve(tmp_path, queue_capacity=1) as running:
        holder = threading.Thread(
            target=post, args=(running, "/v1/track", {"userId": "h", "messageId": "held"})
        )
        holder.start()
        assert entered.wait(10)  # one event in flight: the queue is full
        errors = []
        client = Client(
            WRITE_KEY,
            host=running.url,
            upload_interval=0.01,
            on_error=lambda e, b: errors.append(e),
        )
        client.track(user_id="u", event="Retried", message_id="after-429")
        wait_until(
            lambda: running.metrics()["rejected_requests"].get("queue_full", 0) >= 1,
            what="the SDK's first attempt answered 429",
        )
        release.set()
        client.flush()  # returns once the SDK's backoff retry got 200
        holder.join(10)
        assert errors == []
        assert sorted(e["messageId"] for e in running.events()) == ["after-429", "held"]


def test_failed_fsync_is_503_never_200_and_health_turns_503(tmp_path, monkeypatch):
    """A disk that fails fsync: the request is refused (the SDK retries it), nothing afterwards
    is acknowledged, and /health says why so an orchestrator can replace the instance."""

    def broken_fdatasync(fd):
        raise OSError(5, "Input/output error")

    with serve(tmp_path) as running:
        assert post(running, "/v1/track", {"userId": "u", "messageId": "ok"}).status_code == 200
        monkeypatch.setattr(spool_module.os, "fdatasync", broken_fdatasync)
        for message_id in ("lost-1", "lost-2"):
            response = post(running, "/v1/track", {"userId": "u", "messageId": message_id})
            assert (response.status_code, response.text) == (503, "storage unavailable")
        health = requests.get(f"{running.url}/health", timeout=5)
        assert health.status_code == 503
        assert health.json()["status"] == "failing"
        assert "Input/output error" in health.json()["error"]
        metrics = running.metrics()
        assert metrics["accepted_events"] == 1
        assert metrics["rejected_requests"] == {"storage_error": 2}
        assert metrics["spool"]["healthy"] is False


def test_single_event_endpoints_enrich_from_path_and_headers(collector):
    response = post(
        collector,
        "/v1/track",
        {
            "userId": 12,
            "event": "Order Completed",
            "type": "page",
            "sentAt": "2026-01-01T00:00:10Z",
            "originalTimestamp": "2026-01-01T00:00:00Z",
        },
        headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1", "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    (event,) = collector.events()
    assert event["type"] == "track"
    assert event["userId"] == "12"
    assert event["request_ip"] == "203.0.113.7"
    assert uuid.UUID(event["messageId"])
    assert event["timestamp"] < event["receivedAt"]  # corrected by the 10 s the client held it


def test_merge_endpoint_takes_rudder_servers_identity_merge_call(collector):
    """POST /v1/merge (gateway/handle_http.go webMergeHandler): a `merge` event, as sent."""
    merge = [{"type": "email", "value": "ann@example.com"}, {"type": "user_id", "value": "u-ann"}]
    response = post(collector, "/v1/merge", {"userId": "u-ann", "mergeProperties": merge})
    assert response.status_code == 200
    (event,) = collector.events()
    assert event["type"] == "merge"
    assert event["mergeProperties"] == merge


def test_unknown_path_is_404(collector):
    assert post(collector, "/v1/purchase", {"userId": "u"}).status_code == 404


def test_health_and_prometheus_metrics(collector):
    health = requests.get(f"{collector.url}/health", timeout=5)
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "source_id": "src"}
    post(collector, "/v1/identify", {"userId": "u", "traits": {"email": "x@y.z"}})
    text = requests.get(f"{collector.url}/metrics?format=prometheus", timeout=5).text
    assert "signalmail_collector_accepted_events_total 1" in text
    assert "signalmail_collector_spool_fsyncs" in text


def test_write_key_never_appears_in_metrics_or_logs(collector, caplog):
    post(collector, "/v1/batch", {"batch": []}, key="wrong-secret")
    post(collector, "/v1/track", {"userId": "u"})
    assert WRITE_KEY not in requests.get(f"{collector.url}/metrics", timeout=5).text
    assert "wrong-secret" not in caplog.text
    assert WRITE_KEY not in caplog.text
    assert WRITE_KEY not in repr(CollectorSettings(write_key=WRITE_KEY))


# -- Mandrill webhooks -------------------------------------------------------------------------


def mandrill_form(events: list[dict]) -> dict[str, str]:
    return {"mandrill_events": json.dumps(events)}


def open_event(**extra) -> dict:
    event = {
        "event": "open",
        "ts": 1767225600,
        "_id": "mid-1",
        "msg": {
            "_id": "mid-1",
            "email": "j@example.com",
            "metadata": {"trigger_id": "t-1", "campaign": "cart_abandonment", "user_id": "u9"},
            "tags": ["cart"],
        },
    }
    event.update(extra)
    return event


def send_hook(running: Running, params: dict[str, str], signature: str | None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Mandrill-Signature"] = signature
    return requests.post(
        f"{running.url}/webhooks/mandrill", data=urlencode(params), headers=headers, timeout=10
    )


def test_mandrill_head_probe(collector):
    response = requests.head(f"{collector.url}/webhooks/mandrill", timeout=5)
    assert response.status_code == 200


def test_signed_mandrill_webhook_becomes_track_events(collector):
    params = mandrill_form(
        [open_event(), open_event(event="send"), open_event(event="click", url="https://x.example")]
    )
    url = f"{collector.url}/webhooks/mandrill"
    response = send_hook(collector, params, webhooks.signature(HOOK_KEY, url, params))
    assert (response.status_code, response.text) == (200, "OK")
    # Mandrill retries the same POST: same messageIds, so the warehouse deduplicates
    send_hook(collector, params, webhooks.signature(HOOK_KEY, url, params))
    events = collector.events()
    assert [e["event"] for e in events] == ["Email Opened", "Email Link Clicked"] * 2
    assert events[0]["messageId"] == events[2]["messageId"]
    assert events[0]["userId"] == "u9"
    assert events[0]["properties"]["trigger_id"] == "t-1"
    assert events[0]["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert events[1]["properties"]["url"] == "https://x.example"
    assert collector.metrics()["webhook_events"] == {"converted": 4, "ignored_send": 2}


def test_bad_or_missing_mandrill_signature_is_403(collector):
    params = mandrill_form([open_event()])
    wrong = webhooks.signature("other", f"{collector.url}/webhooks/mandrill", params)
    for signature in (wrong, None):
        response = send_hook(collector, params, signature)
        assert (response.status_code, response.text) == (403, "invalid webhook signature")
    assert collector.events() == []


def test_a_compressed_webhook_is_refused_before_it_is_read(collector):
    """Mandrill posts plain forms. A gzip body is decompressed before anything else could be
    checked: 32 KB of it become 32 MB of form to parse, unsigned, on every request."""
    import gzip

    params = mandrill_form([open_event()])
    url = f"{collector.url}/webhooks/mandrill"
    response = requests.post(
        url,
        data=gzip.compress(urlencode(params).encode()),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Encoding": "gzip",
            "X-Mandrill-Signature": webhooks.signature(HOOK_KEY, url, params),
        },
        timeout=10,
    )
    assert response.status_code == 415
    assert collector.events() == []
    assert (
        send_hook(collector, params, webhooks.signature(HOOK_KEY, url, params)).status_code == 200
    )


def test_signature_uses_configured_public_url_behind_a_proxy(tmp_path):
    public = "https://hooks.example.com/mandrill"
    with serve(tmp_path, mandrill_webhook_key=HOOK_KEY, mandrill_webhook_url=public) as running:
        params = mandrill_form([open_event()])
        local = send_hook(
            running,
            params,
            webhooks.signature(HOOK_KEY, f"{running.url}/webhooks/mandrill", params),
        )
        assert local.status_code == 403
        ok = send_hook(running, params, webhooks.signature(HOOK_KEY, public, params))
        assert ok.status_code == 200
        assert len(running.events()) == 1


def test_webhooks_without_a_key_are_refused_unless_the_operator_says_insecure(tmp_path):
    with serve(tmp_path / "default") as running:
        refused = send_hook(running, mandrill_form([open_event()]), None)
        assert refused.status_code == 403
        assert "--mandrill-webhook-key" in refused.text
        assert running.events() == []


def test_unsigned_webhooks_accepted_when_insecure_but_malformed_is_400(tmp_path):
    with serve(tmp_path, insecure_webhooks=True) as running:
        assert send_hook(running, mandrill_form([open_event()]), None).status_code == 200
        bad = send_hook(running, {"mandrill_events": "[{"}, None)
        assert (bad.status_code, bad.text) == (400, "mandrill_events is not valid JSON")
        assert send_hook(running, {"other": "x"}, None).status_code == 400
        assert len(running.events()) == 1


# -- browsers: CORS, beacon, pixel (rudder-server's gateway) ------------------------------------

ORIGIN = "https://shop.example.com"


def test_preflight_is_answered_as_rudder_server_does(collector):
    answer = requests.options(
        f"{collector.url}/v1/batch",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"},
        timeout=5,
    )  # fmt: skip
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN  # echoed, never *
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert answer.headers["Access-Control-Allow-Methods"] == "POST"
    assert answer.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    assert answer.headers["Access-Control-Max-Age"] == "900"
    refused = requests.options(
        f"{collector.url}/v1/batch",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "DELETE"}, timeout=5,
    )  # fmt: skip
    assert refused.status_code == 204
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_answers_to_a_browser_carry_cors_headers_errors_included(collector):
    ok = post(collector, "/v1/track", {"userId": "u", "event": "x"}, headers={"Origin": ORIGIN})
    bad = post(collector, "/v1/track", {"userId": "u"}, key="wrong", headers={"Origin": ORIGIN})
    for answer in (ok, bad):
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert answer.headers["Access-Control-Allow-Credentials"] == "true"
        assert answer.headers["Vary"] == "Origin"
    assert (ok.status_code, bad.status_code) == (200, 401)
    plain = post(collector, "/v1/track", {"userId": "u", "event": "x"})
    assert "Access-Control-Allow-Origin" not in plain.headers  # no Origin, no CORS
    # the operators' routes are not for browsers: a page on the shop's network reads nothing
    for path in ("/health", "/metrics"):
        answer = requests.get(f"{collector.url}{path}", headers={"Origin": ORIGIN}, timeout=5)
        assert answer.status_code == 200
        assert "Access-Control-Allow-Origin" not in answer.headers, path


def test_a_bad_item_type_does_not_cost_the_batch(collector):
    batch = [{"type": "track", "userId": "u", "event": "good", "messageId": "m-good"},
             {"type": "purchase", "userId": "u", "messageId": "m-odd"},
             {"userId": "u", "messageId": "m-untyped"}]  # fmt: skip
    assert post(collector, "/v1/batch", {"batch": batch}).status_code == 200
    assert [e["messageId"] for e in collector.events()] == ["m-good", "m-odd", "m-untyped"]


def test_beacon_takes_the_write_key_from_the_query(collector):
    body = json.dumps({"batch": [{"type": "page", "anonymousId": "a1", "name": "Home"}]})
    sent = requests.post(
        f"{collector.url}/beacon/v1/batch?writeKey={WRITE_KEY}", data=body,
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN}, timeout=5,
    )  # fmt: skip
    assert sent.status_code == 200
    assert sent.headers["Access-Control-Allow-Origin"] == ORIGIN
    missing = requests.post(f"{collector.url}/beacon/v1/batch", data=body, timeout=5)
    assert (missing.status_code, missing.text) == (401, "failed to read writekey from query params")
    wrong = requests.post(f"{collector.url}/beacon/v1/batch?writeKey=nope", data=body, timeout=5)
    assert wrong.status_code == 401
    assert [e["name"] for e in collector.events()] == ["Home"]


def test_pixel_events_land_and_every_answer_is_a_gif(collector):
    def pixel(kind: str, **params: str) -> requests.Response:
        return requests.get(f"{collector.url}/pixel/v1/{kind}?{urlencode(params)}", timeout=5)

    answers = [
        pixel("page", writeKey=WRITE_KEY, anonymousId='"a7"', **{"properties.path": "/p/1"}),
        pixel("track", writeKey=WRITE_KEY, anonymousId="a7", event="Email Opened"),
        pixel("page", writeKey=WRITE_KEY, anonymousId="a7", name="Cart"),
        pixel("track", writeKey=WRITE_KEY, anonymousId="a7"),  # no event: dropped
        pixel("page", writeKey="wrong", anonymousId="a7"),  # bad key: dropped
    ]
    for answer in answers:
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "image/gif"
        assert answer.content.startswith(b"GIF89a")
        assert len(answer.content) == 43
    events = collector.events()
    assert [(e["type"], e.get("name") or e.get("event")) for e in events] == [
        ("page", "Unknown Page"), ("track", "Email Opened"), ("page", "Cart"),
    ]  # fmt: skip
    assert events[0]["anonymousId"] == "a7"  # quotes stripped, as rudder-server does
    assert events[0]["properties"] == {"path": "/p/1"}  # dotted keys nest
    assert events[0]["channel"] == "web"
    assert events[0]["integrations"] == {"All": True}


def test_a_full_mandrill_webhook_post_is_taken_though_it_is_over_the_api_limit(collector):
    # Mandrill sends up to 1,000 events per POST and disables a webhook that keeps failing;
    # this collector's API limit is 256 KiB, the webhook's its own
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 " * 20
    link = "https://shop.example.com/p/{n}?" + "x" * 1500
    clicks = [
        open_event(event="click", _id=f"mid-{n}", url=link.format(n=n), user_agent=agent,
                   ts=1767225600 + n)
        for n in range(1000)
    ]  # fmt: skip
    params = mandrill_form(clicks)
    assert len(urlencode(params)) > 3_000_000  # the size of a real full POST
    url = f"{collector.url}/webhooks/mandrill"
    response = send_hook(collector, params, webhooks.signature(HOOK_KEY, url, params))
    assert response.status_code == 200, response.text
    assert len(collector.events()) == 1000
    too_big = post(collector, "/v1/batch", b"x" * (300 * 1024))
    assert too_big.status_code == 413  # the HTTP API keeps its limit


def test_segment_browser_protocol_takes_the_write_key_from_the_body(collector):
    # analytics-next posts text/plain to /v1/<first letter of the type>, key in the body
    def segment(path: str, body: dict) -> requests.Response:
        return requests.post(
            f"{collector.url}/v1/{path}", data=json.dumps(body),
            headers={"Content-Type": "text/plain", "Origin": ORIGIN}, timeout=5,
        )  # fmt: skip

    answers = [
        segment("t", {"writeKey": WRITE_KEY, "type": "track", "event": "Product Viewed",
                      "anonymousId": "a1", "messageId": "seg-1"}),
        segment("p", {"writeKey": WRITE_KEY, "name": "Home", "anonymousId": "a1",
                      "messageId": "seg-2"}),
        segment("b", {"writeKey": WRITE_KEY, "batch": [
            {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "seg-3"},
            {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "seg-4"},
        ]}),
    ]  # fmt: skip
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].headers["Access-Control-Allow-Origin"] == ORIGIN
    refused = [
        segment("t", {"type": "track", "event": "x", "anonymousId": "a1"}),  # no key
        segment("t", {"writeKey": "nope", "event": "x", "anonymousId": "a1"}),
        # a key that is no string: refused as such, not a 500 (which SDKs retry)
        segment("t", {"writeKey": [WRITE_KEY], "event": "x", "anonymousId": "a1"}),
        segment("b", {"writeKey": WRITE_KEY, "batch": [
            {"writeKey": {"k": WRITE_KEY}, "type": "track", "event": "x", "anonymousId": "a1"},
        ]}),
    ]  # fmt: skip
    assert [a.status_code for a in refused] == [401, 401, 401, 401]
    assert requests.post(f"{collector.url}/v1/zz", data="{}", timeout=5).status_code == 404
    events = collector.events()
    assert [(e["type"], e["messageId"]) for e in events] == [
        ("track", "seg-1"), ("page", "seg-2"), ("identify", "seg-3"), ("track", "seg-4"),
    ]  # fmt: skip
    assert all("writeKey" not in e for e in events)  # the key is never written to the spool


def test_segment_browser_times_are_corrected_for_the_device_clock(collector):
    """analytics.js sends the device's time of the call as `timestamp`: a laptop two hours
    slow would date a cart add two hours back (an abandonment email while the shopper is still
    shopping). As Segment's API does, it becomes originalTimestamp, and the skew to sentAt is
    taken off the receipt time."""
    from datetime import UTC, datetime, timedelta

    slow = datetime.now(UTC) - timedelta(hours=2)
    body = {"writeKey": WRITE_KEY, "type": "track", "event": "Product Added",
            "anonymousId": "a1", "messageId": "seg-slow",
            "timestamp": (slow - timedelta(seconds=3)).isoformat().replace("+00:00", "Z"),
            "sentAt": slow.isoformat().replace("+00:00", "Z")}  # fmt: skip
    answer = requests.post(
        f"{collector.url}/v1/t", data=json.dumps(body), headers={"Content-Type": "text/plain"},
        timeout=5,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    # batching mode: analytics.js takes each event's sentAt off and sends one for the batch
    event = {k: v for k, v in body.items() if k not in ("writeKey", "sentAt")}
    batch = {"writeKey": WRITE_KEY, "sentAt": body["sentAt"],
             "batch": [{**event, "messageId": "seg-slow-batched"}]}  # fmt: skip
    answer = requests.post(
        f"{collector.url}/v1/b", data=json.dumps(batch), headers={"Content-Type": "text/plain"},
        timeout=5,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    events = collector.events()
    assert len(events) == 2
    for event in events:
        received = datetime.fromisoformat(event["receivedAt"].replace("Z", "+00:00"))
        corrected = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        assert abs((received - corrected) - timedelta(seconds=3)) < timedelta(milliseconds=5)
        assert event["originalTimestamp"].startswith(body["timestamp"][:19])


def test_import_takes_a_bulk_body_but_holds_each_user_to_the_batch_limit(collector):
    # rudder-server splits /v1/import by user and checks each part (gateway/import_handler.go)
    padding = "x" * 1000
    many_users = [
        {"type": "track", "event": "Imported", "userId": f"u{n}", "messageId": f"imp-{n}",
         "properties": {"note": padding}}
        for n in range(400)
    ]  # fmt: skip
    body = {"batch": many_users}
    assert len(json.dumps(body)) > 256 * 1024  # over this collector's batch limit
    assert post(collector, "/v1/batch", body).status_code == 413
    assert post(collector, "/v1/import", body).status_code == 200
    one_user = [dict(e, userId="whale", messageId=f"whale-{n}") for n, e in enumerate(many_users)]
    too_big = post(collector, "/v1/import", {"batch": one_user})
    assert too_big.status_code == 413
    assert "request size exceeds max limit" in too_big.text
    assert post(collector, "/v1/import", body, key="wrong").status_code == 401
    assert len(collector.events()) == 400  # nothing of the refused requests


def test_only_the_signed_webhook_may_send_as_the_webhook(collector):
    """The dbt models take bounces, complaints and unsubscribes from the webhook's events
    alone, and the write key is public: a page's image tag or an SDK call that names the
    webhook's library would stop a stranger's email for good. Refused (400, counted) on every
    client route; the signed webhook's own events land."""
    forged = {
        "type": "track",
        "anonymousId": "x",
        "event": "Marked as Spam",
        "properties": {"email": "victim@example.com"},
        "context": {"library": {"name": "signalmail-mandrill-webhook", "version": "1"}},
    }
    batch = post(collector, "/v1/batch", {"batch": [forged]})
    assert batch.status_code == 400, batch.text
    assert "reserved for /webhooks/mandrill" in batch.text
    track = post(collector, "/v1/track", {**forged, "context": {"library": {
        "name": " Signalmail-Mandrill-Webhook"}}})  # fmt: skip
    assert track.status_code == 400
    query = {"writeKey": WRITE_KEY, "anonymousId": "x", "event": "Unsubscribed",
             "properties.email": "victim@example.com",
             "context.library.name": "signalmail-mandrill-webhook"}  # fmt: skip
    image = requests.get(f"{collector.url}/pixel/v1/track?{urlencode(query)}", timeout=5)
    assert image.status_code == 200  # the pixel answers its GIF whatever happened
    url = f"{collector.url}/webhooks/mandrill"
    params = mandrill_form([open_event(event="spam", _id="mid-spam")])
    signed = send_hook(collector, params, webhooks.signature(HOOK_KEY, url, params))
    assert signed.status_code == 200, signed.text
    events = collector.events()
    assert [e["event"] for e in events] == ["Marked as Spam"]
    assert events[0]["context"]["library"]["name"] == "signalmail-mandrill-webhook"
    assert collector.metrics()["rejected_requests"]["reserved_library"] == 3
