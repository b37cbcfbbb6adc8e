"""What the REES46 and Retailrocket converters share.

Both turn one CSV row at a time into RudderStack events, build product URLs from templates, may
shift every time by a fixed offset, and group purchase rows into Order Completed events through a
bounded OrderGrouper. Each data set supplies its row parsing (`convert`) and its order event.
"""

from __future__ import annotations

from typing import Any

from signalmail.replay.orders import OpenOrder, OrderGrouper
from signalmail.replay.source import RowError

DEFAULT_URL_TEMPLATE = "https://shop.example.com/products/{product_id}"
DEFAULT_IMAGE_TEMPLATE = "https://cdn.shop.example.com/img/{product_id}.jpg"


class Converter:
    """Stateful row -> events converter (state: open orders only, bounded)."""

    #: cells a well-formed row has
    columns: int
    #: data set name, part of every derived id
    dataset: str

    def __init__(
        self,
        url_template: str = DEFAULT_URL_TEMPLATE,
        image_template: str = DEFAULT_IMAGE_TEMPLATE,
        shift_s: float = 0.0,
        order_window_s: float = 300.0,
        max_open_orders: int = 10_000,
    ) -> None:
        self.url_template = url_template
        self.image_template = image_template
        self.shift_s = shift_s
        self.orders = OrderGrouper(self._order_event, order_window_s, max_open_orders)

    def check_columns(self, row: list[str]) -> None:
        """Refuse a row with the wrong number of cells before any of it is read."""
        if len(row) != self.columns:
            raise RowError(f"expected {self.columns} columns, got {len(row)}")

    def convert(self, line: int, row: list[str]) -> list[dict[str, Any]]:
        """Events for one row (often one, sometimes none or several); raises RowError if bad."""
        raise NotImplementedError

    def finish(self) -> list[dict[str, Any]]:
        """Orders still open at the end of the input."""
        return self.orders.drain()

    def _order_event(self, order: OpenOrder) -> dict[str, Any]:
        raise NotImplementedError
