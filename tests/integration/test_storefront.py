"""`signalmail storefront` clicked through in headless Chromium: every action lands once.

The shop (its own port) and the collector (another) run in this process; the browser browses a
category, searches, opens a product, adds it to the cart, signs up for email and orders. The
spool must then hold each of those e-commerce events once, shaped as a real shop sends them.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from signalmail.storefront.app import ShopSettings, create_app

from tests.browser import ARGS, CHROMIUM
from tests.collector_support import WRITE_KEY, serve
from tests.conftest import port_open, wait_until

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def running_shop(data_plane: str) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(ShopSettings(data_plane, WRITE_KEY)), log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started and port_open(port), what="storefront listening")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_shopper_clicks_through_and_every_action_lands_once(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with (
        serve(tmp_path) as collector,
        running_shop(collector.url) as shop,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(shop + "/")
            page.locator("header a[href^='/c/']").first.click()
            page.wait_for_load_state("load")
            page.fill("input[name=q]", "a")
            page.press("input[name=q]", "Enter")
            page.wait_for_load_state("load")
            page.locator(".card a").first.click()
            page.wait_for_load_state("load")
            product_name = page.locator("h1").inner_text()
            page.click("#add-to-cart")
            page.fill("input[name=first_name]", "Ann")
            page.fill("input[name=email]", "Ann@Example.com")
            page.check("input[name=email_opt_in]")
            page.click(".who button")
            page.click("#cart-link")
            page.wait_for_load_state("load")
            assert product_name in page.locator("#lines").inner_text()
            page.click("#checkout")
            page.locator("text=Thank you").wait_for()
            deadline = time.monotonic() + 30  # Playwright delivers requests while it waits
            while len(collector.events()) < 11:
                assert time.monotonic() < deadline, [e.get("event") for e in collector.events()]
                page.wait_for_timeout(100)
        finally:
            browser.close()
        events = collector.events()

    assert errors == []
    kinds = Counter(e.get("event") or e["type"] for e in events)
    assert kinds == Counter({
        "page": 5, "Products Searched": 1, "Product Viewed": 1, "Product Added": 1,
        "identify": 1, "Cart Viewed": 1, "Checkout Started": 1, "Order Completed": 1,
    })  # fmt: skip
    assert len({e["messageId"] for e in events}) == len(events)
    by_event = {e.get("event") or e["type"]: e for e in events}
    added, order = by_event["Product Added"], by_event["Order Completed"]
    assert added["properties"]["name"] == product_name
    assert added["properties"]["cart_id"] == order["properties"]["cart_id"]
    assert added["properties"]["url"].startswith(shop + "/p/")
    identify = by_event["identify"]
    assert identify["userId"] == "ann@example.com"
    assert identify["context"]["traits"]["email_opt_in"] is True
    assert order["userId"] == "ann@example.com"
    assert [p["product_id"] for p in order["properties"]["products"]] == [
        added["properties"]["product_id"]
    ]
    assert order["properties"]["currency"] == "USD"
    assert order["properties"]["revenue"] == added["properties"]["price"]
    assert len({e["anonymousId"] for e in events}) == 1  # one browser throughout
