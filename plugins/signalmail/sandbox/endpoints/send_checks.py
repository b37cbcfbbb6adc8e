"""What refuses a whole send call before any recipient is considered: Mandrill's ValidationErrors.

These run in this order, after the subaccount and template lookups and before recipients, so
the first problem found is the error a client sees; nothing is stored when one is raised.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from signalmail.sandbox.checks import is_valid_email
from signalmail.sandbox.config import SandboxConfig
from signalmail.sandbox.errors import MandrillError

#: send_at may lie at most this far ahead (Mandrill's one year, with a leap day to spare)
_MAX_SCHEDULE_S = 366 * 86400


def validate_message(
    config: SandboxConfig, message: dict[str, Any], from_email: str | None
) -> None:
    """Refuse the whole call for what Mandrill refuses before taking any recipient.

    The sender is checked after template resolution, since a template may supply it. Names
    starting with `_` are reserved by Mandrill for tags, merge vars and metadata alike.
    """
    if from_email and not is_valid_email(from_email):
        raise MandrillError(
            "ValidationError",
            "Validation error: "
            + json.dumps({"message": {"from_email": f"{from_email} is not a valid email address"}}),
            -2,
        )
    for tag in message.get("tags") or []:
        if tag.startswith("_"):
            raise MandrillError(
                "ValidationError",
                f"Tag {tag!r}: tags starting with an underscore are reserved",
                -2,
            )
    # the spec's MergeVar: "Merge variable name (case-insensitive, may not start with _)"
    var_names = [v.get("name") for v in message.get("global_merge_vars") or []] + [
        v.get("name") for m in message.get("merge_vars") or [] for v in m.get("vars") or []
    ]
    for name in var_names:
        if isinstance(name, str) and name.startswith("_"):
            raise MandrillError(
                "ValidationError",
                f"Validation error: merge variable {name!r}: names may not start with _",
                -2,
            )
    check_metadata(config, message.get("metadata") or {})


def check_metadata(config: SandboxConfig, metadata: dict[str, Any]) -> None:
    """Metadata must stay small and flat: Mandrill indexes it for search, and so do we."""
    for key, value in metadata.items():
        if str(key).startswith("_"):  # as merge var names: reserved by Mandrill
            raise MandrillError(
                "ValidationError", f"metadata {key!r}: names may not start with _", -2
            )
        if isinstance(value, dict | list):
            raise MandrillError(
                "ValidationError", f"metadata {key!r} must be a scalar (string or number)", -2
            )
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > config.max_metadata_bytes:
        raise MandrillError(
            "ValidationError",
            f"metadata is {size} bytes; at most {config.max_metadata_bytes} are allowed",
            -2,
        )


def parse_send_at(value: str | None, now: float) -> float | None:
    """Mandrill's `YYYY-MM-DD HH:MM:SS` UTC (ISO accepted); past times send now."""
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MandrillError(
            "ValidationError", f"send_at {value!r} is not YYYY-MM-DD HH:MM:SS", -2
        ) from exc
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    ts = when.timestamp()
    if ts <= now:
        return None
    if ts > now + _MAX_SCHEDULE_S:
        raise MandrillError("ValidationError", "send_at is limited to one year from now", -2)
    return ts
