"""Fault injection: what a client must survive from Mandrill, on demand and reproducibly.

A `FaultPlan` holds rates (0..1) per fault and a seed; every API call draws once from a seeded
`random.Random`, so the same seed and the same call sequence give the same faults. Faults apply
only to `/api/1.3/...` calls, never to the sandbox admin endpoints that switch them.

Faults:
- `errors`: Mandrill error name -> rate, answered with that error's JSON (GeneralError,
  PaymentRequired, ServiceUnavailable, Invalid_Key, ...).
- `http_429`: answered 429 with a RequestLimitExceeded JSON body.
- `http_5xx`: answered 503 (configurable) with an EMPTY body: the client library then returns a
  raw `requests.Response` instead of raising, a quirk a caller must detect.
- `timeout`: the call hangs `timeout_s` seconds before answering (longer than the client's
  timeout), then answers normally, as a slow upstream does.
- `lost_answer`: the call is carried out (a send is stored and delivered) but its answer is
  replaced by HTTP 200 with `[]`: the client library returns a raw `requests.Response`, and a
  caller that takes it for "nothing happened" and resends sends twice. On messages/search it is
  an empty answer that hides what is there.
- `dropped`: the call hangs `timeout_s` seconds and is never carried out (a request lost
  between the client and Mandrill): the client sees what it sees for `timeout`, but nothing
  was sent, so only a resend delivers it.
- `search_lag_s`: messages/search finds a message only this many seconds after Mandrill took
  it, as its index lags the sends.
- `latency_ms`: fixed delay added to every call (the bench's 50 ms).
- `only`: restrict faults to these operations (e.g. `messages/send-template`).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: error name -> (code, default message), following the spec's examples
ERRORS: dict[str, tuple[int, str]] = {
    "GeneralError": (
        -1,
        "An unknown error occurred processing your request. Please try again later.",
    ),
    "ValidationError": (-2, "Validation error: injected by the sandbox"),
    "Invalid_Key": (-1, "Invalid API key"),
    "PaymentRequired": (
        10,
        "Email sending is only available for accounts with a positive balance.",
    ),
    "ServiceUnavailable": (-2, "Service Temporarily Unavailable"),
    "Unknown_Template": (5, "No such template"),
    "Unknown_Subaccount": (12, "No subaccount exists with the id injected"),
    "RequestLimitExceeded": (429, "Too Many Requests attempted recently"),
}


@dataclass
class FaultPlan:
    """The current fault settings; replaced as a whole by POST /sandbox/faults."""

    errors: dict[str, float] = field(default_factory=dict)
    http_429: float = 0.0
    http_5xx: float = 0.0
    http_5xx_status: int = 503
    timeout: float = 0.0
    timeout_s: float = 30.0
    lost_answer: float = 0.0
    dropped: float = 0.0
    search_lag_s: float = 0.0
    latency_ms: float = 0.0
    only: list[str] = field(default_factory=list)
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        """Build from admin-endpoint JSON; unknown keys and bad values raise ValueError."""
        allowed = set(cls.__dataclass_fields__)
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; allowed {sorted(allowed)}")
        plan = cls(**data)
        plan.check()
        return plan

    def check(self) -> None:
        """Reject rates outside 0..1, unknown error names and total rates above 1."""
        for name, rate in self.errors.items():
            if name not in ERRORS:
                raise ValueError(f"unknown error name {name!r}; known: {sorted(ERRORS)}")
            _check_rate(f"errors.{name}", rate)
        for name in ("http_429", "http_5xx", "timeout", "lost_answer", "dropped"):
            _check_rate(name, getattr(self, name))
        total = (
            sum(self.errors.values())
            + self.http_429
            + self.http_5xx
            + self.timeout
            + self.lost_answer
            + self.dropped
        )
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:.3f} > 1")
        if self.latency_ms < 0 or self.timeout_s < 0 or self.search_lag_s < 0:
            raise ValueError("latency_ms, timeout_s and search_lag_s must be >= 0")
        if not 500 <= self.http_5xx_status <= 599:
            raise ValueError("http_5xx_status must be 5xx")

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as GET /sandbox/faults shows it."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _check_rate(name: str, rate: Any) -> None:
    if not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be a rate between 0 and 1, got {rate!r}")


@dataclass(frozen=True)
class Fault:
    """The fault drawn for one call: error | 429 | 5xx | timeout | lost_answer | dropped."""

    kind: str
    detail: str = ""


class FaultInjector:
    """Thread-safe holder of the plan and its seeded random stream."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self.set(plan or FaultPlan())

    def set(self, plan: FaultPlan) -> None:
        """Replace the plan and restart the random stream and the counts from its seed."""
        plan.check()
        with self._lock:
            self.plan = plan
            self._random = random.Random(plan.seed)  # noqa: S311 - reproducible faults
            self._injected: Counter[str] = Counter()

    def injected(self) -> dict[str, int]:
        """Faults drawn since the plan was set, by kind (an error by its Mandrill name).

        A fault test reads these to prove its faults really happened: a seed that draws
        none would otherwise pass without testing anything.
        """
        with self._lock:
            return dict(self._injected)

    def draw(self, operation: str) -> Fault | None:
        """Draw the fault for this call, or None; one draw per call keeps runs reproducible."""
        with self._lock:
            plan = self.plan
            if plan.only and operation not in plan.only:
                return None
            roll = self._random.random()
        fault = _fault_for(plan, roll)
        if fault is not None:
            with self._lock:
                self._injected[fault.detail if fault.kind == "error" else fault.kind] += 1
        return fault


def _fault_for(plan: FaultPlan, roll: float) -> Fault | None:
    threshold = 0.0
    for name, rate in sorted(plan.errors.items()):
        threshold += rate
        if roll < threshold:
            return Fault("error", name)
    for kind, rate in (
        ("429", plan.http_429),
        ("5xx", plan.http_5xx),
        ("timeout", plan.timeout),
        ("lost_answer", plan.lost_answer),
        ("dropped", plan.dropped),
    ):
        threshold += rate
        if roll < threshold:
            return Fault(kind)
    return None
