"""A real headless browser for the pages people look at (Debian's chromium via Playwright).

Playwright drives the system's Chromium (`/usr/bin/chromium`, Debian's package): its own browser
downloads are not reachable from here. Requests to other hosts get a transparent pixel, so a
page renders the same offline as it would with the shop's image CDN reachable.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
# Chromium in a container: no sandbox (root), no GPU, and none of its background traffic
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@dataclass
class Page:
    """A loaded page and what went wrong while loading it."""

    page: Any
    script_errors: list[str] = field(default_factory=list)

    def screenshot(self, path: Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return path


@contextlib.contextmanager
def browser_page(url: str, height: int = 900, width: int = 1200) -> Iterator[Page]:
    """Open `url` in headless Chromium; yields the page once loaded.

    A tall `height` makes Chromium paint frames far down the page (sandboxed iframes are
    separate processes, painted only near the viewport).
    """
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            loaded = Page(page)
            page.on("pageerror", lambda error: loaded.script_errors.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    loaded.script_errors.append(message.text)
                    if message.type == "error" and "Failed to load resource" not in message.text
                    else None
                ),
            )
            page.route(
                "http*://**",
                lambda route: route.fulfill(status=200, content_type="image/png", body=PIXEL),
            )
            page.goto(url, wait_until="load")
            yield loaded
        finally:
            browser.close()
