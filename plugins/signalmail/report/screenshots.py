"""PNGs of the sent emails, as headless Chromium paints them 600 px wide (the report's gallery).

Drives Debian's `chromium` through Playwright (a dev dependency: `pip install playwright`; its
own browser downloads are not used). Requests to other hosts (the shop's image CDN) are
answered with a light grey pixel, so a gallery built offline shows each image as a grey box of
its size: the layout, not broken-image icons. Without Playwright or Chromium the report shows
the live HTML only and says why.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: where Debian's chromium package puts the browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: a 1x1 light grey (#e5e7eb) PNG, the answer to every request that leaves the page
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGN4+vw1AAVsArjSAflTAAAAAElFTkSuQmCC"
)
#: Chromium in a container: no sandbox (root), no GPU, none of its background traffic
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)  # fmt: skip
#: the width email clients lay messages out in
EMAIL_WIDTH = 600


def unavailable() -> str | None:
    """Say why no screenshot can be taken here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return "Chromium is not installed (apt-get install chromium)"
    return None


def screenshot_html(pages: Sequence[tuple[str, Path]], width: int = EMAIL_WIDTH) -> None:
    """Paint each (html, png path) pair full-page at `width` pixels, in one browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            # email clients run no script, so neither does the painting of one
            page = browser.new_page(
                viewport={"width": width, "height": 900}, java_script_enabled=False
            )
            page.route(leaves_page, offline)
            for html, png in pages:
                png.parent.mkdir(parents=True, exist_ok=True)
                page.set_content(html, wait_until="load")
                page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()


def file_name(campaign: str, index: int) -> str:
    """Name the PNG of a campaign's n-th email safely."""
    return f"{re.sub(r'[^a-z0-9_-]+', '-', campaign.lower())}-{index}.png"


def leaves_page(url: str) -> bool:
    """Match the requests to other hosts (a callable: Playwright's globs miss `https`)."""
    return url.startswith(("http://", "https://"))


def offline(route: Any) -> None:
    """Answer a request to another host with the grey pixel, never the network."""
    route.fulfill(status=200, content_type="image/png", body=PIXEL)
