"""RudderStack's JavaScript SDK in a real browser, sending to the collector from another origin.

A small storefront page (served from its own port, so every call is cross-origin and needs the
collector's CORS answers) loads the SDK that `make browser` installs from the npm registry
(`tests/browser_sdk`, `@rudderstack/analytics-js`, MIT) in headless Chromium, and sends a page,
an identify and a track: once through XHR (the default) and once through `navigator.sendBeacon`
(`useBeacon`). The source configuration, which the SDK would fetch from RudderStack's control
plane, is given inline (`getSourceConfig`): nothing leaves 127.0.0.1.

Every event must land in the spool once, with the fields rudder-server would give it.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from signalmail.collector.ingest import rudder_id

from tests.helpers import REPO_ROOT
from tests.helpers.browser import ARGS, CHROMIUM
from tests.helpers.collector import WRITE_KEY, serve

pytestmark = pytest.mark.slow

SDK = (
    REPO_ROOT / "tests/browser_sdk/node_modules/@rudderstack/analytics-js"
    / "dist/npm/modern/bundled/umd/index.js"
)  # fmt: skip

PAGE = """<!doctype html>
<html><head><title>Shop</title><script src="/sdk.js"></script></head><body>
<h1>Shoes</h1>
<script>
const analytics = new rudderanalytics.RudderAnalytics();
analytics.load(%(write_key)s, %(data_plane)s, {
  getSourceConfig: () => ({source: {id: "shop", name: "shop", workspaceId: "w", enabled: true,
                                    config: {}, destinations: []}}),
  useBeacon: %(beacon)s,
  beaconQueueOptions: {flushQueueInterval: 200},
});
analytics.page("Catalog", "Shoes", {path: "/shoes"});
analytics.identify("u-1", {email: "ann@example.com", email_opt_in: true});
analytics.track("Product Added", {product_id: "p1", price: 59, cart_id: "c1"});
</script></body></html>
"""


@contextlib.contextmanager
def storefront(root: Path, data_plane: str, beacon: bool) -> Iterator[str]:
    """Serve the page and the SDK from `root` on a port of its own; yields the page URL."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sdk.js").write_bytes(SDK.read_bytes())
    (root / "index.html").write_text(
        PAGE % {"write_key": json.dumps(WRITE_KEY), "data_plane": json.dumps(data_plane),
                "beacon": json.dumps(beacon)},
        encoding="utf-8",
    )  # fmt: skip

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("beacon", [False, True], ids=["xhr", "beacon"])
def test_the_browser_sdk_lands_every_event_once_as_rudder_server_would(tmp_path, beacon):
    if not SDK.exists():
        pytest.skip("RudderStack's JavaScript SDK is not installed (make browser installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with (
        serve(tmp_path / "spool") as collector,
        storefront(tmp_path / "site", collector.url, beacon) as url,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            answers: list[dict[str, str]] = []
            page.on(
                "response",
                lambda r: answers.append(r.headers) if r.url.startswith(collector.url) else None,
            )
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            if beacon:  # the beacon queue flushes on its timer, and on leaving the page
                page.wait_for_function("document.readyState === 'complete'")
            # wait_for_timeout, not a sleep: Playwright delivers the page's events while it waits
            deadline = time.monotonic() + 30
            while len(collector.events()) < 3 or (not beacon and len(answers) < 3):
                assert time.monotonic() < deadline, f"{len(collector.events())} events landed"
                page.wait_for_timeout(100)
            page.goto("about:blank")
        finally:
            browser.close()
        events = collector.events()

    assert errors == []
    # With XHR the SDK sends each event in a request of its own, so they may land in any order.
    by_type = {e["type"]: e for e in events}
    assert sorted(e["type"] for e in events) == ["identify", "page", "track"]
    assert len({e["messageId"] for e in events}) == 3  # each once
    origin = url.rsplit("/", 1)[0]
    if not beacon:  # a beacon's answer never reaches the page (nor needs CORS)
        assert answers, "no answer from the collector reached the page"
    for headers in answers:  # the browser read them: CORS let it
        assert headers["access-control-allow-origin"] == origin
        assert headers["access-control-allow-credentials"] == "true"
    anonymous = {e["anonymousId"] for e in events}
    assert len(anonymous) == 1  # one browser, one anonymous id
    for event in events:
        assert event["context"]["library"]["name"] == "RudderLabs JavaScript SDK"
        assert event["rudderId"] == rudder_id(event.get("userId"), event["anonymousId"])
        assert uuid.UUID(event["rudderId"]).version == 4
        assert event["request_ip"] == "127.0.0.1"
        # the JavaScript SDK sends originalTimestamp and sentAt, not timestamp: rudder-server
        # corrects the client's clock skew from them
        assert event["originalTimestamp"] <= event["sentAt"]
        assert event["timestamp"] <= event["receivedAt"]
    page_event, identify, track = by_type["page"], by_type["identify"], by_type["track"]
    assert page_event["name"] == "Shoes"
    assert page_event["properties"]["path"] == "/shoes"
    assert identify["userId"] == "u-1"
    assert identify["context"]["traits"]["email"] == "ann@example.com"
    assert (track["event"], track["userId"]) == ("Product Added", "u-1")
    assert track["properties"] == {"product_id": "p1", "price": 59, "cart_id": "c1"}
