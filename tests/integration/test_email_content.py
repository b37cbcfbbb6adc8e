"""What reaches the inbox: every campaign and variant, rendered, never shows a broken value.

The starter templates are pushed with `signalmail templates sync` into the sandbox, which
renders them as Mandrill does (handlebars merge, mc:edit regions filled with the target's Jinja2
blocks, `auto_text`). Each campaign gets triggers with three kinds of payload: complete, in the
shopper's locale; every optional field null (no currency, no prices, no quantity, no image, no
name); and nearly empty. Every stored message is then read back (messages/content) and opened in
headless Chromium at a phone-to-desktop email width of 600 px, with a PNG kept per kind under
`output/email-gallery/`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from signalmail.services import publish_starter_templates
from target_mailchimp_transactional.campaigns import load_campaigns

from tests.helpers import REPO_ROOT
from tests.helpers.browser import browser_page
from tests.helpers.mailchimp_target import (
    API_KEY,
    BLOCKS_DIR,
    CAMPAIGNS_DIR,
    ledger_rows,
    run_target,
    sandbox_messages,
    singer_lines,
    target_config,
    trigger,
)

pytestmark = pytest.mark.slow

run_sandbox = pytest.importorskip("signalmail.sandbox.testing").run_sandbox

#: Words a null or undefined value prints in Python, JSON and JavaScript, and raw merge tags.
BROKEN = re.compile(r"\b(None|null|undefined|NaN)\b|\{\{|\}\}|\*\|[A-Z_]+\|\*")
GALLERY = REPO_ROOT / "output" / "email-gallery"
PER_KIND = 8  # enough triggers that every A/B variant is drawn


def payload(kind: str, n: int) -> dict[str, Any]:
    if kind == "complete":
        return json.loads(trigger(n)["payload"])
    if kind == "nulls":
        product = {"product_id": f"p{n}", "name": None, "price": None, "quantity": None,
                   "url": None, "image_url": None}  # fmt: skip
        return {
            "products": [product, {"product_id": "p2", "name": "Tent", "price": 120}],
            "cart_total": None, "currency": None, "cart_url": None, "order_total": None,
            "recommendations": [{"name": "Socks", "price": None, "image_url": None, "url": None}],
            "order_id": f"o{n}", "search_term": None,
        }  # fmt: skip
    return {"order_id": f"o{n}", "recommendations": [{"name": "Socks"}]}


def rows() -> list[dict[str, Any]]:
    out = []
    for campaign in load_campaigns(CAMPAIGNS_DIR, BLOCKS_DIR):
        for kind in ("complete", "nulls", "sparse"):
            for n in range(PER_KIND):
                out.append(trigger(
                    f"{kind}-{n}", campaign,
                    payload=json.dumps(payload(kind, n)),
                    locale="de-DE" if kind == "complete" else None,
                    first_name=None if kind != "complete" else f"Änne{n}",
                ))  # fmt: skip
    return out


def test_every_campaign_and_variant_renders_without_a_broken_value(tmp_path):
    campaigns = load_campaigns(CAMPAIGNS_DIR, BLOCKS_DIR)
    with run_sandbox(tmp_path / "sandbox", api_keys=[API_KEY]) as sandbox:
        publish_starter_templates(REPO_ROOT, API_KEY, sandbox.api_host, tmp_path / "sync.json")
        cfg = target_config(sandbox, tmp_path)
        run_target(cfg, singer_lines(rows()))
        states = Counter(r["state"] for r in ledger_rows(cfg).values())
        messages = sandbox_messages(sandbox)
        client = sandbox.client(API_KEY)
        contents = {m["_id"]: client.messages.content({"id": m["_id"]}) for m in messages}

    assert set(states) <= {"sent", "queued"}, states
    drawn = {(m["metadata"]["campaign"], m["metadata"]["variant"]) for m in messages}
    assert drawn == {(c, v.name) for c, campaign in campaigns.items() for v in campaign.variants}

    GALLERY.mkdir(parents=True, exist_ok=True)
    shown: set[tuple[str, str, str]] = set()
    for message in messages:
        meta = message["metadata"]
        kind = meta["trigger_id"].split(":", 1)[1].split("-", 1)[0]
        content = contents[message["_id"]]
        html, text = content["html"], content["text"]
        where = f"{meta['trigger_id']} ({meta['variant']})"
        assert not BROKEN.search(html), f"{where}: {BROKEN.search(html)}"
        assert text.strip(), f"{where}: no plain-text part"
        assert not BROKEN.search(text), f"{where}: {BROKEN.search(text)}"
        if kind == "complete" and meta["campaign"] in ("cart_abandonment", "post_purchase"):
            assert "Total: 59,00\xa0€" in html, f"{where}: no total in the shopper's locale"
        key = (meta["campaign"], meta["variant"], kind)
        if key in shown:
            continue
        shown.add(key)
        check_in_browser(html, tmp_path, GALLERY / f"{'-'.join(key)}.png")
    assert len(shown) == len(drawn) * 3


def check_in_browser(html: str, tmp_path: Path, png: Path) -> None:
    """No image without alt text, nothing wider than 600 px, and a picture to look at."""
    page_file = tmp_path / "email.html"
    page_file.write_text(html, encoding="utf-8")
    with browser_page(page_file.as_uri(), height=1200, width=600) as loaded:
        page = loaded.page
        missing_alt = page.evaluate(
            "[...document.images].filter(i => !(i.getAttribute('alt') || '').trim()).length"
        )
        assert missing_alt == 0, f"{png.name}: {missing_alt} image(s) without alt text"
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= 600, f"{png.name}: layout {overflow} px wide"
        visible = page.locator("body").inner_text()
        assert not BROKEN.search(visible), f"{png.name}: {BROKEN.search(visible)}"
        loaded.screenshot(png)
