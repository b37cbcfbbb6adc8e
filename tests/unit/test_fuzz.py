"""Hypothesis against every parser of outside input: each answers or refuses, none crashes.

- the collector's HTTP API (the real app under uvicorn on 127.0.0.1, a real spool): every route
  that reads a client's body or query (`CLIENT_ROUTES`, checked against the app's routes) gets a
  2xx or a 4xx/429 for any body, encoding and credentials, never a 5xx; each request is counted
  once in /metrics (accepted, or rejected under one reason); a body that is not a JSON object
  is `400 invalid json`; the writer stays healthy;
- the Mandrill webhook, with requests signed as Mandrill signs them, so fuzzed
  `mandrill_events` reach the events parser;
- tap-rudderstack's line parser: any bytes become an event or a named rejection reason;
- the replay importers (REES46, Retailrocket): any row becomes events or a RowError;
- the campaign loader: any YAML loads or raises CampaignConfigError naming the file;
- the template linter: any template text gives findings, never an exception.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes, urlencode

import msgspec
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from signalmail.collector import ingest
from signalmail.collector.app import SEGMENT_PATHS, CollectorSettings, create_app
from signalmail.replay.rees46 import Rees46Converter
from signalmail.replay.retailrocket import RetailrocketConverter
from signalmail.replay.source import RowError
from tap_rudderstack.records import EventBuilder
from tap_rudderstack.spool import parse_event
from target_mailchimp_transactional.campaigns import (
    CampaignConfigError,
    load_campaign,
    load_campaigns,
)

from tests.helpers.collector import WRITE_KEY, Running, serve

REPO = Path(__file__).resolve().parents[2]
#: the collector fixture is shared by every example on purpose: one writer takes them all
FIXTURES = [HealthCheck.function_scoped_fixture]
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
WEBHOOK_KEY = "hook"

#: every route that reads a client's body, by where it takes the write key from
HEADER_KEY_PATHS = [f"/v1/{kind}" for kind in ("batch", *sorted(ingest.EVENT_TYPES), "import")]
BODY_KEY_PATHS = [f"/v1/{letter}" for letter in SEGMENT_PATHS]  # Segment's analytics.js
QUERY_KEY_PATHS = ["/beacon/v1/batch"]
BODY_PATHS = HEADER_KEY_PATHS + BODY_KEY_PATHS + QUERY_KEY_PATHS
PIXEL_ROUTE = "/pixel/v1/{kind:str}"
WEBHOOK_PATH = "/webhooks/mandrill"
CLIENT_ROUTES = {*BODY_PATHS, PIXEL_ROUTE, WEBHOOK_PATH}
#: the operator's read-only routes: no body, and no query beyond /metrics' `format` switch
OPERATOR_ROUTES = {"/health", "/metrics"}


def json_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    """Any JSON-able value, with floats from `floats`."""
    return st.recursive(
        st.none() | st.booleans() | st.integers() | floats | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )


#: infinities included: json.dumps writes them as `Infinity`, which no JSON parser takes
JSON = json_values(st.floats(allow_nan=False))
#: values every JSON parser takes, for a form whose outcome is checked exactly
FINITE_JSON = json_values(st.floats(allow_nan=False, allow_infinity=False))
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "identify", "page", "alias", "bogus"]) | JSON},
    optional={"anonymousId": JSON, "userId": JSON, "messageId": JSON, "event": JSON,
              "properties": JSON, "context": JSON, "timestamp": JSON, "sentAt": JSON},
)  # fmt: skip
#: events with an identity, so that well-formed bodies are accepted often enough to matter
IDENTIFIED = st.builds(lambda e, anon: {**e, "anonymousId": anon}, EVENTS, st.text(min_size=1))
#: byte sequences that are not UTF-8: Latin-1, a lone continuation byte, an overlong "/", an
#: encoded surrogate, a sequence cut short
NOT_UTF8 = [b"caf\xe9", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"]


def spliced(body: bytes, bad: bytes) -> bytes:
    """`body` (ASCII JSON) with `bad` inside its first string: well-formed but for the bytes."""
    return body.replace(b'"', b'"' + bad, 1)


BODIES = st.one_of(
    st.binary(max_size=400),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.lists(EVENTS, max_size=5).map(lambda b: json.dumps({"batch": b}).encode()),
    EVENTS.map(lambda e: json.dumps(e).encode()),
    # one event that is also a batch: accepted by every route when well-formed
    st.builds(lambda e, b: json.dumps({**e, "batch": b}).encode(), IDENTIFIED,
              st.lists(IDENTIFIED, min_size=1, max_size=3)),
    st.builds(spliced, IDENTIFIED.map(lambda e: json.dumps(e).encode()), st.sampled_from(NOT_UTF8)),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.just(b'{"batch":[{"type":"track","anonymousId":"\xff\xfe"}]}'),
)  # fmt: skip


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with (
        serve(tmp_path_factory.mktemp("spool"), mandrill_webhook_key=WEBHOOK_KEY) as running,
        requests.Session() as session,
    ):
        yield running, session


def read_counters(running: Running, session: requests.Session) -> Counter[str]:
    """/metrics as one Counter: `accepted` requests, `accepted_events`, `rejected:<reason>`
    and `webhook:<outcome>`."""
    snap = session.get(f"{running.url}/metrics", timeout=30).json()
    counters = Counter(
        {"accepted": snap["accepted_requests"], "accepted_events": snap["accepted_events"]}
    )
    counters.update({f"rejected:{k}": v for k, v in snap["rejected_requests"].items()})
    counters.update({f"webhook:{k}": v for k, v in snap["webhook_events"].items()})
    return counters


@dataclass
class Fuzzed:
    """The module's collector, with /metrics as last read: each example reads it once."""

    running: Running
    session: requests.Session
    seen: Counter[str]

    @property
    def url(self) -> str:
        return self.running.url

    def moved(self) -> Counter[str]:
        """How /metrics moved since the last call (counters that did not move left out)."""
        now = read_counters(self.running, self.session)
        delta = now.copy()
        delta.subtract(self.seen)
        self.seen = now
        return +delta

    def counted_once(self) -> tuple[str, Counter[str]]:
        """Check the last request was counted exactly once; returns (its counter, the delta)."""
        delta = self.moved()
        counted = request_counters(delta)
        assert list(counted.values()) == [1], delta
        return next(iter(counted)), delta


