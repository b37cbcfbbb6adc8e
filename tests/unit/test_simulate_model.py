"""The simulator's behaviour model: determinism, catalog, funnels, identities, abandonment."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from signalmail.simulate import Simulation, SimulationConfig, iter_events
from signalmail.simulate.catalog import build_catalog
from signalmail.simulate.clock import Pacer
from signalmail.simulate.model import SimulationStats

START = datetime(2026, 3, 2, tzinfo=UTC)


def run(seed=42, users=300, days=21):
    sim = Simulation(SimulationConfig(seed=seed, users=users, days=days, start=START))
    return list(sim), sim.stats


@pytest.fixture(scope="module")
def stream() -> tuple[list[dict], SimulationStats]:
    return run()


def test_same_seed_same_stream_including_ids_and_times():
    first = [
        json.dumps(e, sort_keys=True) for e in iter_events(seed=7, users=40, days=5, start=START)
    ]
    again = [
        json.dumps(e, sort_keys=True) for e in iter_events(seed=7, users=40, days=5, start=START)
    ]
    other = [
        json.dumps(e, sort_keys=True) for e in iter_events(seed=8, users=40, days=5, start=START)
    ]
    assert len(first) > 200
    assert first == again
    assert first != other
    assert {json.loads(e)["messageId"] for e in first}.isdisjoint(
        {json.loads(e)["messageId"] for e in other}
    )


def test_start_moves_every_timestamp_by_the_same_offset():
    base = list(iter_events(seed=3, users=10, days=3, start=START))
    later = list(iter_events(seed=3, users=10, days=3, start=START + timedelta(days=1)))
    # same behaviour, new identities: a messageId never names two different events
    assert [e["event"] if e["type"] == "track" else e["type"] for e in base] == [
        e["event"] if e["type"] == "track" else e["type"] for e in later
    ]
    assert not {e["messageId"] for e in base} & {e["messageId"] for e in later}
    assert [e["messageId"] for e in later] == [
        e["messageId"]
        for e in iter_events(seed=3, users=10, days=3, start=START + timedelta(days=1))
    ]
    for a, b in zip(base, later, strict=True):
        ta = datetime.fromisoformat(a["originalTimestamp"].replace("Z", "+00:00"))
        tb = datetime.fromisoformat(b["originalTimestamp"].replace("Z", "+00:00"))
        # the waking-hours shift may differ by whole hours; never by a random amount
        assert (tb - ta).total_seconds() % 3600 == pytest.approx(
            0, abs=0.002
        ) or tb - ta == timedelta(days=1)


def test_catalog_is_deterministic_complete_and_skewed():
    import random

    catalog = build_catalog(seed=1, size=300)
    assert catalog == build_catalog(seed=1, size=300)
    assert len({p.product_id for p in catalog.products}) == 300
    assert len({p.sku for p in catalog.products}) == 300
    assert len({p.name for p in catalog.products}) == 300
    for product in catalog.products:
        assert product.price > 0
        assert product.url.startswith("https://")
        assert product.product_id in product.url
        assert product.image_url.endswith(f"{product.product_id}.jpg")
    draws = catalog.sample(random.Random(0), k=20000)
    counts = sorted((sum(1 for d in draws if d is p) for p in catalog.products), reverse=True)
    assert sum(counts[:30]) > 0.5 * len(draws)  # top 10% of products take most of the traffic
    with pytest.raises(ValueError, match="at least 1"):
        build_catalog(seed=1, size=0)


def test_events_are_ordered_unique_and_complete(stream):
    events, _ = stream
    ids = [e["messageId"] for e in events]
    assert len(ids) == len(set(ids))
    times = [e["originalTimestamp"] for e in events]
    assert times == sorted(times)
    end = (START + timedelta(days=21)).isoformat()
    assert times[0] >= START.isoformat().replace("+00:00", "")
    assert times[-1] < end
    for event in events:
        assert event["type"] in {"track", "identify", "page"}
        assert event["anonymousId"]
        assert event["context"]["timezone"]
        assert event["context"]["userAgent"]
        if event["type"] == "track":
            assert event["event"]
            assert isinstance(event["properties"], dict)


def test_identify_traits_and_consent_mix(stream):
    events, stats = stream
    identifies = [e for e in events if e["type"] == "identify"]
    assert identifies
    for event in identifies:
        traits = event["context"]["traits"]
        assert "@" in traits["email"]
        assert traits["first_name"]
        ZoneInfo(traits["timezone"])  # a real IANA name
        assert traits["locale"]
        assert isinstance(traits["email_opt_in"], bool)
        assert event["userId"]
    opt_in = [e["context"]["traits"]["email_opt_in"] for e in identifies]
    assert 0.1 < opt_in.count(False) / len(opt_in) < 0.4
    # some active shoppers never identify at all
    identified_anon = {e["anonymousId"] for e in identifies}
    assert {e["anonymousId"] for e in events} - identified_anon
    assert len(stats.identified) == len(identifies)  # one identify per shopper


def test_anonymous_browsing_comes_before_identify(stream):
    events, _ = stream
    first_identify = {}
    for i, event in enumerate(events):
        if event["type"] == "identify":
            first_identify.setdefault(event["anonymousId"], i)
    per_device = defaultdict(list)
    for i, event in enumerate(events):
        per_device[event["anonymousId"]].append((i, event))
    for anon, at in first_identify.items():
        before = [e for i, e in per_device[anon] if i < at]
        after = [e for i, e in per_device[anon] if i >= at]
        assert before, "every shopper browses anonymously before identifying"
        assert all("userId" not in e for e in before)
        assert all(e.get("userId") for e in after)


def test_funnel_follows_the_ecommerce_spec(stream):
    events, stats = stream
    names = defaultdict(list)
    for event in events:
        if event["type"] == "track":
            names[event["event"]].append(event)
    for name in (
        "Products Searched",
        "Product List Viewed",
        "Product Viewed",
        "Product Added",
        "Product Removed",
        "Cart Viewed",
        "Checkout Started",
        "Order Completed",
        "Email Link Clicked",
    ):
        assert names[name], f"no {name} events"
    product_keys = {"product_id", "sku", "name", "brand", "category", "price", "url", "image_url"}
    for event in names["Product Viewed"]:
        assert product_keys <= event["properties"].keys()
    adds_by_cart = defaultdict(set)
    for event in names["Product Added"] + names["Product Removed"]:
        props = event["properties"]
        assert product_keys | {"cart_id", "quantity"} <= props.keys()
        adds_by_cart[props["cart_id"]].add(event["anonymousId"])
    checkouts = {e["properties"]["order_id"]: e for e in names["Checkout Started"]}
    for order in names["Order Completed"]:
        props = order["properties"]
        assert props["order_id"] in checkouts, "an order without its checkout"
        started = checkouts[props["order_id"]]
        assert started["properties"]["cart_id"] == props["cart_id"]
        assert started["originalTimestamp"] <= order["originalTimestamp"]
        assert adds_by_cart[props["cart_id"]] == {order["anonymousId"]}
        assert props["products"]
        for line in props["products"]:
            assert product_keys | {"quantity"} <= line.keys()
        total = sum(line["price"] * line["quantity"] for line in props["products"])
        assert props["total"] == pytest.approx(total, abs=0.01)
    # carts are abandoned at a realistic rate
    carts = set(adds_by_cart)
    ordered = {e["properties"]["cart_id"] for e in names["Order Completed"]}
    assert carts == stats.carts
    assert 0.6 < 1 - len(ordered) / len(carts) < 0.8
    assert stats.cart_abandonment_rate == pytest.approx(1 - len(ordered) / len(carts))
    assert stats.browse_abandoned_sessions > 0


def test_email_clicks_only_from_consenting_identified_shoppers(stream):
    events, _ = stream
    consent = {}
    for event in events:
        if event["type"] == "identify":
            consent[event["userId"]] = event["context"]["traits"]["email_opt_in"]
        if event.get("event") == "Email Link Clicked":
            props = event["properties"]
            assert consent.get(event["userId"]) is True
            assert props["trigger_id"]
            assert props["url"].startswith("https://")
            assert props["campaign"] in {
                "cart_abandonment",
                "browse_abandonment",
                "product_recommendations",
                "re_engagement",
            }


def test_returning_and_quiet_shoppers(stream):
    events, _ = stream
    times = defaultdict(list)
    for event in events:
        times[event["anonymousId"]].append(
            datetime.fromisoformat(event["originalTimestamp"].replace("Z", "+00:00"))
        )
    sessions = {}
    longest_gap = {}
    for anon, stamps in times.items():
        gaps = [(b - a) for a, b in itertools.pairwise(stamps)]
        sessions[anon] = 1 + sum(1 for g in gaps if g > timedelta(minutes=30))
        longest_gap[anon] = max(gaps, default=timedelta(0))
    assert sum(1 for n in sessions.values() if n >= 3) > 0.2 * len(sessions)
    assert any(gap >= timedelta(days=14) for gap in longest_gap.values())


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError, match="users"):
        SimulationConfig(users=0)
    with pytest.raises(ValueError, match="days"):
        SimulationConfig(days=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulationConfig(start=datetime(2026, 1, 1))


def test_pacer_holds_the_rate_and_catches_up_when_late():
    now = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(10.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert now[0] == pytest.approx(100.4)
    now[0] += 2.0  # a slow send: the next events go out without sleeping
    slept.clear()
    for _ in range(5):
        pacer.wait()
    assert slept == []
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)


def test_iso_matches_datetime_formatting():
    from signalmail.simulate.model import iso

    for ts in (0.0, 1767225600.0, 1767225600.0004, 1767225600.9996, 1767225600.123, 1.5e9 + 0.5):
        expected = datetime.fromtimestamp(round(ts, 3), UTC).isoformat(timespec="milliseconds")
        assert iso(ts) == expected.replace("+00:00", "Z")
