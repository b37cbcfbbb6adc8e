"""A long-lived dbt for near-real-time ticks: the project is parsed once, not per tick.

The dbt CLI costs about ten seconds a tick (start Python, import dbt, parse the project,
connect); dbt's programmatic `dbtRunner` with a kept manifest runs the same selection in a few.
One per process and warehouse: dbt-duckdb keeps one DuckDB handle per process and holds the file
open between invocations, so on DuckDB the loader and the warehouse tap must work through the
same process (see `signalmail.watch.warehouse`).

dbt keeps compile state on the manifest's nodes (`compiled`, `extra_ctes_injected`), so a
reused manifest would neither re-inject ephemeral models on the next invocation
(`__dbt__cte__... does not exist`) nor recompile them (stg_signalmail__send_ledger decides at
compile time whether the ledger exists). `invoke()` clears that state first, as a fresh parse
would. Each invocation skips writing manifest.json and run_results.json: the result comes back
in memory, and rewriting an unchanged manifest was a tenth of a tick.

It logs nothing by default: dbt formats every event (each SQL statement, each node) for each
logger before the logger's level filters it, so even `--quiet` or a file log at `warn` pays for
debug-level formatting, a fifth of a tick's Python time. Failures still come back, as DbtFailed
with each failed node's message. `file_log_level="debug"` writes a tick's statements to
`logs/dbt.log`.

Python's cyclic garbage collector is told to leave the kept objects alone: after the first
invocation, what is still alive (the manifest and what else this process keeps: about 215,000
objects for this project) moves to the collector's permanent generation (`gc.freeze()`).
Otherwise the one full collection a tick's allocations trigger walks all of them while every dbt
thread waits for the interpreter lock: 130-200 ms once a tick on PostgreSQL at 1M events, and
about 250 ms of collections in all, against 100 ms (none over 30 ms) frozen. Objects made later
are collected as before; a kept object that becomes garbage is freed by its reference count.
dbt resets its adapters at the start of every invocation (adapter_management in dbt's
cli/requires.py) and registers new ones: the first invocation's adapter is frozen with the rest
and, should it sit in a reference cycle, stays for the life of the process (once, not per
tick); later adapters are not frozen and are collected as usual.

On PostgreSQL each dbt thread keeps its connection from node to node within a tick
(`invoke(..., reuse_connections=True)`, `keep_postgres_connections`). dbt closes a thread's
connection after every node and opens a new one for the next (BaseConnectionManager.release):
a new backend and a password exchange, 9 ms a node on this machine over 127.0.0.1, and a TLS
handshake more to a remote server, for about 25 nodes a tick. dbt-snowflake's
`reuse_connections` setting does the same (its release() in
dbt/adapters/snowflake/connections.py returns without closing): dbt's own cleanup at the end of
every invocation (adapter_management) still closes them all, so nothing stays open between ticks.
Only for ticks, which last seconds: in a long build (the nightly, minutes) a kept connection
would wait idle while the other thread runs a long model, or for the whole build (the main
thread's, between the hooks), and a server's `idle_session_timeout` or a proxy's idle limit
could end it under the next statement. Those invocations connect per node, as dbt does.

The test hook `signals:model` (signalmail.watch.steps.KILL_ENV) kills the process when the first
model of an invocation that names it has finished, through a dbtRunner callback on dbt's
NodeFinished event: dbt is then mid-build, that model committed, the rest not run. Without the
hook no callback is registered.
"""

from __future__ import annotations

import gc
import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signalmail.watch.singer import KILL_ENV, kill_point

if TYPE_CHECKING:  # dbt is imported when a WarmDbt is made (the dbt extra, a heavy import)
    from dbt.contracts.graph.manifest import Manifest
    from dbt_common.events.base_types import EventMsg


#: set while an invocation that reuses connections runs (see WarmDbt.invoke)
_REUSING = threading.Event()


def keep_postgres_connections() -> None:
    """Make dbt-postgres keep a thread's healthy connection for its next node (module docstring).

    A connection goes back to the thread idle: an open transaction (a data test's select leaves
    one) is rolled back first, as closing would. One that is closed, broken or not idle is
    released as dbt does, so a node after a lost connection opens a new one. Session settings
    a node makes outlive it on the kept connection: the project's hooks make only `jit = off`,
    the same for every node, and `set local` ones (postgres_planner). Process-wide and
    idempotent; does nothing without dbt-postgres.
    """
    try:
        import psycopg2  # type: ignore[import-untyped]  # dbt-postgres' driver, without stubs
        from dbt.adapters.postgres.connections import PostgresConnectionManager
        from psycopg2.extensions import TRANSACTION_STATUS_IDLE  # type: ignore[import-untyped]
    except ImportError:
        return
    release = PostgresConnectionManager.release
    if getattr(release, "keeps_connection", False):
        return

    def release_unless_healthy(self: PostgresConnectionManager) -> None:
        connection = self.get_if_exists()
        if _REUSING.is_set() and connection is not None and connection.state == "open":
            handle = connection.handle
            try:
                if connection.transaction_open and not handle.closed:
                    self.rollback_if_open()
                idle = not handle.closed
                idle = idle and handle.get_transaction_status() == TRANSACTION_STATUS_IDLE
            except psycopg2.Error:  # a broken connection: released below, as dbt would
                idle = False
            if idle:
                return
        release(self)

    release_unless_healthy.keeps_connection = True  # type: ignore[attr-defined]
    PostgresConnectionManager.release = release_unless_healthy  # type: ignore[method-assign,assignment]