def request_counters(delta: Counter[str]) -> dict[str, int]:
    """The per-request counters of a /metrics delta: `accepted` and `rejected:<reason>`."""
    return {k: v for k, v in delta.items() if k == "accepted" or k.startswith("rejected:")}


@pytest.fixture
def fuzzed(collector) -> Fuzzed:
    """Per test (not per example): /metrics as the test starts."""
    running, session = collector
    return Fuzzed(running, session, read_counters(running, session))


def not_a_json_object(body: bytes) -> bool:
    """True when `body` is certainly not a JSON object, by Python's own parser (not the
    collector's): not UTF-8, not JSON, or JSON of another type. False when it is one, and
    when Python cannot tell (nested past its recursion limit)."""
    try:
        return not isinstance(json.loads(body.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError):
        return True
    except RecursionError:
        return False


def with_body_key(body: bytes) -> bytes:
    """Put the write key in a JSON object body, as analytics.js does; other bodies unchanged."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return body
    if not isinstance(payload, dict):
        return body
    return json.dumps({**payload, "writeKey": WRITE_KEY}).encode()


def post_body(
    fuzzed: Fuzzed, path: str, body: bytes, *, authorised: bool = True, gzipped: bool = False
) -> tuple[requests.Response, bytes]:
    """POST `body` to `path`, with the write key where that route takes it when `authorised`.

    Returns the answer and the body as sent (before gzip): the write key may have been added.
    """
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if authorised and path in BODY_KEY_PATHS:
        body = with_body_key(body)
    elif authorised and path in QUERY_KEY_PATHS:
        params["writeKey"] = WRITE_KEY
    elif authorised:
        headers.update(AUTH)
    data = body
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        data = gzip.compress(body)
    answer = fuzzed.session.post(
        f"{fuzzed.url}{path}", data=data, params=params, headers=headers, timeout=30
    )
    return answer, body


def test_the_fuzz_covers_every_route_that_reads_a_client(collector):
    running, _ = collector
    app = create_app(CollectorSettings(write_key=WRITE_KEY), running.writer)
    assert {route.path for route in app.routes} == CLIENT_ROUTES | OPERATOR_ROUTES


@settings(max_examples=120, deadline=None, suppress_health_check=FIXTURES)
@given(
    body=BODIES,
    path=st.sampled_from(BODY_PATHS),
    gzipped=st.booleans(),
    authorised=st.booleans(),
)
def test_the_http_api_answers_every_body_with_a_2xx_or_4xx_and_counts_it(
    fuzzed, body, path, gzipped, authorised
):
    answer, sent = post_body(fuzzed, path, body, authorised=authorised, gzipped=gzipped)
    assert answer.status_code < 500, (answer.status_code, answer.text)
    counter, _ = fuzzed.counted_once()
    assert (counter == "accepted") == (answer.status_code == 200), (counter, answer.status_code)
    # a Segment path reads the body before the key (the key is in it): no key needed for a 400
    if not_a_json_object(sent) and (authorised or path in BODY_KEY_PATHS):
        assert (answer.status_code, answer.text) == (400, "invalid json")
        assert counter == "rejected:invalid_json"
    assert fuzzed.running.writer.healthy


#: one body every SDK route accepts: an identified event that is also a batch of one, with the
#: key for Segment's paths; `@` stands for a value of `properties`, in the event and the batch
SDK_BODY = (
    b'{"writeKey":"' + WRITE_KEY.encode() + b'","anonymousId":"a","type":"track","event":"e",'
    b'"properties":@,"batch":[{"anonymousId":"a","type":"track","event":"e","properties":@}]}'
)
DEPTH = 100_000
MALFORMED_PROPERTIES = {
    "arrays nested 100,000 deep": b"[" * DEPTH + b"]" * DEPTH,
    "objects nested 100,000 deep": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    **{f"not UTF-8 {bad!r}": b'"' + bad + b'"' for bad in NOT_UTF8},
}


@pytest.mark.parametrize("path", BODY_PATHS)
def test_deep_json_and_invalid_utf8_are_400_and_counted_on_every_body_route(fuzzed, path):
    control, _ = post_body(fuzzed, path, SDK_BODY.replace(b"@", b'{"n":[[1]],"s":"caf\xc3\xa9"}'))
    assert (control.status_code, control.text) == (200, "OK")  # the same body, well-formed
    for name, properties in MALFORMED_PROPERTIES.items():
        answer, _ = post_body(fuzzed, path, SDK_BODY.replace(b"@", properties))
        assert (answer.status_code, answer.text) == (400, "invalid json"), name
    assert fuzzed.moved() == Counter(
        {"accepted": 1, "accepted_events": 1, "rejected:invalid_json": len(MALFORMED_PROPERTIES)}
    )
    assert fuzzed.running.writer.healthy


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t"])
def test_json_nested_just_under_the_decoders_limit_is_accepted_or_400_never_500(fuzzed, path):
    """The decoder's depth limit and the encoder's both depend on how deep in the stack each
    runs: a body just under the first passed it, then failed encoding with a 500. Bisect for
    the shallowest depth refused, then try the depths just under it."""

    def status(depth: int) -> int:
        answer, _ = post_body(fuzzed, path, SDK_BODY.replace(b"@", b"[" * depth + b"]" * depth))
        assert answer.status_code in (200, 400), (depth, answer.status_code, answer.text)
        return answer.status_code

    accepted, refused = 1, 4_000
    assert (status(accepted), status(refused)) == (200, 400)
    while refused - accepted > 1:
        middle = (accepted + refused) // 2
        if status(middle) == 400:
            refused = middle
        else:
            accepted = middle
    for depth in range(refused - 4, refused):
        assert status(depth) == 200, depth
    assert fuzzed.running.writer.healthy


# -- the pixel: any query is a GIF, and counted ---------------------------------------------------

QUERY_KEYS = st.sampled_from(
    ["writeKey", "anonymousId", "userId", "event", "name", "properties.path", "a.b.c", "", "."]
) | st.text(max_size=12)  # fmt: skip
QUERY_VALUES = st.sampled_from([WRITE_KEY, "", "x", '"q"']) | st.text(max_size=20)
QUERIES = st.one_of(
    st.lists(st.tuples(QUERY_KEYS, QUERY_VALUES), max_size=8).map(urlencode),
    # raw bytes, invalid UTF-8 included, as percent escapes (a request line is ASCII)
    st.binary(max_size=200).map(lambda raw: quote_from_bytes(raw, safe="&=.")),
)


def get_pixel(fuzzed: Fuzzed, kind: str, query: str) -> requests.Response:
    return fuzzed.session.get(f"{fuzzed.url}/pixel/v1/{kind}?{query}", timeout=30)


def assert_gif(answer: requests.Response) -> None:
    assert answer.status_code == 200, (answer.status_code, answer.text)
    assert answer.headers["Content-Type"] == "image/gif"
    assert answer.content == ingest.PIXEL_GIF


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURES)
@given(kind=st.sampled_from(["track", "page", "bogus"]), query=QUERIES)
def test_the_pixel_answers_every_query_with_its_gif_and_counts_it(fuzzed, kind, query):
    assert_gif(get_pixel(fuzzed, kind, query))
    fuzzed.counted_once()
    assert fuzzed.running.writer.healthy


def test_the_pixel_counts_invalid_utf8_and_keys_nested_past_the_encoder(fuzzed):
    """An image tag shows nothing but the GIF, so the pixel never answers 400: malformed
    queries are told apart in /metrics. Invalid UTF-8 becomes U+FFFD, as in any query."""
    written = fuzzed.running.writer.stats.events_written
    assert_gif(get_pixel(fuzzed, "page", f"writeKey={WRITE_KEY}&anonymousId=%ff%c0%af&%ed%a0=%80"))
    assert fuzzed.counted_once()[0] == "accepted"
    deep = ".".join(["a"] * 5_000)  # 10 KB: within a request line, past the encoder's depth
    assert_gif(get_pixel(fuzzed, "page", f"writeKey={WRITE_KEY}&anonymousId=x&{deep}=1"))
    assert fuzzed.counted_once()[0] == "rejected:invalid_json"
    assert fuzzed.running.writer.stats.events_written == written + 1
    assert fuzzed.running.writer.healthy


# -- Mandrill webhooks --------------------------------------------------------------------------


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    form=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        JSON.map(lambda v: b"mandrill_events=" + json.dumps(v).encode()),
    )
)
def test_the_webhook_endpoint_answers_every_body_with_a_4xx_or_2xx(collector, form):
    running, session = collector
    answer = session.post(
        f"{running.url}/webhooks/mandrill", data=form, timeout=30,
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Mandrill-Signature": "forged"},
    )  # fmt: skip
    assert answer.status_code in (400, 403, 413), (answer.status_code, answer.text)
    assert running.writer.healthy


def mandrill_signature(key: str, url: str, params: dict[str, str]) -> str:
    """X-Mandrill-Signature as Mandrill documents it (not the collector's code): base64 of the
    HMAC-SHA1, under the webhook key, of the URL then each POST field's name and value in
    sorted order."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def post_signed(fuzzed: Fuzzed, params: dict[str, str]) -> requests.Response:
    url = f"{fuzzed.url}{WEBHOOK_PATH}"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Mandrill-Signature": mandrill_signature(WEBHOOK_KEY, url, params),
    }
    return fuzzed.session.post(url, data=urlencode(params), headers=headers, timeout=30)


#: the event types the collector documents converting (docs/collector.md, Mandrill webhooks)
CONVERTED = ["open", "click", "hard_bounce", "soft_bounce", "spam", "unsub", "reject", "delivered"]
#: a message as Mandrill nests it in an event: the recipient's address, our metadata
MANDRILL_MSG = st.fixed_dictionaries(
    {"email": st.text(min_size=1, max_size=20)},
    optional={
        "metadata": st.dictionaries(
            st.sampled_from(["user_id", "campaign", "variant", "trigger_id"]), FINITE_JSON
        ),
        **{key: FINITE_JSON for key in ("subject", "tags", "bounce_description")},
    },
)
#: an event the collector must convert: a known type, an _id, a numeric ts, msg.email
CONVERTIBLE = st.fixed_dictionaries(
    {
        "event": st.sampled_from(CONVERTED),
        "_id": st.text(min_size=1, max_size=12),
        "ts": st.integers(0, 2**33) | st.floats(0, 2e9),
        "msg": MANDRILL_MSG,
    },
    optional={key: FINITE_JSON for key in ("url", "ip", "user_agent", "location")},
)
#: anything else an array may hold: other or missing types, bad ids and times, sync events
OTHER_ITEMS = st.one_of(
    FINITE_JSON,
    st.fixed_dictionaries(
        {"event": st.sampled_from([*CONVERTED, "send", "deferral", "bogus"]) | FINITE_JSON},
        optional={"_id": FINITE_JSON, "ts": FINITE_JSON, "msg": FINITE_JSON, "email": FINITE_JSON},
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["blacklist", "whitelist"]) | FINITE_JSON}),
)
ITEMS = st.one_of(
    CONVERTIBLE.map(lambda item: (item, True)), OTHER_ITEMS.map(lambda item: (item, False))
)
#: (`mandrill_events`, or None for a form without it; the items when it is a FINITE_JSON array)
MANDRILL_EVENTS = st.one_of(
    st.lists(ITEMS, max_size=6).map(lambda items: (json.dumps([i for i, _ in items]), items)),
    st.text(max_size=60).map(lambda text: (text, None)),
    FINITE_JSON.filter(lambda v: not isinstance(v, list)).map(lambda v: (json.dumps(v), None)),
    st.just((None, None)),
)


