"""Starting the watch afresh after DuckDB invalidated its database.

When DuckDB meets an internal error it can't roll back from, it marks the database instance
invalid: every later statement in that process fails with "database has been invalidated
because of a previous fatal error", while the file on disk stays sound (the next process that
opens it replays the write-ahead log). dbt-duckdb keeps its handle to that instance for the
life of the process, so a watch can't reopen it in place. It stops at the end of the step,
as for SIGTERM, and replaces itself with a new process (`os.execv`) that resumes from the
bookmarks; loads and sends are idempotent, so nothing is lost or repeated.

Three such restarts within an hour mean the cause is not passing: the watch then exits with
the error, for a supervisor and a person to look at.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

#: Restart times (epoch seconds) this watch's earlier processes recorded, comma-separated.
RESTARTS_ENV = "SIGNALMAIL_WATCH_RESTARTS"
MAX_RESTARTS_PER_HOUR = 3

#: DuckDB invalidates the database on an internal error (a failed assertion) and says so on
#: every statement after it
_MARKERS = ("database has been invalidated", "INTERNAL Error:")
_TYPES = ("FatalException", "InternalException")


def invalidates_duckdb(exc: BaseException) -> bool:
    """Tell whether `exc` (or what caused it) left the process's DuckDB database unusable.

    dbt reports a failed node as text, so the message is read as well as the type.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if type(current).__name__ in _TYPES or any(marker in text for marker in _MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


def earlier_restarts(now: float | None = None) -> list[float]:
    """Restarts of this watch within the last hour, oldest first."""
    now = time.time() if now is None else now
    text = os.environ.get(RESTARTS_ENV, "")
    times = [float(t) for t in text.split(",") if t.strip()]
    return [t for t in times if now - t < 3600]


class TooManyRestarts(RuntimeError):
    """DuckDB failed fatally again and again: restarting does not help."""


def restart_process(reason: str, execv: Callable[[str, list[str]], object] = os.execv) -> None:
    """Replace this process with a fresh watch, the same command line (never returns).

    Raises TooManyRestarts instead when this is the fourth restart within an hour.
    """
    now = time.time()
    restarts = [*earlier_restarts(now), now]
    if len(restarts) > MAX_RESTARTS_PER_HOUR:
        raise TooManyRestarts(
            f"DuckDB invalidated the warehouse {len(restarts)} times within an hour; "
            f"the watch stops instead of restarting again. Last: {reason}"
        )
    os.environ[RESTARTS_ENV] = ",".join(f"{t:.0f}" for t in restarts)
    sys.stdout.flush()
    sys.stderr.flush()
    # sys.orig_argv is the command as started: `python -m signalmail watch ...`, or the
    # `signalmail` console script (then argv[1] is the script, which python runs again)
    execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
