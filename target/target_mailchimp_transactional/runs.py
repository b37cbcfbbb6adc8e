"""Which run holds a claim, and whether that run is still alive.

Each target run has an id, written as `claimed_by` on the triggers it claims. A later run that
finds rows `claimed` or `sending` must know whether their run is still working on them (a
concurrent run on the same PostgreSQL ledger: hands off) or is gone (a crash: the rows are its
to settle). The answer depends on the ledger's database:

- PostgreSQL: the run holds a session advisory lock named after its id for as long as it
  lives; the server drops it when the session ends, however the process died. A run is alive
  exactly when its lock cannot be taken.
- DuckDB: a database file admits one writing process, and a process runs one target at a
  time (`signalmail watch` runs them one after another), so any other run is gone.
- Anything else (SQLite): unknown; the caller falls back to the claim's age.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from typing import Any

import sqlalchemy as sa

#: first key of the two-key advisory lock, so signalmail's locks never meet another app's
LOCK_NAMESPACE = 0x5167_6D6C  # "Sgml"


def _lock_key(run_id: str) -> int:
    """Derive a signed 32-bit key, the second half of the advisory lock."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:4], "big", signed=True)


class RunLease:
    """A run's id in the ledger, and the liveness of the runs whose rows it finds."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.run_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._session: Any = None
        if self.dialect == "postgresql":
            self._session = engine.connect()
            self._session.execute(
                sa.text("select pg_advisory_lock(:ns, :key)"),
                {"ns": LOCK_NAMESPACE, "key": _lock_key(self.run_id)},
            )
            self._session.commit()  # the lock is the session's, not the transaction's

    def alive(self, run_id: str | None) -> bool | None:
        """Tell whether the run `run_id` may still be working on its claims (None: unknown)."""
        if run_id == self.run_id:
            return True
        if run_id is None:  # a row claimed before runs had ids
            return None
        if self.dialect == "duckdb":
            return False
        if self.dialect != "postgresql":
            return None
        params = {"ns": LOCK_NAMESPACE, "key": _lock_key(run_id)}
        with self.engine.connect() as conn:
            taken = conn.execute(
                sa.text("select pg_try_advisory_lock(:ns, :key)"), params
            ).scalar_one()
            if taken:
                conn.execute(sa.text("select pg_advisory_unlock(:ns, :key)"), params)
            conn.commit()
        return not taken

    def close(self) -> None:
        """Give up the lease (the session's end would too; a pooled session does not end)."""
        if self._session is not None:
            try:
                self._session.execute(
                    sa.text("select pg_advisory_unlock(:ns, :key)"),
                    {"ns": LOCK_NAMESPACE, "key": _lock_key(self.run_id)},
                )
                self._session.commit()
            finally:
                self._session.close()
                self._session = None
