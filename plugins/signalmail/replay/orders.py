"""Grouping purchase rows into one Order Completed per order, in bounded memory.

Both data sets record a purchase as one row per product. The e-commerce spec wants one
`Order Completed` with `products[]`, so rows of one order (REES46: same session; Retailrocket:
same transactionid) are held until no row for that order has arrived for `window_s` seconds of
event time, then emitted. "Time" is the watermark, the latest event time read so far: the files
are close to time-ordered, not exactly (Retailrocket's events.csv jumps back 48 minutes in its
first three rows), and an order judged by its own rows' times would close the moment a row
older than the watermark arrived, splitting it. Open orders stay few; a hard cap (`max_open`)
closes the oldest early rather than growing without bound on a pathological file, at the price
of splitting that order in two (each part is still a valid order event, but the warehouse keeps
one report per order id). Both kinds of split are counted.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = uuid.UUID("6f1d1a3e-4d2b-4c53-9a8e-5f0c2b7d9e41")
_NS_BYTES = NAMESPACE.bytes


def message_id(*parts: object) -> str:
    r"""Return a deterministic messageId: replaying the same rows yields the same ids (deduped).

    Exactly `uuid.uuid5(NAMESPACE, "\x1f".join(parts))`, formatted without building a UUID
    object: this runs twice per row, and `uuid.uuid5` is most of a row's cost on big files.
    """
    name = "\x1f".join(map(str, parts)).encode()
    h = hashlib.sha1(_NS_BYTES + name, usedforsecurity=False).hexdigest()
    variant = "89ab"[int(h[16], 16) & 0x3]
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


@dataclass(slots=True)
class OpenOrder:
    """Purchase rows of one order seen so far."""

    key: str
    first_line: int
    first_ts: float
    last_ts: float
    template: dict[str, Any]  # ids and context of the first row's event
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the watermark when a row of it last arrived: it closes `window_s` after that
    last_seen: float = float("-inf")


class OrderGrouper:
    """Collects purchase rows per order key and hands back finished orders as events."""

    def __init__(
        self,
        build: Callable[[OpenOrder], dict[str, Any]],
        window_s: float = 300.0,
        max_open: int = 10_000,
    ) -> None:
        self.build = build
        self.window_s = window_s
        self.max_open = max_open
        self.open: OrderedDict[str, OpenOrder] = OrderedDict()
        self.watermark = float("-inf")
        #: orders closed early by the cap, and orders whose row came after they had closed
        self.split_orders = 0
        self.late_split_orders = 0
        self._closed: OrderedDict[str, None] = OrderedDict()  # recent keys, to count the latter

    def add(
        self, key: str, line_no: int, ts: float, product: dict[str, Any], template: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Add one purchase row; returns orders that closed because time moved on."""
        self.watermark = max(self.watermark, ts)
        order = self.open.get(key)
        if order is None:
            if key in self._closed:
                self.late_split_orders += 1
            order = OpenOrder(key, line_no, ts, ts, template)
            self.open[key] = order
        else:
            self.open.move_to_end(key)
            order.last_ts = max(order.last_ts, ts)
        order.last_seen = self.watermark
        existing = order.lines.get(product["product_id"])
        if existing is None:
            order.lines[product["product_id"]] = product
        else:
            existing["quantity"] += product.get("quantity", 1)
        closed = self.advance(ts)
        while len(self.open) > self.max_open:
            self.split_orders += 1
            closed.append(self._close(remember=False))  # counted as a split already
        return closed

    def _close(self, remember: bool = True) -> dict[str, Any]:
        """Close the order touched longest ago; remember its key for a while if it was idle."""
        order = self.open.popitem(last=False)[1]
        if remember:
            self._closed[order.key] = None
            if len(self._closed) > 10 * self.max_open:
                self._closed.popitem(last=False)
        return self.build(order)

    def advance(self, ts: float) -> list[dict[str, Any]]:
        """Move event time to `ts`; returns orders idle for longer than the window."""
        self.watermark = max(self.watermark, ts)
        closed = []
        while self.open:
            oldest = next(iter(self.open.values()))
            if oldest.last_seen + self.window_s >= self.watermark:
                break
            closed.append(self._close())
        return closed

    def drain(self) -> list[dict[str, Any]]:
        """Close every open order (end of input)."""
        closed = [self.build(order) for order in self.open.values()]
        self.open.clear()
        return closed