class DbtFailed(RuntimeError):
    """A dbt invocation failed; the message names each failed node and why."""

    @classmethod
    def raise_for(cls, result: Any, args: Sequence[str]) -> None:
        """Raise for a dbtRunner result that did not succeed, naming each failed node."""
        if result.success:
            return
        failed = [
            # a node's result names its node; a run-operation's result names itself
            f"{getattr(item, 'node', item).unique_id}: {item.message}"
            for item in getattr(result.result, "results", None) or []
            if str(item.status) in ("error", "fail")
        ]
        raise cls(f"dbt {' '.join(args)} failed: {failed or result.exception}")


class WarmDbt:
    """dbt's `dbtRunner` over a manifest parsed once (see the module docstring)."""

    def __init__(
        self,
        project_dir: Path,
        env: dict[str, str],
        dbt_vars: dict[str, Any] | None = None,
        file_log_level: str = "none",
    ) -> None:
        from dbt.cli.main import dbtRunner
        from dbt.contracts.graph.manifest import Manifest

        keep_postgres_connections()

        # profiles.yml reads these through env_var(); dbt has no other way to be given them
        os.environ.update(env)
        self.vars = dict(dbt_vars or {})
        self.common = [
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            str(project_dir),
            "--log-level",
            "none",
            "--log-level-file",
            file_log_level,
        ]
        parsed = dbtRunner().invoke(["parse", "--quiet", *self._with_vars(), *self.common])
        if not parsed.success:
            raise DbtFailed(f"dbt parse failed: {parsed.exception}")
        # dbtRunnerResult.result is a union over every command; `parse` gives the Manifest
        assert isinstance(parsed.result, Manifest), type(parsed.result)
        self.manifest: Manifest = parsed.result
        #: the test hook point of the invocation running now (see `invoke`)
        self._kill_at: str | None = None
        callbacks: list[Callable[[EventMsg], None]] = (
            [self._kill_after_first_model] if os.environ.get(KILL_ENV) else []
        )
        self.runner = dbtRunner(manifest=self.manifest, callbacks=callbacks)
        #: whether the long-lived objects are frozen yet (see the module docstring)
        self.frozen = False

    def _with_vars(self, overrides: dict[str, Any] | None = None) -> list[str]:
        return ["--vars", json.dumps({**self.vars, **(overrides or {})})]

    def _kill_after_first_model(self, event: Any) -> None:
        """Kill at the tick's first finished model if the test hook says so (a dbt callback)."""
        if self._kill_at is None or event.info.name != "NodeFinished":
            return
        if event.data.node_info.resource_type == "model":
            kill_point(self._kill_at)

    def invoke(
        self,
        *args: str,
        vars_override: dict[str, Any] | None = None,
        kill_at: str | None = None,
        reuse_connections: bool = False,
    ) -> Any:
        """Run `dbt <args>` on the parsed project; return dbt's result or raise DbtFailed.

        `vars_override` changes vars for this invocation only. The kept manifest is not parsed
        again, so only vars read when SQL compiles may change this way (the tick's
        `lookback_minutes`), never ones a model's config reads. `kill_at` names this
        invocation's test hook point (see the module docstring). `reuse_connections`: each dbt
        thread keeps its PostgreSQL connection from node to node (for ticks, which last
        seconds; see the module docstring).
        """
        from dbt.contracts.graph.nodes import CompiledNode

        self._kill_at = kill_at
        for node in self.manifest.nodes.values():
            # every node but a seed is compiled (a SeedNode's extra_ctes* are read-only
            # properties, always empty): only compiled ones keep compile state
            if isinstance(node, CompiledNode):
                node.compiled = False
                node.extra_ctes_injected = False
                node.extra_ctes = []
                node._pre_injected_sql = None
        if reuse_connections:
            _REUSING.set()
        try:
            result = self.runner.invoke(
                [*args, "--no-write-json", *self._with_vars(vars_override), *self.common]
            )
        finally:
            _REUSING.clear()
        if not self.frozen:
            gc.collect()  # the first invocation's garbage is not kept
            gc.freeze()
            self.frozen = True
        DbtFailed.raise_for(result, args)
        return result

    def nodes_tagged(self, tag: str) -> list[str]:
        """Names of the models carrying `tag` (the nightly ones the tick only reads)."""
        from dbt.artifacts.resources.types import NodeType

        return sorted(
            node.name
            for node in self.manifest.nodes.values()
            if node.resource_type == NodeType.Model and tag in node.tags
        )

    def release(self) -> None:
        """Close dbt-duckdb's handle on the database (the next invocation opens it again)."""
        try:
            from dbt.adapters.duckdb.connections import DuckDBConnectionManager
        except ImportError:  # dbt-duckdb not installed: nothing is open
            return
        DuckDBConnectionManager.close_all_connections()
