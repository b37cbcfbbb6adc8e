"""The storefront's pages: catalogue, category, product, search and cart (see the package doc).

Pages are server-rendered from the simulator's catalogue; every shopper action is sent from the
browser by RudderStack's SDK (`shop.js`), exactly as on a real shop, so the collector sees what
it would see in production: cross-origin requests from a page, with a write key that is public
by design (RudderStack's browser write keys are).
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from signalmail.simulate.catalog import Catalog, Product, build_catalog
from signalmail.simulate.model import CURRENCY

HERE = Path(__file__).parent
PAGE_SIZE = 24


@dataclasses.dataclass(frozen=True)
class ShopSettings:
    """Where the SDK sends events, with which write key, and which catalogue to show."""

    data_plane_url: str
    write_key: str
    catalog_seed: int = 42
    catalog_size: int = 300
    #: time on content (shop.js): a `Page Engaged` ping per heartbeat of engaged time, the
    #: first once a page has this minimum, and "active" meaning input within the window
    heartbeat_seconds: float = 30.0
    min_visit_seconds: float = 5.0
    active_window_seconds: float = 10.0


def create_app(settings: ShopSettings) -> Starlette:
    """Build the storefront's ASGI app."""
    simulated = build_catalog(settings.catalog_seed, settings.catalog_size)
    # pictures and links of this shop, not the simulator's example.com ones
    local = [
        dataclasses.replace(p, image_url=f"/img/{p.product_id}.svg", url=f"/p/{p.product_id}")
        for p in simulated.products
    ]
    catalog = Catalog(local, simulated.weights)
    by_id = {p.product_id: p for p in catalog.products}
    categories = sorted(catalog.by_category)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "pages")),
        autoescape=True,
        finalize=lambda value: "" if value is None else value,
    )
    template = env.get_template("shop.html.j2")

    def render(title: str, page: dict[str, Any], **context: Any) -> HTMLResponse:
        shop = {
            "dataPlaneUrl": settings.data_plane_url,
            "writeKey": settings.write_key,
            "currency": CURRENCY,
            "page": page,
            "engagement": {
                "heartbeatSeconds": settings.heartbeat_seconds,
                "minVisitSeconds": settings.min_visit_seconds,
                "activeWindowSeconds": settings.active_window_seconds,
            },
            **context.pop("shop", {}),
        }
        html = template.render(
            title=title, shop=shop, categories=categories, currency=CURRENCY, **context
        )
        return HTMLResponse(html)

    async def home(request: Request) -> Response:
        return render("New in", {"category": "Home", "name": "Home"}, products=_top(catalog))

    async def category(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in catalog.by_category:
            return HTMLResponse("no such category", status_code=404)
        return render(
            name.title(),
            {"category": "Category", "name": name, "properties": {"category": name}},
            products=catalog.by_category[name][:PAGE_SIZE],
        )

    async def product(request: Request) -> Response:
        item = by_id.get(request.path_params["product_id"])
        if item is None:
            return HTMLResponse("no such product", status_code=404)
        as_json = _product_json(item)
        return render(
            item.name,
            {
                "category": "Product",
                "name": item.name,
                "properties": {"product_id": item.product_id},
            },
            product=item,
            product_json=as_json,
            shop={"viewed": as_json},
        )

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()[:200]
        words = query.lower().split()
        found = [
            p for p in catalog.products
            if words and all(w in f"{p.name} {p.brand} {p.category}".lower() for w in words)
        ][:PAGE_SIZE]  # fmt: skip
        return render(
            f"Search: {query}",
            {"category": "Search", "name": "Search results", "properties": {"query": query}},
            products=found,
            shop={"searched": query},
        )

    async def cart(request: Request) -> Response:
        return render("Cart", {"category": "Cart", "name": "Cart"}, is_cart=True)

    async def picture(request: Request) -> Response:
        item = by_id.get(request.path_params["product_id"])
        if item is None:
            return Response(status_code=404)
        return Response(_picture(item), media_type="image/svg+xml")

    async def shop_js(request: Request) -> Response:
        return FileResponse(HERE / "shop.js", media_type="text/javascript")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/c/{name:str}", category),
            Route("/p/{product_id:str}", product),
            Route("/search", search),
            Route("/cart", cart),
            Route("/img/{product_id:str}.svg", picture),
            Route("/shop.js", shop_js),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
    )


def _top(catalog: Catalog) -> list[Product]:
    ranked = sorted(zip(catalog.weights, catalog.products, strict=True), key=lambda pair: -pair[0])
    return [product for _weight, product in ranked[:PAGE_SIZE]]


def _picture(item: Product) -> str:
    """Draw a tile in the product's own colour with its category: a picture without a CDN."""
    hue = int(hashlib.sha256(item.product_id.encode()).hexdigest()[:4], 16) % 360
    label = html.escape(item.category.title())
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="280" viewBox="0 0 400 280">'
        f'<rect width="400" height="280" fill="hsl({hue},45%,78%)"/>'
        f'<text x="200" y="150" font-family="Helvetica,Arial" font-size="36" '
        f'fill="hsl({hue},40%,25%)" text-anchor="middle">{label}</text></svg>'
    )


def _product_json(item: Product) -> dict[str, Any]:
    return {**dataclasses.asdict(item)}
