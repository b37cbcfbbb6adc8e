"""Sessions and funnels: the behaviour that turns shoppers and a catalog into an event stream.

Every shopper's timeline is a pure function of (seed, shopper index, start, days), generated
lazily, and the timelines are merged by event time. So the same seed gives the same stream,
messageIds and timestamps included, and a million-event stream costs memory per shopper, not per
event.

Event dicts are RudderStack messages as an SDK would build them before sending: `messageId`,
`type`, `userId`/`anonymousId`, `originalTimestamp`, `context`, `channel` and the type's own
fields. The sender fills `sentAt`; the collector adds `receivedAt` and `timestamp`.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from signalmail.simulate.catalog import SHOP_URL, Catalog, Product, build_catalog
from signalmail.simulate.users import Shopper, make_shopper

CURRENCY = "USD"
SEARCH_TERMS: dict[str, tuple[str, ...]] = {
    "Shoes": ("running shoes", "trail shoes", "boots", "sneakers"),
    "Apparel": ("hoodie", "rain jacket", "t-shirt", "chinos"),
    "Accessories": ("beanie", "leather wallet", "belt"),
    "Bags": ("backpack", "travel duffel", "tote bag"),
    "Outdoor": ("tent", "sleeping bag", "headlamp", "camping stove"),
    "Home": ("mug", "throw blanket", "desk lamp"),
    "Electronics": ("headphones", "bluetooth speaker", "smartwatch"),
    "Beauty": ("sunscreen", "face serum", "lip balm"),
}

# Funnel probabilities (documented in docs/simulate.md). Tuned so that about 70% of carts that
# received a product are never ordered, which is the industry's usual cart abandonment rate.
P_ENTRY_SEARCH = 0.35
P_ENTRY_CATEGORY = 0.40
P_ADD_PER_VIEW = 0.16
P_REMOVE = 0.15
P_CART_VIEWED = 0.6
P_CHECKOUT = 0.22
P_ORDER_AFTER_CHECKOUT = 0.45
P_IDENTIFY_PER_SESSION = 0.5
P_EMAIL_SESSION = 0.12
P_EMAIL_SESSION_WITH_CART = 0.45
CART_STALE_DAYS = 7.0
WAKING_HOURS = (7, 23)
# Time on content (docs/contracts.md, "Page Engaged"): a product page reports its engaged
# seconds every HEARTBEAT_SECONDS and once more when the shopper leaves it. The longer a
# shopper reads, the likelier the add: P_ADD_PER_VIEW scaled by dwell / MEAN_DWELL_SECONDS.
HEARTBEAT_SECONDS = 30.0
DWELL_SECONDS = (4.0, 75.0)
MEAN_DWELL_SECONDS = sum(DWELL_SECONDS) / 2
ENGAGED_SHARE = (0.6, 1.0)  # of the dwell, the page visible and the shopper active


@dataclass(slots=True)
class SimulationConfig:
    """What to simulate. `start` is the UTC instant of simulated day 0."""

    seed: int = 42
    users: int = 200
    days: float = 14.0
    start: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    catalog_size: int = 300

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"users must be at least 1, got {self.users}")
        if self.days <= 0:
            raise ValueError(f"days must be positive, got {self.days}")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")


@dataclass(slots=True)
class SimulationStats:
    """What the stream contained, tallied as it was generated (for the CLI summary)."""

    shoppers_active: set[int] = field(default_factory=set)
    identified: set[int] = field(default_factory=set)
    sessions: int = 0
    events: Counter[str] = field(default_factory=Counter)
    carts: set[str] = field(default_factory=set)
    ordered_carts: set[str] = field(default_factory=set)
    email_sessions: int = 0
    browse_abandoned_sessions: int = 0  # viewed products, added nothing

    @property
    def total_events(self) -> int:
        """Number of events of every kind."""
        return sum(self.events.values())

    @property
    def cart_abandonment_rate(self) -> float:
        """Share of carts that received a product and were never ordered."""
        if not self.carts:
            return 0.0
        return 1.0 - len(self.ordered_carts & self.carts) / len(self.carts)


def iso(ts: float) -> str:
    """Format epoch seconds as RudderStack's ISO 8601 with milliseconds and a Z.

    Hand-rolled (gmtime + strftime) because it runs once per event and datetime's isoformat
    is several times slower; a test pins it to datetime's output.
    """
    whole = math.floor(ts)
    millis = round((ts - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(whole))}.{millis:03d}Z"


class _ShopperTimeline:
    """Generates one shopper's sessions in time order; all randomness from its own RNG."""

    def __init__(
        self, shopper: Shopper, catalog: Catalog, config: SimulationConfig, stats: SimulationStats
    ) -> None:
        self.s = shopper
        self.catalog = catalog
        self.stats = stats
        self.rng = random.Random(f"timeline:{config.seed}:{shopper.index}")  # noqa: S311 (simulation, not security)
        # Ids are salted with the start: the same seed and start replay the same messageIds,
        # while a run over another period (the demo's second run, say) mints new ones instead
        # of handing a messageId already loaded to a different event. XOR keeps ids unique
        # within a run and leaves the behaviour drawn from `rng` untouched.
        self.id_salt = (
            int.from_bytes(
                hashlib.blake2b(config.start.isoformat().encode(), digest_size=16).digest()
            )
            >> 6
        )
        self.start = config.start.timestamp()
        self.end = self.start + config.days * 86400.0
        self.zone = ZoneInfo(shopper.timezone)
        self.identified = False
        self.cart_id: str | None = None
        self.cart: dict[str, tuple[Product, int]] = {}
        self.cart_touched = 0.0
        self.viewed: list[Product] = []
        self.seq = 0
        self.sessions = 0

    # -- small helpers -------------------------------------------------------------------------

    def _uuid(self) -> str:
        """Return a version-4-shaped UUID string drawn from the shopper's RNG, salted by start."""
        h = f"{self.rng.getrandbits(122) ^ self.id_salt:031x}"
        return f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{'89ab'[int(h[15], 16) & 3]}{h[16:19]}-{h[19:31]}"

    def _context(
        self, page: dict[str, str] | None = None, campaign: dict[str, str] | None = None
    ) -> dict[str, object]:
        ctx: dict[str, object] = {
            "ip": self.s.ip,
            "userAgent": self.s.user_agent,
            "locale": self.s.locale,
            "timezone": self.s.timezone,
        }
        if page is not None:
            ctx["page"] = page
        if campaign is not None:
            ctx["campaign"] = campaign
        return ctx

    def _base(self, kind: str, ts: float, ctx: dict[str, object]) -> dict[str, object]:
        event: dict[str, object] = {
            "messageId": self._uuid(),
            "type": kind,
            "anonymousId": self.s.anonymous_id,
            "originalTimestamp": iso(ts),
            "channel": "web",
            "context": ctx,
        }
        if self.identified:
            event["userId"] = self.s.user_id
        return event

    def _track(
        self,
        ts: float,
        name: str,
        props: dict[str, object],
        page: dict[str, str] | None = None,
        campaign: dict[str, str] | None = None,
    ) -> tuple[float, dict[str, object]]:
        event = self._base("track", ts, self._context(page, campaign))
        event["event"] = name
        event["properties"] = props
        return ts, event

    def _page(
        self,
        ts: float,
        name: str,
        path: str,
        title: str,
        referrer: str,
        campaign: dict[str, str] | None = None,
    ) -> tuple[float, dict[str, object]]:
        url = f"{SHOP_URL}{path}"
        page = {"path": path, "url": url, "title": title, "referrer": referrer}
        event = self._base("page", ts, self._context(page, campaign))
        event["name"] = name
        event["properties"] = dict(page, name=name)
        return ts, event

    def _identify(self, ts: float) -> tuple[float, dict[str, object]]:
        self.identified = True
        self.stats.identified.add(self.s.index)
        ctx = self._context()
        ctx["traits"] = {
            "email": self.s.email,
            "first_name": self.s.first_name,
            "timezone": self.s.timezone,
            "locale": self.s.locale,
            "email_opt_in": self.s.email_opt_in,
        }
        return ts, self._base("identify", ts, ctx)

    def _cart_lines(self) -> list[dict[str, object]]:
        return [product.properties(qty) for product, qty in self.cart.values()]

    def _cart_total(self) -> float:
        return round(sum(product.price * qty for product, qty in self.cart.values()), 2)

    def _think(self) -> float:
        return self.rng.uniform(4.0, 75.0)

    # -- time ----------------------------------------------------------------------------------

    def _next_session_time(self, after: float) -> float:
        rate = self.s.sessions_per_week / (7 * 86400.0)
        t = after + self.rng.expovariate(rate)
        quiet_from = self.s.quiet_after_day
        if quiet_from is not None:
            q0 = self.start + quiet_from * 86400.0
            q1 = q0 + self.s.quiet_days * 86400.0
            if q0 <= t < q1:
                t = q1 + self.rng.uniform(0, 86400.0)
        local = datetime.fromtimestamp(t, self.zone)
        if self.rng.random() < self.s.routine_share:
            # a routine visit: the next time the shopper's habitual hour comes round (+-1 h)
            ahead = (self.s.routine_hour - local.hour) % 24
            at = t + ahead * 3600.0 - local.minute * 60.0 + self.rng.uniform(-3600.0, 3600.0)
            return at if at > after else at + 86400.0  # a timeline never runs backwards
        # shoppers shop while awake in their own time zone
        if not WAKING_HOURS[0] <= local.hour < WAKING_HOURS[1]:
            t += ((WAKING_HOURS[0] - local.hour) % 24) * 3600.0 + self.rng.uniform(0, 4 * 3600.0)
        return t

    # -- sessions ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[float, int, int, dict[str, object]]]:
        t = self._next_session_time(self.start - self.rng.uniform(0, 3 * 86400.0))
        t = max(t, self.start + self.rng.uniform(0, 3600.0))
        while t < self.end - 3600.0:
            session_end = t
            for ts, event in self._session(t):
                self.seq += 1
                session_end = ts
                yield ts, self.s.index, self.seq, event
            t = self._next_session_time(session_end + 1800.0)

    def _session(self, t: float) -> Iterator[tuple[float, dict[str, object]]]:
        rng = self.rng
        self.sessions += 1
        self.stats.sessions += 1
        self.stats.shoppers_active.add(self.s.index)
        if self.cart and t - self.cart_touched > CART_STALE_DAYS * 86400.0:
            self.cart, self.cart_id = {}, None  # an old cart expires; it stays abandoned
        campaign = None
        referrer = rng.choice(("https://www.google.com/", "", "https://www.instagram.com/"))
        identify_at: int | None = None
        if self.s.identifies and not self.identified and rng.random() < P_IDENTIFY_PER_SESSION:
            identify_at = rng.randrange(1, 6)  # browse anonymously for a few steps first

        product: Product | None = None
        p_email = P_EMAIL_SESSION_WITH_CART if self.cart else P_EMAIL_SESSION
        if self.identified and self.s.clicks_emails and rng.random() < p_email:
            self.stats.email_sessions += 1
            yield from self._email_click(t)
            campaign = {"source": "mandrill", "medium": "email", "name": self._last_campaign}
            referrer = ""
            product = self._last_product
            t += rng.uniform(1.0, 5.0)
        else:
            yield self._page(t, "Home", "/", "Home", referrer)
            t += self._think()

        views: list[Product] = []
        if product is None:
            entry = rng.random()
            if entry < P_ENTRY_SEARCH:
                seed_product = self.catalog.sample(rng)[0]
                query = rng.choice(SEARCH_TERMS[seed_product.category])
                yield self._track(t, "Products Searched", {"query": query})
                t += rng.uniform(1.0, 4.0)
                views = self.catalog.sample_in(rng, seed_product.category, 8)
                yield self._list(t, f"search:{query}", seed_product.category, views)
            elif entry < P_ENTRY_SEARCH + P_ENTRY_CATEGORY:
                category = self.catalog.sample(rng)[0].category
                path = f"/c/{category.lower()}"
                yield self._page(t, "Category", path, category, f"{SHOP_URL}/")
                views = self.catalog.sample_in(rng, category, 12)
                yield self._list(t + 0.5, f"category:{category.lower()}", category, views)
            t += self._think()
        added = False
        n_views = 1 + min(12, int(rng.expovariate(1 / 2.5)))
        for steps in range(1, n_views + 1):
            if product is None:
                if views and rng.random() < 0.7:
                    product = rng.choice(views)
                elif self.viewed and rng.random() < 0.3:  # returning shoppers revisit
                    product = rng.choice(self.viewed[-10:])
                else:
                    product = self.catalog.sample(rng)[0]
            if identify_at is not None and steps == identify_at:
                yield self._identify(t)
                identify_at = None
                t += rng.uniform(1.0, 3.0)
            yield from self._view(t, product, campaign)
            self.viewed.append(product)
            del self.viewed[:-20]
            dwell = rng.uniform(*DWELL_SECONDS)
            yield from self._engaged(t + 0.5, product, dwell)
            t += dwell
            if rng.random() < P_ADD_PER_VIEW * dwell / MEAN_DWELL_SECONDS:
                yield self._add(t, product, 1 if rng.random() < 0.85 else 2)
                added = True
                t += self._think()
            product = None
        if not added:
            self.stats.browse_abandoned_sessions += 1
        if self.cart and rng.random() < P_REMOVE:
            yield self._remove(t, rng.choice(list(self.cart.values()))[0])
            t += self._think()
        if not self.cart:
            return
        if rng.random() < P_CART_VIEWED:
            yield self._page(t, "Cart", "/cart", "Your cart", f"{SHOP_URL}/")
            yield self._track(
                t + 0.3, "Cart Viewed", {"cart_id": self.cart_id, "products": self._cart_lines()}
            )
            t += self._think()
        if rng.random() >= P_CHECKOUT:
            return  # cart abandonment: the cart stays, maybe for a later session
        if self.s.identifies and not self.identified:
            yield self._identify(t)  # checkout asks who you are
            t += rng.uniform(5.0, 30.0)
        order_id = f"o-{self._uuid()[:13]}"
        value = self._cart_total()
        yield self._track(
            t,
            "Checkout Started",
            {
                "cart_id": self.cart_id,
                "order_id": order_id,
                "value": value,
                "revenue": value,
                "currency": CURRENCY,
                "products": self._cart_lines(),
            },
        )
        t += rng.uniform(20.0, 180.0)
        if rng.random() >= P_ORDER_AFTER_CHECKOUT:
            return  # checkout abandonment
        yield self._page(t, "Order Confirmation", "/checkout/complete", "Thank you", "")
        yield self._track(
            t + 0.2,
            "Order Completed",
            {
                "order_id": order_id,
                "cart_id": self.cart_id,
                "total": value,
                "revenue": value,
                "currency": CURRENCY,
                "products": self._cart_lines(),
            },
        )
        assert self.cart_id is not None
        self.stats.ordered_carts.add(self.cart_id)
        self.cart, self.cart_id = {}, None

    def _list(
        self, t: float, list_id: str, category: str, products: list[Product]
    ) -> tuple[float, dict[str, object]]:
        lines = [dict(p.properties(), position=i + 1) for i, p in enumerate(products)]
        return self._track(
            t, "Product List Viewed", {"list_id": list_id, "category": category, "products": lines}
        )

    def _view(
        self, t: float, product: Product, campaign: dict[str, str] | None
    ) -> Iterator[tuple[float, dict[str, object]]]:
        path = product.url.removeprefix(SHOP_URL)
        yield self._page(t, "Product", path, product.name, f"{SHOP_URL}/", campaign)
        props = product.properties()
        props["currency"] = CURRENCY
        yield self._track(
            t + 0.4,
            "Product Viewed",
            props,
            {"path": path, "url": product.url, "title": product.name},
            campaign,
        )

    def _engaged(
        self, t: float, product: Product, dwell: float
    ) -> Iterator[tuple[float, dict[str, object]]]:
        """Yield the page's engagement pings: one per heartbeat of engaged time, then the rest."""
        # ends before the shopper's next step (t + dwell - 0.5 at the latest)
        engaged = min(dwell * self.rng.uniform(*ENGAGED_SHARE), dwell - 1.0)
        page_view_id = self._uuid()
        path = product.url.removeprefix(SHOP_URL)
        reported = 0.0
        while engaged - reported >= 1.0:
            seconds = min(HEARTBEAT_SECONDS, engaged - reported)
            reported += seconds
            yield self._track(
                t + reported,
                "Page Engaged",
                {
                    "page_view_id": page_view_id,
                    "engaged_seconds": round(seconds, 1),
                    "heartbeat_seconds": HEARTBEAT_SECONDS,
                    "product_id": product.product_id,
                    "name": product.name,
                    "category": product.category,
                },
                {"path": path, "url": product.url, "title": product.name},
            )

    def _add(self, t: float, product: Product, quantity: int) -> tuple[float, dict[str, object]]:
        if self.cart_id is None:
            self.cart_id = f"c-{self._uuid()}"
        self.stats.carts.add(self.cart_id)
        existing = self.cart.get(product.product_id)
        self.cart[product.product_id] = (product, quantity + (existing[1] if existing else 0))
        self.cart_touched = t
        props = product.properties(quantity)
        props["cart_id"] = self.cart_id
        return self._track(t, "Product Added", props)

    def _remove(self, t: float, product: Product) -> tuple[float, dict[str, object]]:
        _, quantity = self.cart.pop(product.product_id)
        self.cart_touched = t
        props = product.properties(quantity)
        props["cart_id"] = self.cart_id
        return self._track(t, "Product Removed", props)

    _last_campaign: str = ""
    _last_product: Product | None = None

    def _email_click(self, t: float) -> Iterator[tuple[float, dict[str, object]]]:
        """Yield an emailed shopper's click-through, as the collector would record it."""
        rng = self.rng
        if self.cart:
            campaign = "cart_abandonment"
            product = rng.choice(list(self.cart.values()))[0]
        else:
            campaign = rng.choice(
                ("browse_abandonment", "product_recommendations", "re_engagement")
            )
            product = rng.choice(self.viewed[-5:]) if self.viewed else self.catalog.sample(rng)[0]
        day = int((t - self.start) // 86400)
        trigger_id = hashlib.sha1(
            f"{campaign}:{self.s.user_id}:{day}".encode(), usedforsecurity=False
        ).hexdigest()[:20]
        self._last_campaign = campaign
        self._last_product = product
        url = f"{product.url}?utm_source=mandrill&utm_medium=email&utm_campaign={campaign}"
        yield self._track(
            t,
            "Email Link Clicked",
            {
                "trigger_id": trigger_id,
                "campaign": campaign,
                "variant": "a",
                "mandrill_id": self._uuid().replace("-", ""),
                "email": self.s.email,
                "user_id": self.s.user_id,
                "url": url,
            },
        )


class Simulation:
    """A configured simulation: iterate it for events in time order, read `stats` afterwards."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.catalog = build_catalog(config.seed, config.catalog_size)
        self.stats = SimulationStats()

    def timed(self) -> Iterator[tuple[float, dict[str, object]]]:
        """(epoch seconds, event) pairs in event-time order."""
        timelines = (
            iter(
                _ShopperTimeline(
                    make_shopper(self.config.seed, i, self.config.days),
                    self.catalog,
                    self.config,
                    self.stats,
                )
            )
            for i in range(self.config.users)
        )
        for ts, _, _, event in heapq.merge(*timelines):
            self.stats.events[str(event.get("event") or event["type"])] += 1
            yield ts, event

    def __iter__(self) -> Iterator[dict[str, object]]:
        for _, event in self.timed():
            yield event


def iter_events(
    seed: int = 42, users: int = 200, days: float = 14.0, start: datetime | None = None
) -> Iterator[dict[str, object]]:
    """Yield RudderStack event dicts in event-time order, sending nothing (the generator API)."""
    config = SimulationConfig(
        seed=seed, users=users, days=days, start=start or datetime.now(UTC) - timedelta(days=days)
    )
    return iter(Simulation(config))