@settings(max_examples=50, deadline=None, suppress_health_check=FIXTURES)
@given(events=MANDRILL_EVENTS, extra=st.dictionaries(st.text(max_size=8), st.text(max_size=20)))
def test_signed_webhooks_reach_the_events_parser_and_answer_200_or_400(fuzzed, events, extra):
    text, items = events
    params = {k: v for k, v in extra.items() if k != "mandrill_events"}
    if text is not None:
        params["mandrill_events"] = text
    answer = post_signed(fuzzed, params)
    assert answer.status_code in (200, 400), (answer.status_code, answer.text)  # never 403
    moved = fuzzed.moved()
    outcomes = {k: v for k, v in moved.items() if k.startswith("webhook:")}
    if items is not None:  # a JSON array: every item is counted, the convertible converted
        assert answer.status_code == 200, answer.text
        assert sum(outcomes.values()) == len(items)
        converted = moved["webhook:converted"]
        assert converted >= sum(valid for _, valid in items)
        assert moved["accepted_events"] == converted
        # a POST with nothing to write is answered 200 and shows only in its items' outcomes
        assert request_counters(moved) == ({"accepted": 1} if converted else {})
    elif text is None:
        assert answer.status_code == 400
        assert request_counters(moved) == {"rejected:missing_events": 1}
    elif not_a_json_array(text):
        assert answer.status_code == 400, answer.text
        assert moved == Counter({"rejected:invalid_events": 1})
    assert fuzzed.running.writer.healthy


