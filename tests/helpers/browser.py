"""A real headless browser for the pages people look at (Debian's chromium via Playwright).

Playwright drives the system's Chromium (`/usr/bin/chromium`, Debian's package): its own browser
downloads are not reachable from here. Requests to other hosts get a grey pixel, so a page
renders offline with every image a grey box of its size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from signalmail.report.screenshots import CHROMIUM, CHROMIUM_ARGS, leaves_page, offline

ARGS = list(CHROMIUM_ARGS)


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
            page.route(leaves_page, offline)
            page.goto(url, wait_until="load")
            yield loaded
        finally:
            browser.close()
