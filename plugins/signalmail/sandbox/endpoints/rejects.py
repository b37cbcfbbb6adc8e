"""rejects/*: the denylist sends consult (bounces, spam reports and unsubscribes land here too)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from signalmail.sandbox.checks import check_subaccount, is_valid_email
from signalmail.sandbox.errors import MandrillError
from signalmail.sandbox.store import mandrill_time

if TYPE_CHECKING:
    from signalmail.sandbox.core import Sandbox


def add(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """rejects/add: reason `custom`."""
    email = body["email"]
    if not is_valid_email(email):
        raise MandrillError(
            "ValidationError",
            f'Validation error: {{"email":"{email} is not a valid email address"}}',
            -2,
        )
    check_subaccount(sandbox.config, body.get("subaccount"))
    sandbox.store.add_reject(
        email.lower(),
        "custom",
        body.get("comment") or "Added manually",
        body.get("subaccount") or "",
    )
    return {"email": email, "added": True}


def delete(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """rejects/delete: Invalid_Reject when the address is not on the list."""
    email = body["email"]
    check_subaccount(sandbox.config, body.get("subaccount"))
    if not sandbox.store.delete_reject(email.lower(), body.get("subaccount") or ""):
        raise MandrillError(
            "Invalid_Reject", "Email address is not in the rejection list and is not invalid", 4
        )
    result = {"email": email, "deleted": True}
    if body.get("subaccount"):
        result["subaccount"] = body["subaccount"]
    return result


def list_(sandbox: Sandbox, body: dict[str, Any]) -> list[dict[str, Any]]:
    """rejects/list."""
    check_subaccount(sandbox.config, body.get("subaccount"))
    now = mandrill_time()
    return [
        {
            "email": r["email"],
            "reason": r["reason"],
            "detail": r["detail"],
            "created_at": r["created_at"],
            "last_event_at": r["last_event_at"],
            "expires_at": r["expires_at"],
            "expired": r["expires_at"] <= now,
            "sender": None,
            "subaccount": r["subaccount"] or None,
        }
        for r in sandbox.store.list_rejects(
            body.get("email"), bool(body.get("include_expired")), body.get("subaccount")
        )
    ]


OPERATIONS: dict[str, Callable[[Sandbox, dict[str, Any]], Any]] = {
    "rejects/list": list_,
    "rejects/add": add,
    "rejects/delete": delete,
}
