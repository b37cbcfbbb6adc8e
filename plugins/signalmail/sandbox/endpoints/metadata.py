"""metadata/*: the custom metadata fields messages/search may query."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from signalmail.sandbox.errors import MandrillError

if TYPE_CHECKING:
    from signalmail.sandbox.core import Sandbox

#: Mandrill's cap on indexed custom metadata fields per account
MAX_FIELDS = 10


def add(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """metadata/add: index a field for messages/search (at most 10, as Mandrill)."""
    name = body["name"]
    if len(sandbox.store.list_metadata_fields()) >= MAX_FIELDS:
        raise MandrillError(
            "ValidationError", "at most 10 custom metadata fields can be indexed", -2
        )
    field_ = sandbox.store.add_metadata_field(name, body.get("view_template"))
    if field_ is None:
        raise MandrillError(
            "ValidationError", f"A metadata field named {name!r} already exists", -2
        )
    return field_


OPERATIONS: dict[str, Callable[[Sandbox, dict[str, Any]], Any]] = {
    "metadata/add": add,
    "metadata/list": lambda sandbox, body: sandbox.store.list_metadata_fields(),
}
