"""No value a client can send stops a build or another shopper's email.

Hypothesis writes batches of hostile events (numbers out of every range, not numbers at all,
absurd times and time zones, wrong shapes, long and control-laden strings) and posts them as
raw HTTP to the collector, as any client on the internet could. After each batch the watch
runs the real tap, loader and dbt tick with --fail-fast, and a shopper who abandoned a cart
at the same time, posted through the same collector, must get their email. Every event of
every batch must be acknowledged and loaded: a round the collector refused would test nothing.
The first batch is always the issue's own: an anonymous client's price of 1e16 and "1e309", a
quantity of 1e20 and the rest of the values that once failed `email_triggers`. Then come two of
Hypothesis's batches in CI, twelve in `make faults`; derandomized, so each run draws the same
ones (a failure reproduces), and the wider search is `make faults`'s.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import math
import os
from typing import Any

import duckdb
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from signalmail.collector.readback import SEGMENT_SUFFIX

from tests.helpers.servers import wait_until
from tests.helpers.watch import SOURCE_ID, Services, run_watch, services, utcnow
from tests.helpers.watch import product as shop_item

pytestmark = pytest.mark.slow

# Hypothesis's batches after the issue's own: each costs a watch run (a tick and a send), so CI
# takes two and `make faults` twelve (SIGNALMAIL_HOSTILE_BATCHES)
BATCHES = int(os.environ.get("SIGNALMAIL_HOSTILE_BATCHES", "2"))

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
        "userId": draw(st.one_of(
            st.just(user), st.none(), TEXTS.filter(lambda v: v not in (None, ""))
        )),
        "originalTimestamp": draw(TIMES),
        "sentAt": draw(TIMES),
        "context": draw(st.one_of(CONTEXTS, TEXTS)),
    }  # fmt: skip
    if kind == "track":
        event["event"] = draw(st.sampled_from(
            ["Product Added", "Product Viewed", "Order Completed", "Checkout Started",
             "Products Searched", "Cart Viewed", "Email Link Clicked", "Page Engaged"]
        ))  # fmt: skip
        single = draw(product())
        event["properties"] = draw(st.one_of(
            st.just({**(single if isinstance(single, dict) else {}),
                     "cart_id": draw(TEXTS), "order_id": draw(TEXTS), "query": draw(TEXTS),
                     "revenue": draw(NUMBERS), "total": draw(NUMBERS),
                     "page_view_id": draw(TEXTS), "engaged_seconds": draw(NUMBERS),
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


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _anonymous(event: str, properties: dict[str, Any], message_id: str) -> dict[str, Any]:
    return {"type": "track", "event": event, "properties": properties,
            "anonymousId": "anon-mallory", "messageId": message_id}  # fmt: skip


#: The issue's values, from an anonymous client (no userId): each once failed email_triggers
#: in the build and the tick (fixed-size decimal and integer casts), or a nightly test (-5).
ISSUE_BATCH: list[dict[str, Any]] = [
    _anonymous("Product Viewed", {"product_id": "p-tent", "price": 1e16}, "issue-price-1e16"),
    _anonymous("Product Viewed", {"product_id": "p-tent", "price": "1e309"}, "issue-price-1e309"),
    _anonymous("Product Viewed", {"product_id": "p-tent", "price": -5}, "issue-price-minus-5"),
    _anonymous("Product Added", {"product_id": "p-tent", "price": 240.0, "quantity": 1e20,
                                 "cart_id": "cart-mallory"}, "issue-quantity-1e20"),
    _anonymous("Order Completed", {"order_id": "o-mallory", "revenue": 1e30,
                                   "products": [{"product_id": "p-tent", "price": "1e309",
                                                 "quantity": 1e20}]}, "issue-revenue-1e30"),
    _anonymous("Page Engaged", {"page_view_id": "pv-mallory", "product_id": "p-tent",
                                "engaged_seconds": 1e9}, "issue-engaged-1e9"),
]  # fmt: skip
#: what the tick's staging must read the issue's values as: null (a quantity 1), the event kept
ISSUE_STAGED = {
    ("issue-price-1e16", 0): (None, 1),
    ("issue-price-1e309", 0): (None, 1),
    ("issue-price-minus-5", 0): (None, 1),
    ("issue-quantity-1e20", 0): (240.0, 1),
    ("issue-revenue-1e30", 0): (None, 1),
}


def abandoned_cart(user: str, ago: dt.timedelta) -> list[dict[str, Any]]:
    """A consenting shopper's tent left in a cart `ago`, as an ordinary storefront posts it."""
    now = utcnow()
    base = {"userId": user, "anonymousId": f"anon-{user}", "sentAt": _iso(now),
            "originalTimestamp": _iso(now - ago)}  # fmt: skip
    traits = {"email": f"{user}@example.com", "first_name": user.capitalize(),
              "timezone": "UTC", "email_opt_in": True}  # fmt: skip
    return [
        {**base, "type": "identify", "context": {"traits": traits}},
        {**base, "type": "track", "event": "Product Added",
         "properties": shop_item("p-tent", 1, f"cart-{user}")},
    ]  # fmt: skip


