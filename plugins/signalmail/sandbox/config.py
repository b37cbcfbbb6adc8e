"""What the sandbox can be told: one dataclass the CLI and `testing.run_sandbox` fill in."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from signalmail.sandbox.faults import FaultPlan


@dataclass
class AutoEvents:
    """Rates (0..1) of events simulated automatically after each delivered message."""

    open: float = 0.0
    click: float = 0.0
    hard_bounce: float = 0.0
    unsub: float = 0.0


@dataclass
class SandboxConfig:
    """Everything the sandbox can be told; the CLI and `testing.run_sandbox` fill it."""

    db_path: Path
    api_keys: list[str] = field(default_factory=lambda: ["sandbox-key"])
    public_url: str = "http://127.0.0.1:8025"
    error_style: str = "mandrill"
    search_calls_per_minute: int = 20
    max_metadata_bytes: int = 250
    index_all_metadata: bool = False
    subaccounts: list[str] = field(default_factory=list)
    faults: FaultPlan = field(default_factory=FaultPlan)
    webhook_urls: list[str] = field(default_factory=list)
    webhook_key: str | None = None
    webhook_max_attempts: int = 5
    webhook_backoff_s: float = 0.5
    probe_webhooks: bool = True
    auto_events: AutoEvents = field(default_factory=AutoEvents)
    seed: int = 0
    mc_templates_file: Path | None = None
    clock: Callable[[], float] = time.time