def not_a_json_array(text: str) -> bool:
    """True when Python's parser says `text` is certainly not a JSON array."""
    try:
        return not isinstance(json.loads(text), list)
    except ValueError:
        return True
    except RecursionError:
        return False


#: a webhook event the collector converts
CONTROL_OPEN: dict[str, Any] = {
    "event": "open", "ts": 1767225600, "_id": "mid-1",
    "msg": {"_id": "mid-1", "email": "j@example.com", "metadata": {"user_id": "u9"}},
}  # fmt: skip


def test_webhooks_answer_400_to_invalid_utf8_and_deep_json_and_count_it(fuzzed):
    control = post_signed(fuzzed, {"mandrill_events": json.dumps([CONTROL_OPEN])})
    assert (control.status_code, control.text) == (200, "OK")
    not_utf8 = fuzzed.session.post(
        f"{fuzzed.url}{WEBHOOK_PATH}", data=b"mandrill_events=%5B%5D&note=caf\xe9", timeout=30,
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Mandrill-Signature": "cannot be computed over bytes that are not text"},
    )  # fmt: skip
    assert (not_utf8.status_code, not_utf8.text) == (400, "invalid form body: not UTF-8")
    for deep in ("[" * DEPTH + "]" * DEPTH, "[" + '{"a":' * DEPTH + "1" + "}" * DEPTH + "]"):
        answer = post_signed(fuzzed, {"mandrill_events": deep})
        assert (answer.status_code, answer.text) == (400, "mandrill_events is not valid JSON")
    assert fuzzed.moved() == Counter(
        {"accepted": 1, "accepted_events": 1, "webhook:converted": 1,
         "rejected:invalid_form": 1, "rejected:invalid_events": 2}
    )  # fmt: skip
    assert fuzzed.running.writer.healthy