def published(svc: Services) -> tuple[int, set[str]]:
    """The hostile client's events and the user ids the collector has published so far.

    Counted by sender, not in total: the sandbox's webhooks publish events of their own. Read
    here, not with readback.read_spool, which expects well-shaped events.
    """
    mallory, users = 0, set()
    for path in (svc.spool / "rudder-logs" / SOURCE_ID).glob(f"*/*{SEGMENT_SUFFIX}"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                event = json.loads(line)
                mallory += event.get("anonymousId") == "anon-mallory"
                users.add(event.get("userId"))
    return mallory, users


def loaded_from_mallory(svc: Services) -> int:
    """Raw rows the loader wrote for the hostile client (the watch has exited: file free)."""
    path = svc.env["SIGNALMAIL_DUCKDB_PATH"]
    with duckdb.connect(path, read_only=True) as conn:
        return sum(
            conn.execute(
                f"select count(*) from rudderstack_raw.{stream} where anonymous_id = 'anon-mallory'"
            ).fetchone()[0]
            for stream in ("tracks", "identifies", "pages")
        )


def staged_issue_values(svc: Services) -> dict[tuple[str, int], tuple[Any, Any]]:
    """(price, quantity) of each product line of the issue's events, as the tick staged them."""
    with duckdb.connect(svc.env["SIGNALMAIL_DUCKDB_PATH"], read_only=True) as conn:
        rows = conn.execute(
            "select message_id, product_index, price, quantity"
            " from signals.stg_rudderstack__product_events where message_id like 'issue-%'"
        ).fetchall()
    return {(message, index): (price, quantity) for message, index, price, quantity in rows}


def staged_issue_tracks(svc: Services) -> dict[str, tuple[Any, Any]]:
    """(order_revenue, engaged_seconds) of the issue's events, as the tick staged them."""
    with duckdb.connect(svc.env["SIGNALMAIL_DUCKDB_PATH"], read_only=True) as conn:
        rows = conn.execute(
            "select message_id, order_revenue, engaged_seconds"
            " from signals.stg_rudderstack__tracks where message_id like 'issue-%'"
        ).fetchall()
    return {message: (revenue, seconds) for message, revenue, seconds in rows}


def test_hostile_events_never_stop_a_tick_or_another_shoppers_email(tmp_path):
    env = {
        "SIGNALMAIL_DBT_TARGET": "duckdb",
        "SIGNALMAIL_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "SIGNALMAIL_LEDGER_PATH": str(tmp_path / "ledger.duckdb"),
    }
    rounds: list[int] = []
    posted = {"mallory": 0}
    with services(tmp_path, env) as svc:

        @settings(max_examples=BATCHES, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.lists(hostile_event(user="mallory"), min_size=4, max_size=12))
        @example(ISSUE_BATCH)
        def one_round(events: list[dict[str, Any]]) -> None:
            n = len(rounds)
            rounds.append(n)
            # any batch of objects with an identity is taken whole: one bad item must not cost
            # the batch (ingest.parse_events), so a refusal here is a bug, not a pass
            answer = post_batch(svc.collector.url, svc.collector.write_key, events)
            assert answer.status_code == 200, answer.text
            shopper = f"ctl{n}"
            cart = abandoned_cart(shopper, dt.timedelta(hours=2))
            answer = post_batch(svc.collector.url, svc.collector.write_key, cart)
            assert answer.status_code == 200, answer.text
            posted["mallory"] += len(events)

            def arrived() -> bool:
                mallory, users = published(svc)
                return mallory >= posted["mallory"] and shopper in users

            wait_until(arrived, what="both batches published in the spool")
            done = run_watch(svc, "--exit-when-idle", "--fail-fast")
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            mailed = {m["email"] for m in svc.messages()}
            assert f"{shopper}@example.com" in mailed, done.stdout[-3000:]
            assert loaded_from_mallory(svc) == posted["mallory"], "every event acknowledged loads"
            if events[0].get("messageId") == ISSUE_BATCH[0]["messageId"]:
                assert staged_issue_values(svc) == ISSUE_STAGED
                assert staged_issue_tracks(svc) == {
                    **{message: (None, None) for message, _ in ISSUE_STAGED},
                    "issue-engaged-1e9": (None, None),
                }

        one_round()
    assert len(rounds) == 1 + BATCHES  # the issue's batch, then Hypothesis's
