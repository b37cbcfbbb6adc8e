"""Links and header fields from event data, on their way into an email."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from target_mailchimp_transactional import sanitize

HOSTILE_LINKS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "//evil.example/x",
    "/relative/path",
    "https://",
    "https://shop.example.com/p\r\nBcc: victim@example.com",
    'https://shop.example.com/p" onmouseover="alert(1)',
    "https://shop.example.com:99999/p",
    "http://[::1",
    "ftp://shop.example.com/file",
    "",
]


def test_only_http_links_with_a_host_survive():
    for link in HOSTILE_LINKS:
        assert sanitize.safe_link(link) is None, link
    assert sanitize.safe_link(12) is None
    for link in ("https://shop.example.com/p/1?utm=x#top", "HTTP://SHOP.example.com/p"):
        assert sanitize.safe_link(link) == link


def test_links_can_be_held_to_the_shops_domains():
    domains = ["shop.example.com", ".cdn.example.net"]
    assert sanitize.safe_link("https://shop.example.com/p", domains)
    assert sanitize.safe_link("https://img.cdn.example.net/1.png", domains)
    assert sanitize.safe_link("https://cdn.example.net/1.png", domains)
    assert sanitize.safe_link("https://evilshop.example.com/p", domains) is None
    assert sanitize.safe_link("https://shop.example.com.evil.io/p", domains) is None
    assert sanitize.safe_link("https://user@evil.io/p", domains) is None


def test_a_payload_keeps_its_shape_and_loses_bad_links_and_controls():
    counts: dict[str, int] = {}
    payload = {
        "cart_url": "javascript:alert(1)",
        "products": [
            {"name": "Shoe\x00\x1b[31m", "url": "https://shop.example.com/p", "price": 5},
            {"name": "Tent\n2 people", "image_url": "data:image/png;base64,AAAA"},
        ],
        "search_term": "boots\u2028now",
    }
    clean = sanitize.payload(payload, counts=counts)
    assert clean == {
        "cart_url": None,
        "products": [
            {"name": "Shoe[31m", "url": "https://shop.example.com/p", "price": 5},
            {"name": "Tent\n2 people", "image_url": None},
        ],
        "search_term": "bootsnow",
    }
    assert counts == {"links_dropped": 2}


def test_links_are_found_under_any_spelling_of_a_link_key():
    bad = "javascript:alert(1)"
    keys = ["URL", "imageUrl", "image_urls", "href", "Link", "product_link", "thumbnailSrc"]
    clean = sanitize.payload({k: bad for k in keys} | {"name": bad})
    assert clean == {k: None for k in keys} | {"name": bad}  # text, escaped by the template


def test_header_text_is_one_line_without_controls():
    assert sanitize.header_text("Ann\r\nBcc: victim@example.com") == "Ann Bcc: victim@example.com"
    assert sanitize.header_text("  \t\x00 ") is None
    assert sanitize.header_text(None) is None
    assert len(sanitize.header_text("x" * 1000) or "") == sanitize.HEADER_LIMIT


@settings(max_examples=300)
@given(st.text())
def test_no_text_can_put_a_line_break_in_a_header(value):
    cleaned = sanitize.header_text(value)
    assert cleaned is None or not any(c in cleaned for c in "\r\n\x00\x0b\x0c\x85\u2028\u2029")


@settings(max_examples=300)
@given(st.one_of(st.text(), st.from_regex(r"\A[a-zA-Z]{1,10}:[^\s]{0,40}\Z")))
def test_any_link_that_survives_is_http_with_a_host(value):
    link = sanitize.safe_link(value)
    if link is not None:
        parts = urlsplit(link)
        assert parts.scheme.lower() in ("http", "https")
        assert parts.hostname
        assert not any(c.isspace() or ord(c) < 32 for c in link)
