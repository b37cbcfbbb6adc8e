"""REES46 "eCommerce behavior data from multi category store" rows as RudderStack events.

Columns: event_time,event_type,product_id,category_id,category_code,brand,price,user_id,
user_session; times like ``2019-10-01 00:00:02 UTC``. Mapping (docs/simulate.md, "replay"):

| REES46 | RudderStack |
|---|---|
| view | track `Product Viewed` |
| cart | track `Product Added` (quantity 1, `cart_id` = user_session) |
| remove_from_cart | track `Product Removed` (quantity 1, `cart_id` = user_session) |
| purchase rows of one session | one track `Order Completed` (see below) |

An order's `order_id` is `rees46-<session>-<epoch of its first purchase row>`, its `cart_id` the
session, `products[]` carries quantities, and total = revenue = sum of price x quantity.

Identity: `user_id` is REES46's permanent shopper id, so it becomes `userId` (`rees46-<id>`); the
device-level `anonymousId` is a UUID derived from it, and `context.sessionId` carries the session.
Product names and URLs are not in the data: name is brand + the last part of category_code,
url/image_url come from templates. messageIds are derived from the row's content, so replaying a
file twice (or overlapping slices) does not double count once deduplicated.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from signalmail.replay.converter import Converter
from signalmail.replay.orders import OpenOrder, message_id
from signalmail.replay.source import RowError, is_decimal_id

EVENT_NAMES = {
    "view": "Product Viewed",
    "cart": "Product Added",
    "remove_from_cart": "Product Removed",
}
KNOWN_TYPES = (*EVENT_NAMES, "purchase")
CURRENCY = "USD"


@lru_cache(maxsize=65_536)
def device_id(dataset: str, shopper: str) -> str:
    """Return the anonymousId of a shopper's device (cached: shoppers repeat within minutes)."""
    return message_id(dataset, "device", shopper)


def parse_time(text: str) -> datetime:
    """`2019-10-01 00:00:02 UTC` (also accepts a trailing `Z`/offset-free ISO time as UTC)."""
    value = text.strip()
    if value.endswith(" UTC"):
        value = value[:-4]
    elif value.endswith("Z"):
        value = value[:-1]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise RowError(f"bad event_time: {text[:40]!r}") from None
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    return parsed.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Rees46Converter(Converter):
    """REES46 rows -> RudderStack e-commerce events."""

    columns = 9
    dataset = "rees46"

    def convert(self, line: int, row: list[str]) -> list[dict[str, Any]]:
        """Events for one row (often one, sometimes none or several); raises RowError if bad."""
        self.check_columns(row)
        (
            event_time,
            event_type,
            product_id,
            category_id,
            category_code,
            brand,
            price,
            user_id,
            session,
        ) = (cell.strip() for cell in row)
        if "\ufffd" in "".join(row):
            raise RowError("invalid UTF-8 in row")
        moment = parse_time(event_time)
        if self.shift_s:
            moment = datetime.fromtimestamp(moment.timestamp() + self.shift_s, UTC)
        if event_type not in KNOWN_TYPES:
            raise RowError(
                f"unknown event_type: {event_type[:40]!r} (expected {', '.join(KNOWN_TYPES)})"
            )
        if not is_decimal_id(product_id):
            raise RowError(f"bad product_id: {product_id[:40]!r}")
        if not is_decimal_id(user_id):
            raise RowError(f"bad user_id: {user_id[:40]!r}")
        try:
            amount = float(price)
        except ValueError:
            raise RowError(f"bad price: {price[:40]!r}") from None
        if not math.isfinite(amount) or amount < 0:
            raise RowError(f"bad price: {price[:40]!r}")
        if not session and event_type != "view":
            raise RowError(f"missing user_session on a {event_type} row (no cart to attach to)")

        category = category_code or None
        noun = category_code.rsplit(".", 1)[-1].replace("_", " ") if category_code else "item"
        product: dict[str, Any] = {
            "product_id": product_id,
            "sku": product_id,
            "name": f"{brand.title()} {noun}".strip() if brand else noun.capitalize(),
            "brand": brand or None,
            "category": category,
            "category_id": category_id or None,
            "price": amount,
            "url": self.url_template.format(product_id=product_id),
            "image_url": self.image_template.format(product_id=product_id),
        }
        stamp = iso(moment)
        event: dict[str, Any] = {
            "messageId": message_id(self.dataset, *row),
            "type": "track",
            "userId": f"rees46-{user_id}",
            "anonymousId": device_id(self.dataset, user_id),
            "originalTimestamp": stamp,
            "channel": "web",
            "context": {
                "sessionId": session or None,
                "replay": {"dataset": self.dataset, "line": line},
            },
        }
        ts = moment.timestamp()
        if event_type == "purchase":
            product["quantity"] = 1
            return self.orders.add(session, line, ts, product, event)
        closed = self.orders.advance(ts)
        if event_type == "view":
            product["currency"] = CURRENCY
        else:
            product["quantity"] = 1
            product["cart_id"] = session
        event["event"] = EVENT_NAMES[event_type]
        event["properties"] = product
        closed.append(event)
        return closed

    def _order_event(self, order: OpenOrder) -> dict[str, Any]:
        event = dict(order.template)
        order_id = f"rees46-{order.key}-{int(order.first_ts)}"
        lines = list(order.lines.values())
        total = round(sum(line["price"] * line["quantity"] for line in lines), 2)
        event["messageId"] = message_id(self.dataset, "order", order_id, order.first_line)
        event["originalTimestamp"] = iso(datetime.fromtimestamp(order.last_ts, UTC))
        event["event"] = "Order Completed"
        event["properties"] = {
            "order_id": order_id,
            "cart_id": order.key,
            "total": total,
            "revenue": total,
            "currency": CURRENCY,
            "products": lines,
        }
        return event