#: number literals json.dumps never writes: beyond a float's range (the line is refused) and
#: just inside it (taken), each put where a sentinel string was
NUMBER_LITERALS = ["1e999", "-1E+400", "1" * 400 + ".5", "9" * 120 + "e199", "1e308",
                   "2.5e-400", "1" * 400, "0.5e-9"]  # fmt: skip
LINE_EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]) | JSON,
     "messageId": st.text(min_size=1, max_size=8) | JSON},
    optional={"anonymousId": JSON, "userId": st.text(max_size=8) | JSON, "event": JSON,
              "name": JSON, "category": JSON, "groupId": JSON, "previousId": JSON,
              "properties": JSON, "context": JSON | st.fixed_dictionaries(
                  {}, optional={"ip": JSON, "library": JSON, "page": JSON, "userAgent": JSON,
                                "traits": JSON}),
              "traits": JSON, "timestamp": JSON, "receivedAt": st.just("2026-12-07T08:00:00Z"),
              "rudderId": JSON},
)  # fmt: skip
LINES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda e, ascii_only: json.dumps(e, ensure_ascii=ascii_only).encode(),
              LINE_EVENTS, st.booleans()),
    st.builds(spliced, LINE_EVENTS.map(lambda e: json.dumps(e).encode()),
              st.sampled_from(NOT_UTF8)),
    st.builds(lambda e, bad: json.dumps(e).encode().replace(b"#s", bad),
              LINE_EVENTS.map(lambda e: {**e, "context": {"traits": {"k": "#s"}}}),
              st.sampled_from(NOT_UTF8)),
    st.builds(lambda e, n: json.dumps(e).replace('"#n"', n).encode(),
              LINE_EVENTS.map(lambda e: {**e, "properties": {"a": [1, "#n"]}}),
              st.sampled_from(NUMBER_LITERALS)),
    st.builds(lambda e, n: json.dumps(e).replace('"#n"', n).encode(),
              LINE_EVENTS.map(lambda e: {**e, "integrations": {"x": "#n"}}),
              st.sampled_from(NUMBER_LITERALS)),
)  # fmt: skip


