"""Scripted shoppers, the local services and `signalmail watch` runs for the watch tests.

Events go through the real rudder-sdk-python client to a real `signalmail collect` process;
emails go through the real email target to a real `signalmail sandbox` process, which posts its
webhooks back to the collector; the watch runs as its own process, as a user runs it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from signalmail.collector.readback import read_spool
from signalmail.services import (
    CollectorProcess,
    SandboxProcess,
    publish_starter_templates,
    running_collector,
    running_sandbox,
)

from tests.helpers import REPO_ROOT
from tests.helpers.servers import wait_until

SOURCE_ID = "shop"
CAMPAIGN_PRIORITY = {
    "cart_abandonment": 1,
    "post_purchase": 2,
    "browse_abandonment": 3,
    "product_recommendations": 4,
    "re_engagement": 5,
}
#: Every email as soon as it is due, whatever the hour of the run: no quiet hours, no waiting
#: for a best hour, no hold-out draw; the weekly recommendation email is left out (its lists
#: need more shoppers than a script has), so every expected email is one the script names.
WATCH_VARS: dict[str, Any] = {
    "quiet_hours_start": 0,
    "quiet_hours_end": 0,
    "recommendation_min_items": 99,
    "campaigns": {
        name: {
            "priority": priority,
            "holdout_share": 0,
            "cooldown_hours": 24,
            "send_window_hours": 0,
        }
        for name, priority in CAMPAIGN_PRIORITY.items()
    },
}

PRODUCTS = {
    "p-shoe": {"name": "Trail Shoe", "brand": "Northway", "category": "Shoes", "price": 89.9},
    "p-sock": {"name": "Merino Sock", "brand": "Northway", "category": "Socks", "price": 14.5},
    "p-cap": {"name": "Sun Cap", "brand": "Coastline", "category": "Hats", "price": 22.0},
    "p-tent": {"name": "Dome Tent", "brand": "Coastline", "category": "Camping", "price": 240.0},
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def product(product_id: str, quantity: int | None = None, cart_id: str | None = None) -> dict:
    item = {
        "product_id": product_id,
        "sku": product_id.upper(),
        **PRODUCTS[product_id],
        "currency": "EUR",
        "url": f"https://shop.example.com/p/{product_id}",
        "image_url": f"https://shop.example.com/img/{product_id}.jpg",
    }
    if quantity is not None:
        item["quantity"] = quantity
    if cart_id is not None:
        item["cart_id"] = cart_id
    return item


@dataclass
class Shop:
    """A storefront sending events for scripted shoppers through rudder-sdk-python."""

    client: Any
    sent: int = 0
    emails: dict[str, str] = field(default_factory=dict)
    #: the shoppers' time zone (UTC; daytime_zone() keeps quiet hours out of a test's way)
    timezone: str = "UTC"

    def identify(self, user: str, ago: dt.timedelta, opt_in: bool = True) -> None:
        email = f"{user}@example.com"
        self.emails[user] = email
        self.client.identify(
            user_id=user,
            traits={
                "email": email,
                "first_name": user.capitalize(),
                "timezone": self.timezone,
                "locale": "en-GB",
                "email_opt_in": opt_in,
            },
            anonymous_id=f"anon-{user}",
            timestamp=utcnow() - ago,
        )
        self.sent += 1

    def track(
        self,
        user: str | None,
        event: str,
        properties: dict,
        ago: dt.timedelta,
        anonymous_id: str | None = None,
    ) -> None:
        self.client.track(
            user_id=user,
            event=event,
            properties=properties,
            anonymous_id=anonymous_id or f"anon-{user}",
            timestamp=utcnow() - ago,
        )
        self.sent += 1

    def view(self, user: str | None, product_id: str, ago: dt.timedelta, **kw: Any) -> None:
        self.track(user, "Product Viewed", product(product_id), ago, **kw)

    def add(self, user: str, product_id: str, cart_id: str, ago: dt.timedelta) -> None:
        self.track(user, "Product Added", product(product_id, 1, cart_id), ago)

    def order(
        self, user: str, order_id: str, cart_id: str, items: list[str], ago: dt.timedelta
    ) -> None:
        products = [product(p, 1) for p in items]
        total = round(sum(p["price"] for p in products), 2)
        self.track(
            user,
            "Order Completed",
            {"order_id": order_id, "cart_id": cart_id, "total": total, "revenue": total,
             "currency": "EUR", "products": products},
            ago,
        )  # fmt: skip


def daytime_zone() -> str:
    """An IANA zone where it is early afternoon now, so quiet hours and best hours never
    hold an email back, whatever the time of day a test runs."""
    hour = utcnow().hour
    offset = (13 - hour + 12) % 24 - 12  # local hour 13 = UTC hour + offset
    # Etc/GMT zones count the other way round: Etc/GMT-3 is UTC+3
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


HOURS = dt.timedelta(hours=1)
DAYS = dt.timedelta(days=1)


def script_first_day(shop: Shop) -> None:
    """The shoppers of the watch tests, each with one expected outcome (see EXPECTED)."""
    # ann abandons a cart: a cart email
    shop.identify("ann", 3 * HOURS)
    shop.add("ann", "p-shoe", "cart-ann", 2 * HOURS)
    # carl buys what he put in his cart before the email is due: none
    shop.identify("carl", 3 * HOURS)
    shop.add("carl", "p-sock", "cart-carl", 2 * HOURS)
    shop.order("carl", "o-carl", "cart-carl", ["p-sock"], 100 * dt.timedelta(minutes=1))
    # olga abandons a cart but said no to email: none
    shop.identify("olga", 3 * HOURS, opt_in=False)
    shop.add("olga", "p-cap", "cart-olga", 2 * HOURS)
    # bob looks at the tent twice and leaves: a browse email
    shop.identify("bob", 5 * HOURS)
    shop.view("bob", "p-tent", 4 * HOURS)
    shop.view("bob", "p-tent", 3 * HOURS)
    # uma abandons a cart (an email), unsubscribes from it later (script_after_unsubscribe)
    shop.identify("uma", 3 * HOURS)
    shop.add("uma", "p-cap", "cart-uma", 2 * HOURS)
    # rita came twice 34 and 33 days ago and never again: a re-engagement email
    shop.identify("rita", 34 * DAYS)
    shop.view("rita", "p-sock", 34 * DAYS)
    shop.view("rita", "p-cap", 33 * DAYS)
    # ron did the same but came back yesterday: none
    shop.identify("ron", 34 * DAYS)
    shop.view("ron", "p-sock", 34 * DAYS)
    shop.view("ron", "p-cap", 33 * DAYS)
    shop.view("ron", "p-shoe", 1 * DAYS)
    # paul ordered the shoes three and a half days ago: a post-purchase email recommending
    # what other shoppers looked at with them
    shop.identify("paul", 85 * HOURS)
    shop.order("paul", "o-paul", "cart-paul", ["p-shoe"], 84 * HOURS)
    for n in range(3):  # anonymous shoppers whose views make shoes and socks similar
        shop.view(None, "p-shoe", 5 * DAYS, anonymous_id=f"anon-crowd-{n}")
        shop.view(None, "p-sock", 5 * DAYS, anonymous_id=f"anon-crowd-{n}")


def script_after_unsubscribe(shop: Shop) -> None:
    """uma browses after unsubscribing: the browse email she would get is suppressed."""
    shop.view("uma", "p-tent", 4 * HOURS)
    shop.view("uma", "p-tent", 3 * HOURS)


def write_late_cart(
    spool: Path, user: str, received_ago: dt.timedelta, published_ago: dt.timedelta | None = None
) -> int:
    """A cart abandoned by `user`, published only now although received `received_ago`.

    What a collector that crashed publishes when it recovers its journal on restart: complete
    events, stamped by the collector when they arrived, in a segment of their own source.
    With `published_ago`, the segment is named as if published that long ago (old spool data).
    """
    from signalmail.collector.spool import SpoolWriter

    received = utcnow() - received_ago

    def stamped(event: dict, seconds: int) -> dict:
        at = (received + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
        at = at.replace("+00:00", "Z")
        return {
            **event,
            "messageId": f"late-{user}-{seconds}",
            "anonymousId": f"anon-{user}",
            "userId": user,
            "originalTimestamp": at,
            "sentAt": at,
            "receivedAt": at,
            "timestamp": at,
            "channel": "server",
            "context": {
                "library": {"name": "analytics-python", "version": "2.1.9"},
                **event.get("context", {}),
            },
        }

    events = [
        stamped({
            "type": "identify",
            "context": {"traits": {"email": f"{user}@example.com", "first_name": user.capitalize(),
                                   "timezone": "UTC", "email_opt_in": True}},
        }, 0),
        stamped({"type": "track", "event": "Product Added",
                 "properties": product("p-tent", 1, f"cart-{user}")}, 1),
    ]  # fmt: skip
    published = time.time() - (published_ago.total_seconds() if published_ago else 0)
    source = "recovered" if published_ago is None else "archive"
    writer = SpoolWriter(str(spool), source, clock=lambda: published)
    writer.append(events)
    writer.close()
    return len(events)


#: email -> campaign of the one message each shopper must get (everyone else gets none)
EXPECTED = {
    "ann@example.com": "cart_abandonment",
    "bob@example.com": "browse_abandonment",
    "uma@example.com": "cart_abandonment",
    "rita@example.com": "re_engagement",
    "paul@example.com": "post_purchase",
}


@dataclass
class Services:
    """Collector and sandbox of one test, and the environment a watch run gets."""

    root: Path
    collector: CollectorProcess
    sandbox: SandboxProcess
    env: dict[str, str]

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    def shop(self) -> Shop:
        from rudderstack.analytics import Client

        client = Client(write_key=self.collector.write_key, host=self.collector.url, sync_mode=True)
        return Shop(client)

    def wait_for_spool(self, events: int) -> None:
        """Until the collector has published at least `events` events (a segment is short)."""
        wait_until(
            lambda: read_spool(self.spool, SOURCE_ID).events >= events,
            timeout=30,
            what=f"{events} events published in the spool",
        )

    def wait_for_event(self, name: str, count: int) -> None:
        """Until the spool holds at least `count` track events called `name`."""
        wait_until(
            lambda: read_spool(self.spool, SOURCE_ID).by_name[name] >= count,
            timeout=30,
            what=f"{count} '{name}' events in the spool",
        )

    def messages(self) -> list[dict]:
        return self.sandbox.messages()


@contextlib.contextmanager
def services(root: Path, env: dict[str, str]) -> Iterator[Services]:
    """A collector (half-second segments) and a sandbox posting webhooks to it."""
    write_key = secrets.token_urlsafe(12)
    webhook_key = secrets.token_urlsafe(12)
    with (
        running_collector(
            root / "spool",
            write_key,
            SOURCE_ID,
            extra_args=("--max-segment-age", "0.5"),
            extra_env={"SIGNALMAIL_MANDRILL_WEBHOOK_KEY": webhook_key},
        ) as collector,
        running_sandbox(
            root / "sandbox",
            f"{collector.url}/webhooks/mandrill",
            webhook_key,
            open_rate=0.0,
            click_rate=0.0,
        ) as sandbox,
    ):
        publish_starter_templates(
            REPO_ROOT, sandbox.api_key, sandbox.api_host, root / "sync-state.json"
        )
        run_env = {
            **env,
            "SIGNALMAIL_SPOOL": str(root / "spool"),
            "SIGNALMAIL_MANDRILL_API_KEY": sandbox.api_key,
            "SIGNALMAIL_MANDRILL_BASE_URL": sandbox.api_host,
            "SIGNALMAIL_DATA_PLANE_URL": collector.url,
            "SIGNALMAIL_WRITE_KEY": write_key,
        }
        yield Services(root, collector, sandbox, run_env)


def watch_command(root: Path, *args: str) -> list[str]:
    """`signalmail watch` as the tests run it: its state under `root`, the scripted vars."""
    import json

    return [
        sys.executable, "-m", "signalmail", "watch", "--project-root", str(REPO_ROOT),
        "--state-dir", str(root / "watch"), "--metrics-port", "0", "--view", "lines",
        "--nightly-at", "never", "--vars", json.dumps(WATCH_VARS),
        "--summary-json", str(root / "watch" / "summary.json"), *args,
    ]  # fmt: skip


def run_watch(
    services: Services, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`signalmail watch` as its own process; output captured."""
    env = {**os.environ, **services.env, **(extra_env or {})}
    return subprocess.run(
        watch_command(services.root, *args),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
