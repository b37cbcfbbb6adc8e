"""dbt's log file of a test warehouse, read from a point on: what one run did."""

from __future__ import annotations

from pathlib import Path

from testkit.harness import Warehouse


def _path(wh: Warehouse) -> Path:
    return Path(wh.target_dir) / "logs" / "dbt.log"


def log_size(wh: Warehouse) -> int:
    """The log's size in bytes now (0 before the first run): where the next run's lines start."""
    path = _path(wh)
    return path.stat().st_size if path.exists() else 0


def log_lines(wh: Warehouse, since: int) -> list[str]:
    """The lines of dbt's log file from byte `since` on."""
    with open(_path(wh), "rb") as log:
        log.seek(since)
        return log.read().decode("utf-8", "replace").splitlines()
