"""No value a client can send stops a build or another shopper's email.

Hypothesis writes batches of hostile events (numbers out of every range, not numbers at all,
absurd times and time zones, wrong shapes, long and control-laden strings) and posts them as
raw HTTP to the collector, as any client on the internet could. After each batch the watch
runs the real tap, loader and dbt tick with --fail-fast, and a shopper who abandoned a cart
at the same time must get their email.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import math
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.watch_support import run_watch, services, write_late_cart

pytestmark = pytest.mark.slow

NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from(
        [
            "1e309",
            "-1e309",
            "1e-999",
            "NaN",
            "Infinity",
            "-5",
            "0x10",
            "1,5",
            "12abc",
            "",
            " ",
            "1e16",
            "99999999999999999999999",
            "-0",
            "٣",
        ]
    ),
    st.text(max_size=20),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
TEXTS = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=300, max_size=1000),
    st.sampled_from(
        [
            "\x00",
            "\r\nBcc: x@y.z",
            "javascript:alert(1)",
            "' or 1=1 --",
            "{{#each x}}",
            "Robert'); drop table students;--",
        ]
    ),
    st.integers(),
    st.none(),
)
TIMES = st.one_of(
    st.sampled_from(
        [
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "2026-13-45T99:99:99Z",
            "yesterday",
            "",
            "1970-01-01T00:00:00Z",
            "275760-09-13T00:00:00Z",
        ]
    ),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.none(),
)
TRAITS = st.fixed_dictionaries({"email": TEXTS, "email_opt_in": NUMBERS, "first_name": TEXTS})
ZONES = st.one_of(st.sampled_from(["Mars/Olympus", "UTC+25", "", "Europe/Berlin\x00"]), TEXTS)

CONTEXTS = st.fixed_dictionaries({"timezone": ZONES, "locale": TEXTS, "traits": TRAITS})


@st.composite
def product(draw: Any) -> Any:
    return draw(st.one_of(
        st.fixed_dictionaries({
            "product_id": TEXTS, "sku": TEXTS, "name": TEXTS, "brand": TEXTS,
            "category": TEXTS, "price": NUMBERS, "quantity": NUMBERS, "currency": TEXTS,
            "url": TEXTS, "image_url": TEXTS,
        }),
        TEXTS,
        NUMBERS,
    ))  # fmt: skip


@st.composite
def hostile_event(draw: Any, user: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["track", "identify", "page"]))
    event: dict[str, Any] = {
        "type": kind,
        "anonymousId": f"anon-{user}",
        "userId": draw(st.one_of(st.just(user), TEXTS.filter(lambda v: v not in (None, "")))),
        "originalTimestamp": draw(TIMES),
        "sentAt": draw(TIMES),
        "context": draw(st.one_of(CONTEXTS, TEXTS)),
    }  # fmt: skip
    if kind == "track":
        event["event"] = draw(st.sampled_from(
            ["Product Added", "Product Viewed", "Order Completed", "Checkout Started",
             "Products Searched", "Cart Viewed", "Email Link Clicked"]
        ))  # fmt: skip
        single = draw(product())
        event["properties"] = draw(st.one_of(
            st.just({**(single if isinstance(single, dict) else {}),
                     "cart_id": draw(TEXTS), "order_id": draw(TEXTS), "query": draw(TEXTS),
                     "revenue": draw(NUMBERS), "total": draw(NUMBERS),
                     "products": draw(st.one_of(st.lists(product(), max_size=3), product()))}),
            TEXTS,
        ))  # fmt: skip
    elif kind == "identify":
        event["traits"] = draw(st.one_of(
            st.fixed_dictionaries({"email": TEXTS, "email_opt_in": NUMBERS, "timezone": ZONES}),
            TEXTS,
        ))  # fmt: skip
    else:
        event["properties"] = draw(st.one_of(st.dictionaries(st.text(max_size=5), TEXTS), TEXTS))
    return event


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity; anything else Hypothesis made goes as is."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def post_batch(url: str, write_key: str, events: list[dict[str, Any]]) -> requests.Response:
    auth = base64.b64encode(f"{write_key}:".encode()).decode()
    body = gzip.compress(json.dumps({"batch": _json_safe(events)}).encode())
    return requests.post(
        f"{url}/v1/batch", data=body, timeout=30,
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json",
                 "Content-Encoding": "gzip"},
    )  # fmt: skip


def test_hostile_events_never_stop_a_tick_or_another_shoppers_email(tmp_path):
    env = {
        "SIGNALMAIL_DBT_TARGET": "duckdb",
        "SIGNALMAIL_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "SIGNALMAIL_LEDGER_PATH": str(tmp_path / "ledger.duckdb"),
    }
    rounds: list[int] = []
    with services(tmp_path, env) as svc:

        @settings(max_examples=6, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.lists(hostile_event(user="mallory"), min_size=4, max_size=12))
        def one_round(events: list[dict[str, Any]]) -> None:
            n = len(rounds)
            rounds.append(n)
            answer = post_batch(svc.collector.url, svc.collector.write_key, events)
            assert answer.status_code in (200, 400), answer.text  # never a 5xx
            shopper = f"ctl{n}"
            write_late_cart(svc.spool, shopper, dt.timedelta(hours=2))
            done = run_watch(svc, "--exit-when-idle", "--fail-fast")
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            mailed = {m["email"] for m in svc.messages()}
            assert f"{shopper}@example.com" in mailed, done.stdout[-3000:]

        one_round()
    assert len(rounds) == 6
