"""The messages/search query language: the Lucene subset Mandrill documents.

Grammar: terms joined by AND, OR, NOT (also `&&`, `||`, `-term`), parentheses, and implicit OR
between adjacent terms (Lucene's default operator; `a NOT b` means a AND NOT b). A term is
`field:value`, `field:"a phrase"`, a bare `value` or `"phrase"` (searched in every indexed
field), or `*` (everything). A value may end in `*` (prefix); a leading wildcard is refused,
as Mandrill refuses it.

Fields: `email`, `subject`, `sender` (alias `from_email`), `tags` (alias `tag`), `template`,
`state`, `subaccount`, `_id` (alias `id`), and custom metadata as `u_<key>` (alias
`metadata.<key>`), searchable only when the key is indexed (metadata/add) unless the sandbox runs
with `--index-all-metadata`. Matching is case-insensitive; a value matches a field when it
equals the whole field or one of its words (text split on non-word characters, so `b@c.com`
matches its domain `c.com` too); a phrase matches when it occurs in the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

FIELD_ALIASES = {
    "email": "email",
    "subject": "subject",
    "sender": "sender",
    "from_email": "sender",
    "tags": "tags",
    "tag": "tags",
    "template": "template",
    "state": "state",
    "subaccount": "subaccount",
    "_id": "id",
    "id": "id",
}


class QueryError(ValueError):
    """A query Mandrill would refuse; the message says what and where."""


@dataclass(frozen=True)
class Term:
    """One `field:value` (field None = every indexed field)."""

    field: str | None
    value: str
    phrase: bool = False
    prefix: bool = False


_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\))
      | (?P<and>AND\b|&&) | (?P<or>OR\b|\|\|) | (?P<not>NOT\b)
      | (?P<minus>-(?=\S))
      | (?:(?P<field>[A-Za-z_][\w.]*):)?(?:"(?P<phrase>[^"]*)"|(?P<word>[^\s()"]+))
    )""",
    re.VERBOSE,
)


def parse_query(query: str | None) -> Any:
    """Parse into nested ("and"|"or", a, b) / ("not", a) tuples with Term leaves; None = all."""
    text = (query or "").strip()
    if text in ("", "*", "*:*"):
        return None
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = _TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            raise QueryError(f"cannot parse search query at {text[pos:]!r}")
        pos = match.end()
        kind = match.lastgroup
        if match.group("phrase") is not None or match.group("word") is not None:
            tokens.append(
                ("term", _term(match.group("field"), match.group("phrase"), match.group("word")))
            )
        else:
            tokens.append((kind or "", None))
    index = 0

    def peek() -> str | None:
        return tokens[index][0] if index < len(tokens) else None

    def take() -> tuple[str, Any]:
        nonlocal index
        if index >= len(tokens):
            raise QueryError(f"search query {text!r} ends too early")
        index += 1
        return tokens[index - 1]

    def or_expr() -> Any:
        left = and_expr()
        while peek() in ("or", "term", "lparen"):
            if peek() == "or":
                take()
            left = ("or", left, and_expr())
        return left

    def and_expr() -> Any:
        left = unary()
        while peek() in ("and", "not", "minus"):
            if peek() == "and":
                take()
            left = ("and", left, unary())
        return left

    def unary() -> Any:
        kind, value = take()
        if kind in ("not", "minus"):
            return ("not", unary())
        if kind == "lparen":
            inner = or_expr()
            if peek() != "rparen":
                raise QueryError(f"missing ')' in search query {text!r}")
            if take()[0] != "rparen":
                raise QueryError(f"missing ')' in search query {text!r}")
            return inner
        if kind == "term":
            return value
        raise QueryError(f"unexpected {kind.upper()} in search query {text!r}")

    tree = or_expr()
    if index != len(tokens):
        raise QueryError(f"unexpected ')' in search query {text!r}")
    return tree


def _term(field: str | None, phrase: str | None, word: str | None) -> Term:
    if field is not None:
        lowered = field.lower()
        if lowered in FIELD_ALIASES:
            field = FIELD_ALIASES[lowered]
        elif lowered.startswith("metadata."):
            field = "u_" + field.split(".", 1)[1]
        elif not lowered.startswith("u_"):
            raise QueryError(f"unknown search field {field!r}; use u_<key> for metadata")
    if phrase is not None:
        return Term(field, phrase.lower(), phrase=True)
    assert word is not None
    if word.startswith(("*", "?")):
        raise QueryError(f"leading wildcards are not allowed ({word!r})")
    prefix = word.endswith("*")
    return Term(field, word.rstrip("*").lower(), prefix=prefix)


def _words(value: str) -> list[str]:
    lowered = value.lower()
    words = [w for w in re.split(r"[^\w.@+-]+", lowered) if w]
    words += [w for w in re.split(r"[^\w]+", lowered) if w]
    if "@" in lowered:
        words.append(lowered.split("@", 1)[1])
    return words


def _term_matches(term: Term, values: Iterable[str]) -> bool:
    for value in values:
        lowered = value.lower()
        if term.phrase:
            if term.value in lowered:
                return True
            continue
        candidates = [lowered, *_words(lowered)]
        if term.prefix:
            if any(c.startswith(term.value) for c in candidates):
                return True
        elif term.value in candidates:
            return True
    return False


def field_values(message: dict[str, Any], field: str, indexed: Callable[[str], bool]) -> list[str]:
    """Return the searchable strings of one field of a stored message."""
    if field.startswith("u_"):
        key = field[2:]
        metadata = message["metadata"]
        if key not in metadata or not indexed(key):
            return []
        return [_scalar(metadata[key])]
    value = message.get(field)
    if field == "tags":
        return [str(t) for t in message["tags"]]
    return [] if value is None else [str(value)]


def _scalar(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def matches(tree: Any, message: dict[str, Any], indexed: Callable[[str], bool]) -> bool:
    """Evaluate a parsed query against one stored message."""
    if tree is None:
        return True
    if isinstance(tree, Term):
        if tree.field is not None:
            return _term_matches(tree, field_values(message, tree.field, indexed))
        fields = ["email", "subject", "sender", "tags", "template", "id"]
        fields += ["u_" + k for k in message["metadata"]]
        return any(_term_matches(tree, field_values(message, f, indexed)) for f in fields)
    op = tree[0]
    if op == "not":
        return not matches(tree[1], message, indexed)
    if op == "and":
        return matches(tree[1], message, indexed) and matches(tree[2], message, indexed)
    return matches(tree[1], message, indexed) or matches(tree[2], message, indexed)
