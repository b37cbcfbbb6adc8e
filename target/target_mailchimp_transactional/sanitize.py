"""Event data on its way into an email: links and header fields made safe.

Payload values come from the warehouse, which got them from browsers and apps: a product
`url` may be `javascript:...` or `data:...`, and a `first_name` may carry CR/LF, which in the
To header's display name (or a subject that merges it) would start a new header line. The
target is the last step before Mandrill, so it checks here whatever the models let through:

- a link (any payload key named `url` or ending in `_url`) survives only as an absolute
  `http`/`https` URL with a host, no whitespace or control characters, and, when
  `link_domains` is set, a host that is one of those domains or under one; anything else
  becomes null, which the templates treat as "no link";
- every text value loses its control characters (C0 except tab and newline, DEL, C1, and the
  Unicode line and paragraph separators); header fields (the recipient's name) lose tab and
  newline too and are cut to 200 characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
# and in headers also the invisible characters that reorder or hide text (bidi overrides and
# isolates, zero-width space, byte-order mark): a name that shows as something else
_HEADER_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u2028-\u202e\u2066-\u2069\ufeff]+")
_LINK_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029<>\"'`\\]")
HEADER_LIMIT = 200


def text(value: str) -> str:
    """Drop control characters a body may not carry (tab and newline stay)."""
    return _CONTROL.sub("", value)


def header_text(value: str | None, limit: int = HEADER_LIMIT) -> str | None:
    """Make a value fit for a header: no control characters or line breaks, one line, cut."""
    if value is None:
        return None
    cleaned = " ".join(_HEADER_CONTROL.sub(" ", value).split())[:limit]
    return cleaned or None


def _host_allowed(host: str, domains: tuple[str, ...]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def safe_link(value: Any, domains: Iterable[str] = ()) -> str | None:
    """Give `value` back if it is an http(s) link the email may carry, else None."""
    if not isinstance(value, str) or _LINK_FORBIDDEN.search(value):
        return None
    try:
        parts = urlsplit(value)
        host = (parts.hostname or "").lower()
        _ = parts.port  # parsed on access: a port out of range raises here
    except ValueError:  # a malformed port or IPv6 literal
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    allowed = tuple(d.lower().lstrip(".") for d in domains if d)
    if allowed and not _host_allowed(host, allowed):
        return None
    return value


LINK_KEYS = frozenset({"url", "urls", "href", "link", "links", "src"})
LINK_SUFFIXES = ("url", "urls", "href", "link", "links", "src")


def is_link_key(key: str) -> bool:
    """Tell whether a payload key holds a link (`url`, `image_url`, `imageUrl`, `href`, ...).

    Case-blind and generous: a key that only looks like a link costs a check; a link under a
    key that is missed would reach an email unchecked.
    """
    lowered = key.lower()
    return lowered in LINK_KEYS or lowered.endswith(LINK_SUFFIXES)


def payload(value: Any, domains: Iterable[str] = (), counts: dict[str, int] | None = None) -> Any:
    """Return a payload (any JSON) with links checked and text cleaned (see the module doc)."""
    allowed = tuple(domains)

    def walk(node: Any, key: str | None) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if key is not None and is_link_key(key) and node is not None:
            link = safe_link(node, allowed)
            if link is None and counts is not None:
                counts["links_dropped"] = counts.get("links_dropped", 0) + 1
            return link
        if isinstance(node, str):
            return text(node)
        return node

    return walk(value, None)
