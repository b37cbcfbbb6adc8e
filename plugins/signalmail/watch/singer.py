"""A Singer tap piped into a Singer target inside this process, as `meltano run` pipes them.

Why not `meltano run` each cycle: starting Meltano, a tap and a target costs seconds, and on
DuckDB the loader and dbt must share one open database (one process may write a DuckDB file),
which only an in-process loader can. The plugins run unchanged: the tap's `sync_all()` writes
its messages to standard output, which is redirected into a spooled temporary file for the
duration (memory for small cycles, disk for a large catch-up); the target then `listen()`s to
that file, and its own standard output (its STATE messages) is captured the same way. Nothing
else in the watch prints to standard output while a step runs: the terminal view and the
logs keep their own streams.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

#: Memory a tap's output may take before it spills to a temporary file.
SPOOL_MEMORY_BYTES = 64 << 20
_MESSAGE = re.compile(rb'^\{"type":\s?"(?P<type>[A-Z_]+)",\s?"stream":\s?"(?P<stream>[^"]+)"')


@dataclass
class TapOutput:
    """A tap's messages, rewound for reading, and how many RECORD messages each stream sent."""

    messages: IO[bytes]
    records: Counter[str] = field(default_factory=Counter)

    @property
    def record_count(self) -> int:
        """RECORD messages of every stream."""
        return sum(self.records.values())

    def close(self) -> None:
        """Free the buffer (and its file, if it spilled to disk)."""
        self.messages.close()


@contextlib.contextmanager
def _stdout_into(buffer: IO[bytes]) -> Iterator[None]:
    """Redirect sys.stdout (text and .buffer) into `buffer` for the block."""
    wrapper = io.TextIOWrapper(buffer, encoding="utf-8", write_through=True)
    try:
        with contextlib.redirect_stdout(wrapper):
            yield
        wrapper.flush()
    finally:
        wrapper.detach()  # keep `buffer` open: the wrapper must not close it


def construct(plugin_class: Callable[..., Any], **kwargs: Any) -> Any:
    """Instantiate a singer-sdk tap or target without letting it take over SIGINT and SIGTERM.

    singer-sdk's plugin constructor installs handlers that drain and `sys.exit(0)`, right for a
    plugin process of its own; in the watch a signal must instead let the current step finish.
    """
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return plugin_class(**kwargs)
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in saved.items():
                signal.signal(sig, handler)


def run_tap(tap: Any) -> TapOutput:
    """Run `tap.sync_all()` and return its messages, counted by stream."""
    buffer: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, mode="w+b")  # noqa: SIM115
    try:
        with _stdout_into(buffer):
            tap.sync_all()
        buffer.seek(0)
        records: Counter[str] = Counter()
        for line in buffer:
            match = _MESSAGE.match(line)
            if match is not None and match["type"] == b"RECORD":
                records[match["stream"].decode()] += 1
        buffer.seek(0)
    except BaseException:
        buffer.close()
        raise
    return TapOutput(buffer, records)


def run_target(target: Any, output: TapOutput) -> dict[str, Any] | None:
    """Feed a tap's messages to `target.listen()`; return the last STATE the target emitted.

    The target emits STATE only for what it has committed (a loader) or recorded in its ledger
    (the email target), so the returned bookmark is safe to keep.
    """
    emitted = tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b")  # noqa: SIM115
    try:
        with _stdout_into(emitted):
            target.listen(output.messages)
        emitted.seek(0)
        state: dict[str, Any] | None = None
        for line in emitted:
            line = line.strip()
            if not line:
                continue
            message = json.loads(line)
            # a target writes its state as the bare value; some wrap it in a STATE message
            if isinstance(message, dict) and message.get("type") == "STATE":
                message = message.get("value")
            if isinstance(message, dict):
                state = message
        return state
    finally:
        emitted.close()
