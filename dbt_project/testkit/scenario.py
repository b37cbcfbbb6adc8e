"""A hand-written cast of shoppers, one per trigger rule and suppression, over synthetic traffic.

Tests assert exact outcomes per scenario user (ids start with `s-`); the background traffic gives
item similarity and population defaults something real to work on.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from .raw_events import EventFactory, Traffic, mandrill_event, product

NOW = datetime(2026, 3, 10, 12, 0, 0)  # a Tuesday; US daylight saving time began on March 8
AS_OF = NOW.strftime("%Y-%m-%d %H:%M:%S")

# products from the traffic catalogue, so similarity exists for them
CART_PRODUCT = product("P0003", price=12.5, brand="Brand3", category="Category3")
OTHER_PRODUCT = product("P0008", price=40.0, brand="Brand1", category="Category3")
BROWSED_PRODUCT = product("P0011", price=16.0, brand="Brand4", category="Category1")
SEARCH_RESULT = product("P0017", price=22.0, brand="Brand2", category="Category2")


def received_at(event: dict[str, Any], at: datetime) -> dict[str, Any]:
    """Set when RudderStack received the event (a late or re-delivered copy)."""
    event["receivedAt"] = at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return event


def _consenting(f: EventFactory, user: str, at: datetime, **traits: Any) -> dict[str, Any]:
    base = {
        "email": f"{user}@example.com",
        "first_name": user.title(),
        "timezone": "Europe/Berlin",
        "email_opt_in": True,
    }
    base.update(traits)
    return f.identify(at, user, {k: v for k, v in base.items() if v is not None})


def _abandoned_cart(f: EventFactory, user: str, at: datetime) -> list[dict[str, Any]]:
    cart = {"cart_id": f"cart-{user}"}
    return [
        f.track("Product Viewed", at, dict(CART_PRODUCT), user_id=user),
        f.track(
            "Product Added", at + timedelta(minutes=1), dict(CART_PRODUCT, **cart), user_id=user
        ),
    ]


def background(now: datetime = NOW, events: int = 3000) -> list[dict[str, Any]]:
    """Synthetic traffic over the 40 days before `now` (ends 2 hours before it)."""
    traffic = Traffic(start=now - timedelta(days=40), end=now - timedelta(hours=2), users=150)
    return list(traffic.events(events))


def scenario(now: datetime = NOW) -> list[dict[str, Any]]:
    """Build the scenario users' events (see the module docstring and docs/signals.md)."""
    f = EventFactory(seed="scenario")
    h = timedelta(hours=1)
    events: list[dict[str, Any]] = []

    # s-cart: anonymous browsing, identify via context.traits, adds, a remove; the add is
    # delivered twice (SDK retry). Quiet hours move the email to 08:00 New York time.
    anon = "a-cart"
    events.append(f.track("Product Viewed", now - 5 * h, dict(CART_PRODUCT), anonymous_id=anon))
    events.append(
        f.identify(
            now - 4.9 * h,
            "s-cart",
            {
                "email": "Ada@Example.com",
                "first_name": "Ada",
                "timezone": "America/New_York",
                "email_opt_in": True,
            },
            anonymous_id=anon,
        )
    )
    cart = {"cart_id": "cart-s-cart"}
    added = f.track(
        "Product Added", now - 4.8 * h, dict(CART_PRODUCT, quantity=2, **cart), user_id="s-cart"
    )
    events.append(added)
    events.append(copy.deepcopy(received_at(copy.deepcopy(added), now - 4.7 * h)))
    events.append(
        f.track("Product Added", now - 4.7 * h, dict(OTHER_PRODUCT, **cart), user_id="s-cart")
    )
    events.append(
        f.track("Product Removed", now - 4.5 * h, dict(OTHER_PRODUCT, **cart), user_id="s-cart")
    )

    # s-cart's history: three earlier emails, each opened at 18:00 New York time (EST then):
    # the user's own best send hour. The sends count in campaign_performance.
    for day in (11, 12, 13):
        sent_at = (now - day * 24 * h).replace(hour=20)
        trigger = f"hist-s-cart-{day}"
        events.append(
            f.track(
                "Email Sent",
                sent_at,
                {
                    "trigger_id": trigger,
                    "campaign": "product_recommendations",
                    "email": "ada@example.com",
                    "user_id": "s-cart",
                    "mandrill_id": f"m-{day}",
                },
                user_id="s-cart",
            )
        )
        events.append(
            mandrill_event(
                f,
                "Email Opened",
                sent_at.replace(hour=23),
                email="ada@example.com",
                user_id="s-cart",
                trigger_id=trigger,
                campaign="product_recommendations",
            )
        )

    # s-buyer: cart converted by an order
    events.append(_consenting(f, "s-buyer", now - 7 * h))
    events.extend(_abandoned_cart(f, "s-buyer", now - 6 * h))
    events.append(
        f.track(
            "Order Completed",
            now - 5 * h,
            {
                "order_id": "o-buyer",
                "cart_id": "cart-s-buyer",
                "total": 12.5,
                "currency": "EUR",
                "products": [CART_PRODUCT],
            },
            user_id="s-buyer",
        )
    )

    # s-browse: a search, three views of one product, no add
    events.append(_consenting(f, "s-browse", now - 6 * h))
    events.append(
        f.track("Products Searched", now - 5.5 * h, {"query": "Red Shoes"}, user_id="s-browse")
    )
    for minutes in (0, 10, 20):
        at = now - 5 * h + timedelta(minutes=minutes)
        events.append(f.track("Product Viewed", at, dict(BROWSED_PRODUCT), user_id="s-browse"))

    # s-search: a search, one result opened once, no add: search abandonment
    events.append(_consenting(f, "s-search", now - 6 * h))
    events.append(
        f.track("Products Searched", now - 4 * h, {"query": "Trail Boots"}, user_id="s-search")
    )
    events.append(
        f.track(
            "Product Viewed",
            now - 4 * h + timedelta(minutes=2),
            dict(SEARCH_RESULT),
            user_id="s-search",
        )
    )

    # suppressed: no consent trait, consent withdrawn
    events.append(f.identify(now - 8 * h, "s-noconsent", {"email": "s-noconsent@example.com"}))
    events.extend(_abandoned_cart(f, "s-noconsent", now - 5 * h))
    events.append(_consenting(f, "s-optout", now - 10 * 24 * h))
    events.append(f.identify(now - 24 * h, "s-optout", {"email_opt_in": False}, top_level=True))
    events.extend(_abandoned_cart(f, "s-optout", now - 5 * h))
    # Mandrill's word on an address (the webhook's events, by address alone or with the user
    # id): an unsubscribe, a hard bounce, a complaint and a hard-bounce rejection suppress; a
    # soft bounce and a rejection for the sender's sake (an unsigned domain) do not
    for user, webhook, extra, by_user_id in (
        ("s-unsub", "Unsubscribed", {}, False),
        ("s-bounce", "Email Bounced", {"bounce_type": "hard"}, False),
        ("s-spam", "Marked as Spam", {}, False),
        ("s-rejected", "Email Rejected", {"reject_reason": "hard-bounce"}, False),
        ("s-softbounce", "Email Bounced", {"bounce_type": "soft"}, True),
        ("s-unsigned", "Email Rejected", {"reject_reason": "unsigned"}, True),
    ):
        events.append(_consenting(f, user, now - 9 * 24 * h))
        events.append(
            mandrill_event(
                f,
                webhook,
                now - 2 * 24 * h,
                email=f"{user}@example.com",
                user_id=user if by_user_id else None,
                trigger_id=f"old-{user}",
                campaign="re_engagement",
                **extra,
            )
        )
        events.extend(_abandoned_cart(f, user, now - 5 * h))

    # s-lapsed: two sessions, silent for 32 days; s-expired: silent for 100, past the
    # re-engagement horizon (90 days)
    for user, days in (("s-lapsed", 32), ("s-expired", 100)):
        events.append(_consenting(f, user, now - (days + 5) * 24 * h))
        events.append(f.page(now - (days + 5) * 24 * h + timedelta(minutes=1), user_id=user))
        events.append(f.page(now - days * 24 * h, user_id=user))

    # s-post: browsed on another device first (alias links it), ordered 3 days and 2 hours ago
    events.append(f.page(now - 5 * 24 * h, anonymous_id="a-post-tablet"))
    events.append(_consenting(f, "s-post", now - 4 * 24 * h))
    events.append(f.alias(now - 4 * 24 * h, "a-post-tablet", "s-post"))
    events.append(
        f.track(
            "Order Completed",
            now - 74 * h,
            {
                "order_id": "o-post",
                "total": 52.5,
                "revenue": 52.5,
                "currency": "EUR",
                "products": [CART_PRODUCT, OTHER_PRODUCT],
            },
            user_id="s-post",
        )
    )

    # s-badzone: a time zone no engine knows falls back to the population's
    events.append(_consenting(f, "s-badzone", now - 6 * h, timezone="Mars/Olympus"))
    events.extend(_abandoned_cart(f, "s-badzone", now - 5 * h))

    # s-capped: cart and browse abandonment at once; the daily cap keeps the cart email
    events.append(_consenting(f, "s-capped", now - 7 * h))
    events.extend(_abandoned_cart(f, "s-capped", now - 5 * h))
    for minutes in (0, 10):
        at = now - 6 * h + timedelta(minutes=minutes)
        events.append(f.track("Product Viewed", at, dict(BROWSED_PRODUCT), user_id="s-capped"))

    # a page's image tag claims, through the public write key, that Ada marked an email as
    # spam: only the signed webhook's events suppress, so her cart email still goes out
    forged = f.track(
        "Marked as Spam", now - 6.5 * h, {"email": "ada@example.com"}, anonymous_id="a-forger"
    )
    forged["context"]["library"] = {"name": "RudderLabs JavaScript SDK", "version": "3.34.1"}
    events.append(forged)
    # the webhook's name with a dotted capital I: Python's lower() leaves it apart, so the
    # collector lets it in, but a warehouse's lower() folds it into the name itself
    lookalike = f.track(
        "Marked as Spam", now - 6.6 * h, {"email": "ada@example.com"}, anonymous_id="a-forger"
    )
    lookalike["context"]["library"] = {"name": "s\u0130gnalmail-mandrill-webhook"}
    events.append(lookalike)
    return events
