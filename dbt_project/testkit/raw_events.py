# ruff: noqa: S608 - SQL identifiers here are this module's constants and caller-chosen schemas
"""Raw RudderStack tables and realistic events for testing and benchmarking the dbt project.

The dbt models read the tables tap-rudderstack loads (docs/contracts.md section 3). Tests must not
wait for the real loader, so this module creates those tables with the contract's column types
(DuckDB `json` / Postgres `jsonb`, naive UTC `timestamp`) and fills them with events shaped like
rudder-sdk-python's: identify traits in `context.traits`, anonymous browsing before identify,
carts with adds and removes, orders, and Mandrill webhook events turned into track events.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

STREAMS = ("tracks", "identifies", "pages", "screens", "groups", "aliases", "merges")

COMMON_COLUMNS: list[tuple[str, str]] = [
    ("message_id", "varchar"),
    ("type", "varchar"),
    ("anonymous_id", "varchar"),
    ("user_id", "varchar"),
    ("channel", "varchar"),
    ("original_timestamp", "timestamp"),
    ("sent_at", "timestamp"),
    ("received_at", "timestamp"),
    ("timestamp", "timestamp"),
    ("request_ip", "varchar"),
    ("context_ip", "varchar"),
    ("context_user_agent", "varchar"),
    ("context_page_url", "varchar"),
    ("context_locale", "varchar"),
    ("context_timezone", "varchar"),
    ("context_library_name", "varchar"),
    ("context_library_version", "varchar"),
    ("context", "json"),
    ("_spool_key", "varchar"),
    ("_spool_line", "integer"),
]

STREAM_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "tracks": [("event", "varchar"), ("properties", "json")],
    "identifies": [("traits", "json")],
    "pages": [("name", "varchar"), ("category", "varchar"), ("properties", "json")],
    "screens": [("name", "varchar"), ("category", "varchar"), ("properties", "json")],
    "groups": [("group_id", "varchar"), ("traits", "json")],
    "aliases": [("previous_id", "varchar")],
    "merges": [
        ("merge_property_1_type", "varchar"),
        ("merge_property_1_value", "varchar"),
        ("merge_property_2_type", "varchar"),
        ("merge_property_2_value", "varchar"),
    ],
}

LEDGER_COLUMNS: list[tuple[str, str]] = [
    ("trigger_id", "varchar primary key"),
    ("campaign", "varchar"),
    ("user_id", "varchar"),
    ("email", "varchar"),
    ("variant", "varchar"),
    ("template", "varchar"),
    ("state", "varchar"),
    ("reject_reason", "varchar"),
    ("error", "varchar"),
    ("mandrill_id", "varchar"),
    ("attempts", "integer"),
    ("created_at", "timestamp"),
    ("updated_at", "timestamp"),
    ("sent_at", "timestamp"),
]

JSON_COLUMNS = {"context", "properties", "traits"}


def columns(stream: str) -> list[tuple[str, str]]:
    """Columns of one raw stream table in contract order."""
    return COMMON_COLUMNS + STREAM_COLUMNS[stream]


def _sql_type(sql_type: str, dialect: str) -> str:
    if dialect == "spark":
        # JSON is text on Spark, as its loaders write it
        return {"varchar": "string", "json": "string", "integer": "int"}.get(sql_type, sql_type)
    if sql_type == "json":
        return "jsonb" if dialect == "postgres" else "json"
    return sql_type


def create_raw_tables(conn: Any, dialect: str, schema: str = "rudderstack_raw") -> None:
    """Create every raw stream table, as the loader would, without a primary key.

    No key on purpose: append-mode loaders duplicate messages and staging must cope. On
    PostgreSQL each table gets the indexes target-postgres-bulk makes (its `indexed_columns`:
    `received_at`, and `event` where there is one), which the staging models' incremental
    reads use.
    `conn` is a duckdb connection, a psycopg connection (autocommit) or a
    testkit.spark.SparkConnection (Iceberg tables).
    """
    conn.execute(f'create schema if not exists "{schema}"')
    using = " using iceberg" if dialect == "spark" else ""
    for stream in STREAMS:
        ddl = ", ".join(f'"{name}" {_sql_type(kind, dialect)}' for name, kind in columns(stream))
        conn.execute(f'create table if not exists "{schema}"."{stream}" ({ddl}){using}')
        if dialect == "postgres":
            names = {name for name, _ in columns(stream)}
            for column in ("received_at", "event"):
                if column in names:
                    conn.execute(
                        f'create index if not exists "{stream}__{column}"'
                        f' on "{schema}"."{stream}" ({column})'
                    )


def create_ledger(conn: Any, schema: str = "signalmail_ledger") -> None:
    """Create the send ledger (contracts.md section 5) as the email target would."""
    conn.execute(f'create schema if not exists "{schema}"')
    ddl = ", ".join(f'"{name}" {kind}' for name, kind in LEDGER_COLUMNS)
    conn.execute(f'create table if not exists "{schema}"."send_ledger" ({ddl})')


def insert_ledger_rows(
    conn: Any, rows: Iterable[dict[str, Any]], schema: str = "signalmail_ledger"
) -> None:
    """Insert ledger rows given as dicts (missing columns are null)."""
    names = [name for name, _ in LEDGER_COLUMNS]
    placeholder = "?" if isinstance(conn, duckdb.DuckDBPyConnection) else "%s"
    sql = (
        f'insert into "{schema}"."send_ledger" ({", ".join(names)}) '
        f"values ({', '.join([placeholder] * len(names))})"
    )
    for row in rows:
        conn.execute(sql, [row.get(name) for name in names])


# -- events ------------------------------------------------------------------------------------


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class EventFactory:
    """Builds RudderStack events; message ids are deterministic from a seed and a counter."""

    seed: str = "signals"
    counter: int = 0
    default_timezone: str = "Europe/Berlin"

    def _message_id(self) -> str:
        self.counter += 1
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.seed}/{self.counter}"))

    def _base(
        self,
        kind: str,
        at: datetime,
        *,
        user_id: str | None,
        anonymous_id: str | None,
        received_delay: timedelta = timedelta(seconds=1),
        timezone: str | None = None,
        context_traits: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        context: dict[str, Any] = {
            "library": {"name": "analytics-python", "version": "2.1.9"},
            "ip": "203.0.113.7",
            "locale": "en-US",
            "timezone": timezone or self.default_timezone,
            "page": {"url": "https://shop.example/"},
            "userAgent": "Mozilla/5.0",
        }
        if context_traits is not None:
            context["traits"] = context_traits
        return {
            "messageId": self._message_id(),
            "type": kind,
            "userId": user_id,
            "anonymousId": anonymous_id,
            "channel": "server",
            "originalTimestamp": _ts(at),
            "sentAt": _ts(at),
            "timestamp": _ts(at),
            "receivedAt": _ts(at + received_delay),
            "context": context,
        }

    def track(
        self,
        event: str,
        at: datetime,
        properties: dict[str, Any],
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Build a track call."""
        payload = self._base("track", at, user_id=user_id, anonymous_id=anonymous_id, **kwargs)
        payload.update(event=event, properties=properties)
        return payload

    def identify(
        self,
        at: datetime,
        user_id: str,
        traits: dict[str, Any],
        *,
        anonymous_id: str | None = None,
        top_level: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Build an identify call; like rudder-sdk-python, traits go to context.traits."""
        payload = self._base(
            "identify",
            at,
            user_id=user_id,
            anonymous_id=anonymous_id,
            context_traits=None if top_level else traits,
            **kwargs,
        )
        payload["traits"] = traits if top_level else {}
        return payload

    def page(
        self,
        at: datetime,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Build a page call."""
        payload = self._base("page", at, user_id=user_id, anonymous_id=anonymous_id, **kwargs)
        payload.update(name="Home", properties={"url": "https://shop.example/"})
        return payload

    def alias(self, at: datetime, previous_id: str, user_id: str) -> dict[str, Any]:
        """Build an alias call."""
        payload = self._base("alias", at, user_id=user_id, anonymous_id=None)
        payload["previousId"] = previous_id
        return payload


def product(
    product_id: str,
    *,
    price: float = 20.0,
    quantity: int = 1,
    brand: str = "Acme",
    category: str = "Shoes",
) -> dict[str, Any]:
    """Build a products[] item as the e-commerce spec describes it."""
    return {
        "product_id": product_id,
        "sku": f"SKU-{product_id}",
        "name": f"Product {product_id}",
        "brand": brand,
        "category": category,
        "price": price,
        "quantity": quantity,
        "url": f"https://shop.example/p/{product_id}",
        "image_url": f"https://cdn.shop.example/{product_id}.jpg",
    }


def mandrill_event(
    factory: EventFactory,
    event: str,
    at: datetime,
    *,
    email: str,
    user_id: str | None,
    trigger_id: str | None = None,
    campaign: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build a Mandrill webhook event as the collector turns it into a track (contracts s.2)."""
    anonymous_id = (
        None
        if user_id
        else "mandrill:" + hashlib.sha1(email.lower().encode(), usedforsecurity=False).hexdigest()
    )
    properties = {
        "trigger_id": trigger_id,
        "campaign": campaign,
        "variant": "a",
        "mandrill_id": f"m-{trigger_id}",
        "email": email,
        **extra,
    }
    track = factory.track(event, at, properties, user_id=user_id, anonymous_id=anonymous_id)
    # the collector's webhook route stamps its events so; no other route may (docs/collector.md)
    track["context"]["library"] = {"name": "signalmail-mandrill-webhook", "version": "1"}
    return track


# -- rows --------------------------------------------------------------------------------------


def _parse(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.strptime(value.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")


_STREAM_OF_TYPE = {
    "track": "tracks",
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}


def to_row(
    event: dict[str, Any], spool_key: str = "fixture", spool_line: int = 0
) -> tuple[str, dict[str, Any]]:
    """Flatten one event the way tap-rudderstack does: (stream, row dict keyed by column)."""
    stream = _STREAM_OF_TYPE[event["type"]]
    context = event.get("context") or {}
    row: dict[str, Any] = {
        "message_id": event.get("messageId"),
        "type": event["type"],
        "anonymous_id": event.get("anonymousId"),
        "user_id": event.get("userId"),
        "channel": event.get("channel"),
        "original_timestamp": _parse(event.get("originalTimestamp")),
        "sent_at": _parse(event.get("sentAt")),
        "received_at": _parse(event.get("receivedAt")),
        "timestamp": _parse(event.get("timestamp")),
        "request_ip": context.get("ip"),
        "context_ip": context.get("ip"),
        "context_user_agent": context.get("userAgent"),
        "context_page_url": (context.get("page") or {}).get("url"),
        "context_locale": context.get("locale"),
        "context_timezone": context.get("timezone"),
        "context_library_name": (context.get("library") or {}).get("name"),
        "context_library_version": (context.get("library") or {}).get("version"),
        "context": context,
        "_spool_key": spool_key,
        "_spool_line": spool_line,
    }
    if stream == "tracks":
        row.update(event=event.get("event"), properties=event.get("properties") or {})
    elif stream == "identifies":
        row["traits"] = event.get("traits") or {}
    elif stream in ("pages", "screens"):
        row.update(
            name=event.get("name"),
            category=event.get("category"),
            properties=event.get("properties") or {},
        )
    elif stream == "groups":
        row.update(group_id=event.get("groupId"), traits=event.get("traits") or {})
    elif stream == "aliases":
        row["previous_id"] = event.get("previousId")
    return stream, row


def load_events(
    conn: Any,
    dialect: str,
    events: Iterable[dict[str, Any]],
    schema: str = "rudderstack_raw",
    spool_key: str = "fixture",
) -> int:
    """Append events to the raw tables in bulk (COPY); returns the number of rows written.

    DuckDB reads a CSV file written here; Postgres streams rows through COPY FROM STDIN;
    Spark inserts them from a DataFrame of text, cast in SQL.
    """
    by_stream: dict[str, list[dict[str, Any]]] = {}
    count = 0
    for line, event in enumerate(events):
        stream, row = to_row(event, spool_key=spool_key, spool_line=line)
        by_stream.setdefault(stream, []).append(row)
        count += 1
    for stream, rows in by_stream.items():
        names = [name for name, _ in columns(stream)]
        if dialect == "postgres":
            quoted = ", ".join(f'"{name}"' for name in names)
            with (
                conn.cursor() as cursor,
                cursor.copy(f'copy "{schema}"."{stream}" ({quoted}) from stdin') as copy,
            ):
                for row in rows:
                    copy.write_row([_copy_value(name, row.get(name)) for name in names])
        elif dialect == "spark":
            _spark_insert(conn, schema, stream, names, rows)
        else:
            _duckdb_copy(conn, schema, stream, names, rows)
    return count


def _copy_value(name: str, value: Any) -> Any:
    if name in JSON_COLUMNS and value is not None:
        return json.dumps(value)
    return value


def _duckdb_copy(
    conn: Any, schema: str, stream: str, names: list[str], rows: list[dict[str, Any]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{stream}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            for row in rows:
                out = []
                for name in names:
                    value = _copy_value(name, row.get(name))
                    if value is None:
                        out.append("\\N")
                    elif isinstance(value, datetime):
                        out.append(value.isoformat(sep=" "))
                    else:
                        out.append(value)
                writer.writerow(out)
        quoted = ", ".join(f'"{name}"' for name in names)
        conn.execute(
            f'insert into "{schema}"."{stream}" ({quoted}) '
            "select * from read_csv(?, header = false, "
            f"nullstr = '\\N', quote = '\"', escape = '\"', all_varchar = true, "
            f"columns = {{{', '.join(repr(n) + ': ' + repr('VARCHAR') for n in names)}}})",
            [str(path)],
        )


def _spark_insert(
    conn: Any, schema: str, stream: str, names: list[str], rows: list[dict[str, Any]]
) -> None:
    # every value as text, cast by Spark: a naive datetime handed to createDataFrame would be
    # read in the process's time zone
    text_rows = []
    for row in rows:
        out: list[str | None] = []
        for name in names:
            value = _copy_value(name, row.get(name))
            if value is None:
                out.append(None)
            elif isinstance(value, datetime):
                out.append(value.isoformat(sep=" "))
            else:
                out.append(str(value))
        text_rows.append(out)
    frame = conn.session.createDataFrame(text_rows, ", ".join(f"`{n}` string" for n in names))
    frame.createOrReplaceTempView("signalmail_raw_rows")
    types = dict(columns(stream))
    selected = ", ".join(f"cast(`{n}` as {_sql_type(types[n], 'spark')})" for n in names)
    conn.execute(f'insert into "{schema}"."{stream}" select {selected} from signalmail_raw_rows')


# -- synthetic traffic -------------------------------------------------------------------------


@dataclass
class Traffic:
    """Seeded synthetic storefront traffic: sessions of browsing, carts and orders.

    Products follow a Zipf-like popularity, so a few bestsellers appear in most orders: the
    recommendations must not simply return them to everyone.
    """

    start: datetime
    end: datetime
    users: int = 200
    products: int = 60
    seed: int = 7
    factory: EventFactory = field(default_factory=lambda: EventFactory(seed="traffic"))
    _orders: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - reproducible traffic, not secrets
        self.catalogue = [
            product(
                f"P{index:04d}",
                price=round(5 + (index * 37 % 95), 2),
                brand=f"Brand{index % 7}",
                category=f"Category{index % 5}",
            )
            for index in range(self.products)
        ]
        self.weights = [1.0 / (rank + 1) for rank in range(self.products)]
        self.identified: set[str] = set()

    def _pick(self) -> dict[str, Any]:
        return self.rng.choices(self.catalogue, weights=self.weights)[0]

    def _related(self, seed_product: dict[str, Any]) -> dict[str, Any]:
        # same category neighbours are browsed together more often than chance
        index = int(seed_product["product_id"][1:])
        neighbour = (index + self.rng.choice((5, 10, 15))) % self.products
        return self.catalogue[neighbour]

    def session(self, at: datetime) -> list[dict[str, Any]]:
        """One shopper session (5-20 events)."""
        rng, f = self.rng, self.factory
        number = rng.randrange(self.users)
        user_id, anonymous_id = f"user-{number}", f"anon-{number}"
        tz = rng.choice(["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Not/AZone"])
        known = user_id in self.identified
        ids = {"user_id": user_id if known else None, "anonymous_id": anonymous_id, "timezone": tz}
        events = [f.page(at, **ids)]
        clock = at
        cart_id = f"cart-{number}-{at:%Y%m%d}"

        def tick() -> datetime:
            nonlocal clock
            clock += timedelta(seconds=rng.randrange(20, 240))
            return clock

        if rng.random() < 0.3:
            events.append(
                f.track(
                    "Products Searched",
                    tick(),
                    {"query": rng.choice(["boots", "red shoes", "bag"])},
                    **ids,
                )
            )
        seed_product = self._pick()
        for _ in range(rng.randrange(1, 6)):
            item = seed_product if rng.random() < 0.5 else self._related(seed_product)
            events.append(f.track("Product Viewed", tick(), dict(item, quantity=None), **ids))
            if rng.random() < 0.5:  # time on content: the page's engagement ping
                ping = {
                    "page_view_id": f"pv-{rng.getrandbits(64):016x}",
                    "engaged_seconds": rng.randrange(1, 31),
                    "heartbeat_seconds": 30,
                    "product_id": item["product_id"],
                    "category": item.get("category"),
                }
                at_ping = clock + timedelta(seconds=rng.randrange(1, 20))
                events.append(f.track("Page Engaged", at_ping, ping, **ids))
        if not known and rng.random() < 0.5:
            self.identified.add(user_id)
            traits = {
                "email": f"{user_id}@example.com",
                "first_name": f"Name{number}",
                "timezone": tz,
                "email_opt_in": rng.random() < 0.8,
            }
            events.append(
                f.identify(tick(), user_id, traits, anonymous_id=anonymous_id, timezone=tz)
            )
            ids["user_id"] = user_id
        if rng.random() < 0.4:
            added = [seed_product, self._related(seed_product)]
            for item in added:
                events.append(f.track("Product Added", tick(), dict(item, cart_id=cart_id), **ids))
            if rng.random() < 0.3:
                events.append(
                    f.track("Product Removed", tick(), dict(added[1], cart_id=cart_id), **ids)
                )
                added = added[:1]
            if rng.random() < 0.5:
                self._orders += 1
                order_id = f"order-{self.seed}-{self._orders}"
                total = sum(item["price"] for item in added)
                events.append(
                    f.track(
                        "Order Completed",
                        tick(),
                        {
                            "order_id": order_id,
                            "cart_id": cart_id,
                            "total": total,
                            "revenue": total,
                            "currency": "EUR",
                            "products": added,
                        },
                        **ids,
                    )
                )
        return events

    def events(self, count: int) -> Iterator[dict[str, Any]]:
        """About `count` events spread evenly between start and end, in time order."""
        produced = 0
        span = (self.end - self.start).total_seconds()
        while produced < count:
            at = self.start + timedelta(seconds=span * produced / max(count, 1))
            for event in self.session(at):
                if produced >= count:
                    return
                produced += 1
                yield event
