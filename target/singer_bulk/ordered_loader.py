"""One loader thread: a target's loads run one at a time in order, and STATE waits for them.

Why: a bulk loader reads and buffers the next batch on the main thread while the database loads
the previous one (DuckDB and psycopg release the GIL while a statement runs). A STATE message
must still never reach stdout before the rows it covers are committed: the tap resumes after
the last STATE it sees, so a crash would lose them. One load at a time keeps batches in arrival
order (a later batch wins a key) and never uses the target's one connection from two threads at
once.

The two loaders release STATE differently (`hold_states`):

- False (target-duckdb-bulk): the thread that writes a STATE first waits for the pending load
  to commit. A failed load raises its error at that wait, once.
- True (target-postgres-bulk): a STATE is held and written by the loader thread the moment the
  load submitted before it commits, so a tap that pauses (or a live stream) gets its bookmark
  saved at once; a STATE equal to the last one written is not written again. A failed load holds
  every later STATE and raises its error at every wait.
"""

from __future__ import annotations

import threading
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor

if t.TYPE_CHECKING:
    from collections.abc import Callable


class OrderedLoader:
    """Runs loads in one background thread, one at a time; writes STATE once they commit.

    `write_state` writes one STATE message to stdout (the SDK's Target._write_state_message);
    `thread_name_prefix` names the thread, started on the first load; `hold_states` picks how a
    STATE waits for the loads (module docstring).
    """

    def __init__(
        self,
        write_state: Callable[[dict], None],
        *,
        thread_name_prefix: str,
        hold_states: bool,
    ) -> None:
        self._write_state = write_state
        self._thread_name_prefix = thread_name_prefix
        self._hold_states = hold_states
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        # hold_states: STATE messages waiting for the load submitted before them, in order.
        self._held: list[dict] = []
        self._last_state_written: dict | None = None
        self._lock = threading.Lock()

    def submit(self, load: Callable[[], None]) -> None:
        """Run `load` (one batch, committed when it returns) once the previous load has finished."""
        self.wait()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=self._thread_name_prefix
            )
        with self._lock:
            pending = self._executor.submit(load)
            self._pending = pending
        if self._hold_states:
            # The STATE messages held for this load are written the moment it commits, from the
            # loader thread.
            pending.add_done_callback(self._committed)

    def wait(self) -> None:
        """Block until the pending load has committed; re-raise its error here."""
        if not self._hold_states:
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.result()
            return
        pending = self._pending
        if pending is not None:
            pending.result()  # raises the load's error: its STATE messages stay held forever
            with self._lock:
                if self._pending is pending:
                    self._pending = None
                self._write_held()

    def write_state(self, state: dict) -> None:
        """Write `state` once every load submitted before it has committed."""
        if not self._hold_states:
            self.wait()
            self._write_state(state)
            return
        # Written here when no load is pending, else by _committed when the pending one (the
        # latest) commits.
        with self._lock:
            self._held.append(state)
            pending = self._pending
            if pending is None or (pending.done() and pending.exception() is None):
                self._write_held()

    def shutdown(self) -> None:
        """Stop the loader thread once the load in flight, if any, has finished."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _committed(self, load: Future[None]) -> None:
        """Write the STATE messages held for `load` once it has committed (loader thread)."""
        if load.cancelled() or load.exception() is not None:
            return  # a failed load: the main thread raises its error, no later STATE is written
        with self._lock:
            if load is self._pending:
                self._write_held()

    def _write_held(self) -> None:
        """Write the held STATE messages in order (caller holds the lock)."""
        states, self._held = self._held, []
        for state in states:
            if state != self._last_state_written:
                self._write_state(state)
                self._last_state_written = state
