"""Money as the recipient reads it: `29,49 €` for de-DE, `$29.49` for en-US.

The payload carries amounts as numbers and a currency code (dbt's `default_currency` var fills
it when events lack one: RudderStack's e-commerce spec puts `currency` on orders, not on
Product Added). The target adds a `<field>_display` string next to every amount, formatted by
Babel (CLDR data, installed with the package, nothing fetched) for the recipient's locale, so
Jinja blocks and Mandrill handlebars templates show the same text and neither has to format.

An amount that is missing or not a number gets no display field: templates guard on it
(`{{#if price_display}}`) and print nothing rather than a wrong or empty price.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, format_decimal

#: Payload amounts (top level) that get a display string.
AMOUNT_FIELDS = ("cart_total", "total", "order_total", "revenue")
#: Arrays of products whose `price` gets one.
PRODUCT_ARRAYS = ("products", "recommendations")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


@lru_cache(maxsize=256)
def _locale(tag: str | None, fallback: str) -> Locale:
    for candidate in (tag, fallback, "en_US"):
        if not candidate:
            continue
        try:
            return Locale.parse(str(candidate).replace("-", "_"))
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    return Locale.parse("en_US")


def format_money(
    amount: Any, currency: Any, locale: str | None, fallback_locale: str = "en_US"
) -> str | None:
    """Format one amount, or None when there is no number to show.

    A currency that is not a three-letter code is left out (the number alone) rather than
    printed as the client sent it.
    """
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return None
    if amount != amount or amount in (float("inf"), float("-inf")):
        return None
    where = _locale(locale, fallback_locale)
    try:
        if isinstance(currency, str) and _CURRENCY.match(currency):
            return str(format_currency(amount, currency.upper(), locale=where))
        return str(format_decimal(amount, format="#,##0.00", locale=where))
    except ArithmeticError:
        # Babel's decimal context stops at about 1e26 (decimal.InvalidOperation): such an
        # amount is no price, and raising here would stop the whole send run at this row
        return None


def add_display_amounts(
    payload: dict[str, Any], locale: str | None, default_currency: str | None, fallback_locale: str
) -> dict[str, Any]:
    """Return the payload with `currency` defaulted and a `_display` string per amount."""
    out = dict(payload)
    currency = out.get("currency") or default_currency
    if currency and not out.get("currency"):
        out["currency"] = currency
    for field in AMOUNT_FIELDS:
        shown = format_money(out.get(field), currency, locale, fallback_locale)
        if shown is not None:
            out[f"{field}_display"] = shown
    for array in PRODUCT_ARRAYS:
        items = out.get(array)
        if not isinstance(items, list):
            continue
        shown_items = []
        for item in items:
            if isinstance(item, dict):
                item = dict(item)
                item_currency = item.get("currency") or currency
                shown = format_money(item.get("price"), item_currency, locale, fallback_locale)
                if shown is not None:
                    item["price_display"] = shown
            shown_items.append(item)
        out[array] = shown_items
    return out