def _reference_object(value: Any) -> Any:
    return value if value is None or isinstance(value, dict) else {"_value": value}


def _holds_text(column: str | None, value: Any) -> bool:
    """docs/ingest.md's rule for a text column: a string as sent, nothing as null, any other
    value as JSON text that reads back as that value, types and all (`true` is not `1`),
    whatever encoder wrote it (`1e16` and `1e+16` are one number)."""
    if value is None or isinstance(value, str):
        return column == value
    return column is not None and json.dumps(json.loads(column)) == json.dumps(value)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(LINES)
@example(  # values of every kind in text columns, which random events seldom reach
    b'{"type":"track","messageId":7,"userId":true,"event":null,'
    b'"context":{"ip":false,"userAgent":[1,{"a":null}],"library":{"name":1e16}}}'
)
def test_the_taps_line_parser_gives_a_reason_or_a_record_of_the_events_values(line):
    """Any line: a rejection with its reason (never an exception, whatever the bytes or the
    numbers), or a record whose columns hold the event's values, objects kept and anything
    else wrapped or written as text, against a reference written here from docs/ingest.md."""
    parsed = parse_event(line)
    try:
        reference = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        assert parsed == "invalid_json"
        return
    if not isinstance(reference, dict):
        assert parsed == "not_an_object"
        return
    if isinstance(parsed, str):
        assert parsed in {"missing_type", "unknown_type", "missing_message_id", "missing_ids"}
        return
    stream, event = parsed
    record = msgspec.json.decode(msgspec.json.encode(EventBuilder().build(stream, event, "key", 1)))
    context = reference.get("context")
    ctx = context if isinstance(context, dict) else {}
    library = ctx.get("library") if isinstance(ctx.get("library"), dict) else {}
    page = ctx.get("page") if isinstance(ctx.get("page"), dict) else {}
    assert record["context"] == _reference_object(context)
    assert _holds_text(record["context_ip"], ctx.get("ip"))
    assert _holds_text(record["context_user_agent"], ctx.get("userAgent"))
    assert _holds_text(record["context_library_name"], library.get("name"))
    assert _holds_text(record["context_page_url"], page.get("url"))
    assert _holds_text(record["message_id"], reference["messageId"])
    user_id = reference.get("userId")
    assert _holds_text(record["user_id"], None if user_id == "" else user_id)
    if stream in ("tracks", "pages", "screens"):
        assert record["properties"] == _reference_object(reference.get("properties"))
    if stream in ("identifies", "groups"):
        assert record["traits"] == _reference_object(reference.get("traits"))
    if stream in ("pages", "screens"):
        props = reference.get("properties")
        props = props if isinstance(props, dict) else {}
        assert _holds_text(record["name"], reference.get("name") or props.get("name"))


