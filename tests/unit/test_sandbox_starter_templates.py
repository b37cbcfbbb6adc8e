"""The starter templates in templates/mandrill render every campaign's payload as Mandrill would."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from signalmail.sandbox import handlebars

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGNS = sorted((ROOT / "templates" / "campaigns").glob("*.yml"))
PRODUCTS = [
    {
        "name": "Trail <Runner>",
        "url": "https://shop.example.com/p/1?c=red",
        "price": 89.5,
        "image_url": "https://img.example.com/1.jpg",
        "quantity": 2,
    },
    {
        "name": "Wool Socks",
        "url": "https://shop.example.com/p/2",
        "price": 12,
        "image_url": "",
        "quantity": 1,
    },
]
PAYLOAD = {
    "first_name": "Ann",
    "products": PRODUCTS,
    "recommendations": PRODUCTS[::-1],
    "cart_total": 191,
    "total": 191,
    "currency": "EUR",
    "search_term": "trail shoes",
    "order_id": "A-1001",
    "cart_url": "https://shop.example.com/cart/c-9",
}


def load(path: Path) -> tuple[dict, str]:
    campaign = yaml.safe_load(path.read_text())
    template = ROOT / "templates" / "mandrill" / f"{campaign['template']}.html"
    return campaign, template.read_text()


def merge_var_names(campaign: dict) -> set[str]:
    return {v if isinstance(v, str) else v["name"] for v in campaign.get("merge_vars", [])}


@pytest.mark.parametrize("path", CAMPAIGNS, ids=lambda p: p.stem)
def test_starter_template_fits_its_campaign(path):
    campaign, code = load(path)
    analysis = handlebars.analyze(code)
    assert analysis.variables <= merge_var_names(campaign), "template reads vars never sent"
    assert analysis.helpers <= set(handlebars.HELPERS)
    assert analysis.has_unsub
    regions = handlebars.mc_edit_regions(code)
    assert {"hero", "footer"} <= set(regions)
    assert {b["region"] for b in campaign.get("blocks", [])} <= set(regions)


@pytest.mark.parametrize("path", CAMPAIGNS, ids=lambda p: p.stem)
def test_starter_template_renders_payload_escaped_and_complete(path):
    campaign, code = load(path)
    options = handlebars.RenderOptions(unsub_link=lambda url: f"https://sandbox/unsub?u={url}")
    payload = {k: v for k, v in PAYLOAD.items() if k in merge_var_names(campaign)}
    html = handlebars.render(code, payload, options)
    assert "{{" not in html
    assert "}}" not in html
    assert "Ann" in html
    assert "Trail &lt;Runner&gt;" in html
    assert "Trail <Runner>" not in html
    assert "https://sandbox/unsub?u=https://shop.example.com/email/unsubscribed" in html
    # an empty payload still renders (no first name, no products): nothing crashes or leaks
    bare = handlebars.render(code, {}, options)
    assert "{{" not in bare
    assert "Trail" not in bare


def test_region_fill_replaces_default_content():
    _, code = load(ROOT / "templates" / "campaigns" / "cart_abandonment.yml")
    filled = handlebars.apply_mc_edit(code, {"cart_items": "<p>BLOCK</p>"})
    html = handlebars.render(filled, PAYLOAD)
    assert "<p>BLOCK</p>" in html
    assert "Wool Socks" not in html


@pytest.mark.parametrize("path", CAMPAIGNS, ids=lambda p: p.stem)
def test_a_product_without_url_or_price_shows_no_dead_link_or_dangling_separator(path):
    """The target drops a link it finds unsafe; the product still shows, unlinked."""
    campaign, code = load(path)
    bare = [{**p, "url": None, "price_display": None} for p in PRODUCTS]
    payload = {"products": bare, "recommendations": bare}
    payload = {k: v for k, v in payload.items() if k in merge_var_names(campaign)}
    html = handlebars.render(code, payload, handlebars.RenderOptions())
    assert "Wool Socks" in html
    assert 'href=""' not in html
    assert "&times; <" not in html
    assert "\u00d7 <" not in html
