"""Retailrocket `events.csv` rows as RudderStack events.

Columns: timestamp (epoch milliseconds), visitorid, event, itemid, transactionid. Mapping
(docs/simulate.md, "replay"):

| Retailrocket | RudderStack |
|---|---|
| view | track `Product Viewed` |
| addtocart | track `Product Added` (quantity 1, `cart_id` = `rr-<visitorid>`) |
| transaction rows sharing a transactionid | one track `Order Completed` |

An order's `order_id` is `rr-<transactionid>`, its `cart_id` `rr-<visitorid>`, and `products[]`
carries quantities.

Retailrocket visitors are cookies that never sign in, so events carry only an `anonymousId`
(a UUID derived from visitorid) and no `userId`. The data has no sessions, so each visitor has
one long-lived cart: an order closes it, and adds after the order reopen it (the cart models
compare order time with the cart's last activity). Item properties (price, category) live in a
separate, hashed file, so products carry ids, URL templates and no price; orders carry no total.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from signalmail.replay.converter import Converter
from signalmail.replay.orders import OpenOrder, message_id
from signalmail.replay.rees46 import device_id, iso
from signalmail.replay.source import RowError, is_decimal_id

EVENT_NAMES = {"view": "Product Viewed", "addtocart": "Product Added"}
KNOWN_TYPES = (*EVENT_NAMES, "transaction")
#: 2000-01-01 .. 2100-01-01 in ms: anything outside is a unit mix-up (seconds, microseconds)
MIN_MS, MAX_MS = 946_684_800_000, 4_102_444_800_000


class RetailrocketConverter(Converter):
    """Retailrocket rows -> RudderStack e-commerce events."""

    columns = 5
    dataset = "retailrocket"

    def convert(self, line: int, row: list[str]) -> list[dict[str, Any]]:
        """Events for one row; raises RowError if the row is malformed."""
        self.check_columns(row)
        timestamp, visitor, kind, item, transaction = (cell.strip() for cell in row)
        if not is_decimal_id(timestamp):
            raise RowError(f"bad timestamp: {timestamp[:40]!r} (epoch milliseconds expected)")
        millis = int(timestamp)
        if not MIN_MS <= millis < MAX_MS:
            raise RowError(f"bad timestamp: {millis} is not epoch milliseconds in 2000-2100")
        if not is_decimal_id(visitor):
            raise RowError(f"bad visitorid: {visitor[:40]!r}")
        if kind not in KNOWN_TYPES:
            raise RowError(f"unknown event: {kind[:40]!r} (expected {', '.join(KNOWN_TYPES)})")
        if not is_decimal_id(item):
            raise RowError(f"bad itemid: {item[:40]!r}")
        if kind == "transaction" and not is_decimal_id(transaction):
            raise RowError(f"transaction row without a numeric transactionid: {transaction[:40]!r}")
        if kind != "transaction" and transaction:
            raise RowError(f"transactionid on a {kind} row")
        ts = millis / 1000.0 + self.shift_s
        moment = datetime.fromtimestamp(ts, UTC)
        cart_id = f"rr-{visitor}"
        product: dict[str, Any] = {
            "product_id": item,
            "sku": item,
            "name": f"Item {item}",
            "url": self.url_template.format(product_id=item),
            "image_url": self.image_template.format(product_id=item),
        }
        event: dict[str, Any] = {
            "messageId": message_id(self.dataset, *row),
            "type": "track",
            "anonymousId": device_id(self.dataset, visitor),
            "originalTimestamp": iso(moment),
            "channel": "web",
            "context": {"replay": {"dataset": self.dataset, "line": line, "visitorid": visitor}},
        }
        if kind == "transaction":
            product["quantity"] = 1
            event["_cart_id"] = cart_id
            return self.orders.add(transaction, line, ts, product, event)
        closed = self.orders.advance(ts)
        if kind == "addtocart":
            product["quantity"] = 1
            product["cart_id"] = cart_id
        event["event"] = EVENT_NAMES[kind]
        event["properties"] = product
        closed.append(event)
        return closed

    def _order_event(self, order: OpenOrder) -> dict[str, Any]:
        event = dict(order.template)
        cart_id = event.pop("_cart_id")
        order_id = f"rr-{order.key}"
        event["messageId"] = message_id(self.dataset, "order", order_id, order.first_line)
        event["originalTimestamp"] = iso(datetime.fromtimestamp(order.last_ts, UTC))
        event["event"] = "Order Completed"
        event["properties"] = {
            "order_id": order_id,
            "cart_id": cart_id,
            "products": list(order.lines.values()),
        }
        return event
