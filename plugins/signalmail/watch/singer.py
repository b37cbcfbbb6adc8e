"""A Singer tap piped into a Singer target inside this process, as `meltano run` pipes them.

Why not `meltano run` each cycle: starting Meltano, a tap and a target costs seconds, and on
DuckDB the loader and dbt must share one open database (one process may write a DuckDB file),
which only an in-process loader can. The plugins run unchanged: the tap's `sync_all()` writes
its messages to standard output, which is redirected into a spooled temporary file for the
duration (memory for small cycles, disk for a large catch-up); the target then `listen()`s to
that file, and its own standard output (its STATE messages) is captured the same way. Nothing
else in the watch prints to standard output while a step runs: the terminal view and the
logs keep their own streams.

The test hooks that SIGKILL the watch inside a plugin (see `signalmail.watch.steps.KILL_ENV`)
live here too, as `kill_at` points of `run_tap` and `run_target`: a tap killed once it has
written its first data message, a target once it has handled its first. With the variable
unset the streams are the plain ones, and nothing is counted.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
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
#: A message that carries rows: a RECORD, or a BATCH naming files of them.
_DATA = re.compile(rb'"type":\s?"(?:RECORD|BATCH)"')
#: The test hook's switch (documented at `signalmail.watch.steps.KILL_ENV`, which re-exports it).
KILL_ENV = "SIGNALMAIL_WATCH_TEST_KILL_AT"


def kill_armed(where: str) -> bool:
    """Tell whether the test hook asks for a SIGKILL at `where` (never in production)."""
    return os.environ.get(KILL_ENV) == where


def kill_point(where: str) -> None:
    """SIGKILL this process here if the test hook names `where`; a no-op otherwise.

    A line on standard error says which point it was, written unbuffered before the signal:
    a fault harness reads it to tally where its kills landed, and a plain SIGKILL from outside
    leaves no such line.
    """
    if kill_armed(where):
        os.write(2, f"signalmail watch: test hook {KILL_ENV}={where}: SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)


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


class _KillAfterData(io.BufferedIOBase):
    """A tap's standard output that SIGKILLs the process once a data message went through.

    The tap is then mid-read: it has emitted some rows (or written some batch files) and not
    the rest, nor its STATE.
    """

    def __init__(self, inner: IO[bytes], where: str) -> None:
        super().__init__()
        self.inner = inner
        self.where = where

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = self.inner.write(data)
        if _DATA.search(bytes(data)):
            kill_point(self.where)
        return written

    def flush(self) -> None:
        self.inner.flush()


def _kill_after_first_data(messages: IO[bytes], where: str) -> Iterator[bytes]:
    """Yield a target's input lines; SIGKILL once the first data message has been handled.

    singer-sdk handles a line before it asks for the next, so the kill lands when the target
    asks for the line after its first data message (or finds the input at its end): a BATCH
    message's files are then loaded and committed (target-duckdb-bulk loads them at once),
    RECORD rows are buffered; either way the target has not finished, nor emitted its STATE.
    """
    handled_data = False
    for line in messages:
        if handled_data:
            kill_point(where)
        yield line
        handled_data = handled_data or _DATA.search(line) is not None
    if handled_data:
        kill_point(where)


def run_tap(tap: Any, kill_at: str | None = None) -> TapOutput:
    """Run `tap.sync_all()` and return its messages, counted by stream.

    `kill_at` names this tap's test hook point (see the module docstring).
    """
    buffer: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, mode="w+b")  # noqa: SIM115
    out: IO[bytes] = buffer
    if kill_at is not None and kill_armed(kill_at):
        # a test hook standing in for the buffer: it writes through and SIGKILLs on cue
        out = _KillAfterData(buffer, kill_at)  # type: ignore[assignment]
    try:
        with _stdout_into(out):
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


def run_target(target: Any, output: TapOutput, kill_at: str | None = None) -> dict[str, Any] | None:
    """Feed a tap's messages to `target.listen()`; return the last STATE the target emitted.

    The target emits STATE only for what it has committed (a loader) or recorded in its ledger
    (the email target), so the returned bookmark is safe to keep. `kill_at` names this
    target's test hook point (see the module docstring).
    """
    emitted = tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b")  # noqa: SIM115
    messages: Any = output.messages
    if kill_at is not None and kill_armed(kill_at):
        messages = _kill_after_first_data(output.messages, kill_at)
    try:
        with _stdout_into(emitted):
            target.listen(messages)
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
