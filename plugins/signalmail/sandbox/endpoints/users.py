"""users/*: the ping calls clients use to check their key before doing real work."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signalmail.sandbox.core import Sandbox

OPERATIONS: dict[str, Callable[[Sandbox, dict[str, Any]], Any]] = {
    "users/ping": lambda sandbox, body: "PONG!",
    "users/ping2": lambda sandbox, body: {"PING": "PONG!"},
}
