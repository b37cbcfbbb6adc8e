"""JSON Schema helpers for mapping a Singer property schema to a column type.

Both loaders pick a column type from a property's schema, and a Singer schema spells "this may be
null" in three ways: a type list (`["null", "string"]`), `anyOf` or `oneOf`. Each loader's
`column_type` (its own mapping, DuckDB's or PostgreSQL's) looks only at what is left once the
null alternative is removed.
"""

from __future__ import annotations

import typing as t


def non_null_types(prop: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """List the alternatives of a property schema, `null` removed (type lists and anyOf)."""
    if "anyOf" in prop or "oneOf" in prop:
        options = [o for o in prop.get("anyOf", prop.get("oneOf", [])) if isinstance(o, dict)]
        return [o for sub in options for o in non_null_types(sub)]
    kinds = prop.get("type")
    if kinds is None:
        return [prop]  # no type at all: anything goes
    if isinstance(kinds, str):
        kinds = [kinds]
    return [{**prop, "type": k} for k in kinds if k != "null"]
