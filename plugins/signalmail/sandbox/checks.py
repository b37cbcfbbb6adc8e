"""Request checks more than one endpoint group applies: addresses, API keys, subaccounts."""

from __future__ import annotations

import hashlib
import re

from signalmail.sandbox.config import SandboxConfig
from signalmail.sandbox.errors import MandrillError

_EMAIL_RE = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def is_valid_email(address: str) -> bool:
    """Syntactic address check (what Mandrill answers `invalid` for)."""
    return bool(_EMAIL_RE.match(address or "")) and len(address) <= 254


def key_hash(key: str) -> str:
    """Hash an API key: messages are stored and searched by the hash, never by the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_subaccount(config: SandboxConfig, subaccount: str | None) -> None:
    """Unknown_Subaccount for an id not configured: Mandrill refuses before doing anything."""
    if subaccount and subaccount not in config.subaccounts:
        raise MandrillError(
            "Unknown_Subaccount", f"No subaccount exists with the id '{subaccount}'", 12
        )
