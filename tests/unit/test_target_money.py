"""Amounts shown in the recipient's locale, and never a broken one."""

from __future__ import annotations

from target_mailchimp_transactional.money import add_display_amounts, format_money


def test_amounts_follow_the_recipients_locale():
    assert format_money(29.49, "EUR", "de-DE") == "29,49\xa0€"
    assert format_money(29.49, "USD", "en_US") == "$29.49"
    assert format_money(1234.4, "JPY", "ja-JP") == "￥1,234"  # no minor unit
    assert format_money(29.49, "eur", "fr-FR") == "29,49\xa0€"


def test_unknown_locales_and_currencies_fall_back_instead_of_failing():
    assert format_money(5, "EUR", "xx-YY'; drop") == "€5.00"  # the fallback locale
    assert format_money(5, "EUR", None, fallback_locale="de_DE") == "5,00\xa0€"
    assert format_money(5, "<b>", "en-US") == "5.00"  # not a currency code: the number alone
    assert format_money(5, None, "en-US") == "5.00"


def test_no_number_no_display():
    for amount in (None, "12", True, float("nan"), float("inf"), [], {}):
        assert format_money(amount, "EUR", "de-DE") is None
    # past Babel's decimal context (decimal.InvalidOperation): no display, not a stopped run
    for amount in (1e26, -1e26, 1e308, 10**30):
        assert format_money(amount, "EUR", "de-DE") is None
        assert format_money(amount, None, "en-US") is None
    assert add_display_amounts({"cart_total": 1e300}, "en-US", "USD", "en_US") == {
        "cart_total": 1e300,
        "currency": "USD",
    }


def test_display_fields_sit_next_to_each_amount_and_currency_defaults():
    payload = {
        "cart_total": 68.0,
        "total": None,
        "products": [{"name": "Shoe", "price": 59}, {"name": "Hat", "price": None}, "junk"],
        "recommendations": [{"name": "Socks", "price": 9, "currency": "GBP"}],
    }
    shown = add_display_amounts(payload, "en-GB", "EUR", "en_US")
    assert shown["currency"] == "EUR"
    assert shown["cart_total_display"] == "€68.00"
    assert "total_display" not in shown
    assert shown["products"][0]["price_display"] == "€59.00"
    assert "price_display" not in shown["products"][1]
    assert shown["products"][2] == "junk"
    assert shown["recommendations"][0]["price_display"] == "£9.00"
    assert "cart_total_display" not in payload  # the caller's payload is left as it was
