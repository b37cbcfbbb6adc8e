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

from tests.helpers.browser import ARGS, CHROMIUM
from tests.helpers.collector import WRITE_KEY, serve
from tests.helpers.servers import port_open, wait_until

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def running_shop(data_plane: str, **engagement: float) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = ShopSettings(data_plane, WRITE_KEY, **engagement)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started and port_open(port), what="storefront listening")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def actions(events: list[dict]) -> list[dict]:
    """The shopper's actions: everything but time-on-content pings (their own test below)."""
    return [e for e in events if e.get("event") != "Page Engaged"]


NO_RANDOM_UUID = "Object.defineProperty(Crypto.prototype, 'randomUUID', {value: undefined})"


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
            # as over plain http from another machine: no crypto.randomUUID (secure contexts only)
            page.add_init_script(NO_RANDOM_UUID)
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
            # the cart again, now empty (a stale tab): no order button, and no order of nothing
            page.click("#cart-link")
            page.wait_for_load_state("load")
            assert page.locator("#checkout").is_hidden()
            page.evaluate("checkout()")
            deadline = time.monotonic() + 30  # Playwright delivers requests while it waits
            while len(actions(collector.events())) < 13:
                assert time.monotonic() < deadline, [e.get("event") for e in collector.events()]
                page.wait_for_timeout(100)
        finally:
            browser.close()
        events = actions(collector.events())

    assert errors == []
    kinds = Counter(e.get("event") or e["type"] for e in events)
    assert kinds == Counter({
        "page": 6, "Products Searched": 1, "Product Viewed": 1, "Product Added": 1,
        "identify": 1, "Cart Viewed": 2, "Checkout Started": 1, "Order Completed": 1,
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


def test_time_on_a_product_page_arrives_as_engaged_seconds(tmp_path):
    """An active shopper on a product page: a `Page Engaged` ping per heartbeat of engaged time."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with (
        serve(tmp_path) as collector,
        running_shop(
            collector.url, heartbeat_seconds=2, min_visit_seconds=1, active_window_seconds=5
        ) as shop,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(shop + "/")
            page.locator(".card a").first.click()
            page.wait_for_load_state("load")
            product_id = page.url.rsplit("/", 1)[1]
            deadline = time.monotonic() + 30
            x = 0
            while len(pings(collector.events())) < 3:  # reading: the mouse keeps moving
                assert time.monotonic() < deadline, collector.events()
                x = (x + 37) % 500
                page.mouse.move(50 + x, 200)
                page.wait_for_timeout(200)
        finally:
            browser.close()
        found = pings(collector.events())

    assert len({p["properties"]["page_view_id"] for p in found}) == 1  # one page load
    for ping in found:
        props = ping["properties"]
        assert props["product_id"] == product_id
        assert props["heartbeat_seconds"] == 2
        assert 1 <= props["engaged_seconds"] <= 2  # one heartbeat at most per ping
        assert props["category"]
    assert len({p["messageId"] for p in found}) == len(found)


def pings(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("event") == "Page Engaged"]