CELLS = st.one_of(st.text(max_size=30), st.from_regex(r"\A[0-9]{1,12}\Z"),
                  st.sampled_from(["", "view", "cart", "purchase", "2019-10-01 00:00:00 UTC",
                                   "1433221332117", "nan", "inf", "-1", "1e999"]))  # fmt: skip


@settings(max_examples=400)
@given(st.lists(CELLS, min_size=0, max_size=11))
def test_replay_converters_give_events_or_a_row_error(row):
    for converter in (Rees46Converter(), RetailrocketConverter()):
        try:
            events = converter.convert(1, row)
        except RowError:
            continue
        assert all(isinstance(e, dict) and e.get("type") for e in events)


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=15),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=15,
)
CAMPAIGN_KEYS = ["name", "merge_vars", "variants", "holdout", "required", "template",
                 "from_email", "subject", "tags", "blocks", "split", "weight"]  # fmt: skip


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(CAMPAIGN_KEYS), YAML_VALUES, max_size=6).map(json.dumps),
))  # fmt: skip
def test_the_campaign_loader_loads_or_names_the_problem(tmp_path, text):
    path = tmp_path / "fuzzed.yml"
    path.write_text(text, encoding="utf-8")
    problem = None
    try:
        load_campaign(path, REPO / "templates" / "blocks")
    except CampaignConfigError as exc:
        problem = str(exc)
    assert problem is None or "fuzzed.yml" in problem


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(["{{", "}}", "{{#each products}}", "{{/each}}", "{{#if x}}",
                              "{{else}}", "{{/if}}", "{{{", "}}}", "*|FNAME|*", "<body>",
                              "</body>", 'mc:edit="main"', "{{unsub \"https://x\"}}", "\\{{",
                              "{{> partial}}", "{{!-- c --}}", "text"]),
             max_size=25).map("".join),
))  # fmt: skip
def test_the_template_linter_reports_findings_for_any_text(code):
    from signalmail.templates.lint import lint_template

    campaigns = load_campaigns(REPO / "templates" / "campaigns", REPO / "templates" / "blocks")
    campaign = campaigns["cart_abandonment"]
    findings = lint_template(code, "fuzzed.html", campaign, campaign.variants[0])
    assert all(f.severity in ("error", "warning") for f in findings)
