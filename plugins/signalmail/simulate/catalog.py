"""A deterministic product catalog with a skewed popularity curve.

Real storefronts sell a few products a lot and most products rarely; the models downstream
(product interest, recommendations) only show something interesting when the simulated traffic
has that shape, so each product carries a Zipf-like weight that sessions sample from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

SHOP_URL = "https://shop.example.com"
CDN_URL = "https://cdn.shop.example.com"

#: category -> (price range in the shop currency, nouns for product names)
CATEGORIES: dict[str, tuple[tuple[float, float], tuple[str, ...]]] = {
    "Shoes": ((39.0, 189.0), ("Runner", "Trail Shoe", "Sneaker", "Loafer", "Boot")),
    "Apparel": ((14.0, 129.0), ("Tee", "Hoodie", "Jacket", "Chinos", "Rain Shell")),
    "Accessories": ((9.0, 89.0), ("Cap", "Belt", "Wallet", "Beanie", "Scarf")),
    "Bags": ((24.0, 249.0), ("Backpack", "Tote", "Duffel", "Sling", "Messenger")),
    "Outdoor": ((19.0, 399.0), ("Tent", "Sleeping Bag", "Headlamp", "Stove", "Trekking Pole")),
    "Home": ((12.0, 159.0), ("Mug", "Blanket", "Lamp", "Cushion", "Planter")),
    "Electronics": ((29.0, 499.0), ("Headphones", "Speaker", "Charger", "Smartwatch", "Camera")),
    "Beauty": ((6.0, 79.0), ("Serum", "Cleanser", "Lip Balm", "Sunscreen", "Moisturiser")),
}
BRANDS: tuple[str, ...] = (
    "Northwind",
    "Acme",
    "Fjordline",
    "Kestrel",
    "Luma",
    "Oakridge",
    "Pinecrest",
    "Solace",
    "Tidewater",
    "Vireo",
    "Wren & Co",
    "Zephyr",
)
ADJECTIVES: tuple[str, ...] = (
    "Classic",
    "Ultralight",
    "Everyday",
    "Pro",
    "Heritage",
    "Urban",
    "Alpine",
    "Coastal",
    "Essential",
    "Midnight",
    "Summit",
    "Weekend",
)
COLOURS: tuple[str, ...] = ("Black", "Navy", "Olive", "Sand", "Red", "Grey", "White", "Teal")


@dataclass(frozen=True, slots=True)
class Product:
    """One catalog entry, already shaped like a RudderStack e-commerce product."""

    product_id: str
    sku: str
    name: str
    brand: str
    category: str
    price: float
    url: str
    image_url: str

    def properties(self, quantity: int | None = None) -> dict[str, object]:
        """Return the e-commerce spec's product fields, optionally with a quantity (cart lines)."""
        props: dict[str, object] = {
            "product_id": self.product_id,
            "sku": self.sku,
            "name": self.name,
            "brand": self.brand,
            "category": self.category,
            "price": self.price,
        }
        if quantity is not None:
            props["quantity"] = quantity
        props["url"] = self.url
        props["image_url"] = self.image_url
        return props


@dataclass(slots=True)
class Catalog:
    """Products plus the cumulative popularity weights used to sample them quickly."""

    products: list[Product]
    weights: list[float]
    by_category: dict[str, list[Product]] = field(default_factory=dict)
    _cum: list[float] = field(default_factory=list)
    _cum_by_category: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = 0.0
        self._cum = []
        for weight in self.weights:
            total += weight
            self._cum.append(total)
        self.by_category = {}
        self._cum_by_category = {}
        for product, weight in zip(self.products, self.weights, strict=True):
            self.by_category.setdefault(product.category, []).append(product)
            cum = self._cum_by_category.setdefault(product.category, [])
            cum.append((cum[-1] if cum else 0.0) + weight)

    def sample(self, rng: random.Random, k: int = 1) -> list[Product]:
        """`k` products drawn by popularity (with replacement)."""
        return rng.choices(self.products, cum_weights=self._cum, k=k)

    def sample_in(self, rng: random.Random, category: str, k: int) -> list[Product]:
        """Up to `k` distinct products of one category, the popular ones more likely first."""
        pool = self.by_category[category]
        picked: list[Product] = []
        seen: set[str] = set()
        for product in rng.choices(pool, cum_weights=self._cum_by_category[category], k=k * 2):
            if product.product_id not in seen:
                seen.add(product.product_id)
                picked.append(product)
            if len(picked) == k:
                break
        return picked


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def build_catalog(seed: int, size: int = 300, skew: float = 1.1) -> Catalog:
    """Generate `size` products deterministically from `seed`.

    Popularity follows rank^-skew over a shuffled order, so the best sellers are spread across
    categories rather than all being the first category generated.
    """
    if size < 1:
        raise ValueError(f"catalog size must be at least 1, got {size}")
    rng = random.Random(f"catalog:{seed}")  # noqa: S311 (simulation, not security)
    categories = list(CATEGORIES)
    products: list[Product] = []
    names_seen: set[str] = set()
    for index in range(1, size + 1):
        category = categories[(index - 1) % len(categories)]
        (low, high), nouns = CATEGORIES[category]
        brand = rng.choice(BRANDS)
        name = f"{brand} {rng.choice(ADJECTIVES)} {rng.choice(nouns)} {rng.choice(COLOURS)}"
        if name in names_seen:  # keep names unique so a human can tell products apart
            name = f"{name} {index}"
        names_seen.add(name)
        # prices cluster low with a long tail, rounded to .99/.49 like a shop would
        raw = low + (high - low) * (rng.random() ** 2)
        price = round(int(raw) + rng.choice((0.49, 0.99)), 2)
        product_id = f"p-{index:05d}"
        slug = _slug(name)
        products.append(
            Product(
                product_id=product_id,
                sku=f"{_slug(category)[:3].upper()}-{index:05d}",
                name=name,
                brand=brand,
                category=category,
                price=price,
                url=f"{SHOP_URL}/products/{slug}-{product_id}",
                image_url=f"{CDN_URL}/img/{product_id}.jpg",
            )
        )
    ranks = list(range(1, size + 1))
    rng.shuffle(ranks)
    weights = [1.0 / (rank**skew) for rank in ranks]
    return Catalog(products=products, weights=weights)
