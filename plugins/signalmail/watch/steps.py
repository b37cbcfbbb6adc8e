"""The three steps of a watch cycle: capture, signals, activate.

- capture: new spool events into the raw tables (tap-rudderstack -> the engine's loader),
  bookmark `capture`;
- signals: the dbt trigger path through the warm runner (and, when the tick's nightly inputs
  do not exist yet or the nightly hour has come, the nightly models);
- activate: email_triggers -> target-mailchimp-transactional (tap-warehouse -> the target,
  ledger exactly once), bookmark `activate`.

Each returns a StepResult with what it did, which the view, /metrics and the summary report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from signalmail.watch.dbt import WarmDbt
from signalmail.watch.late import LateEvents
from signalmail.watch.restart import RESTARTS_ENV
from signalmail.watch.settings import WatchSettings
from signalmail.watch.singer import KILL_ENV as _KILL_ENV
from signalmail.watch.singer import construct, kill_armed, kill_point, run_tap, run_target
from signalmail.watch.state import StateFile

#: Test hooks (never set in production; unset, each is one environment lookup), at
#: `<step>:<point>`. SIGKILL the watch there (a line on standard error names the point first):
#:
#: - between steps: `capture:loaded` (rows committed, bookmark not yet saved), `capture:saved`,
#:   `signals:built` or `activate:sent` (the target finished, bookmark not yet saved);
#: - inside a plugin, for fault harnesses that must kill each component mid-work:
#:   `capture:read` (tap-rudderstack has emitted its first BATCH or RECORD, not the rest),
#:   `capture:loading` (the loader has loaded and committed its first batch, not the rest),
#:   `signals:model` (dbt: the tick's first model has finished, the other nodes have not),
#:   `activate:read` (tap-warehouse has emitted its first trigger, the target has not begun),
#:   `activate:sending` (Mandrill has answered the run's first send call; its outcome is not yet
#:   in the ledger, other calls may be in flight).
KILL_ENV = _KILL_ENV
#: or raise the error DuckDB raises once it has invalidated the database (first process only):
FATAL_ENV = "SIGNALMAIL_WATCH_TEST_FATAL_AT"

log = logging.getLogger("signalmail.watch")


def _fault_point(where: str) -> None:
    kill_point(where)
    if os.environ.get(FATAL_ENV) == where and RESTARTS_ENV not in os.environ:
        import duckdb

        raise duckdb.FatalException(
            "FATAL Error: Failed: database has been invalidated because of a previous fatal "
            "error (raised by the test hook " + FATAL_ENV + ")"
        )


def _kill_after_first_send() -> None:
    """Arm `activate:sending`: SIGKILL once Mandrill has answered a send call of this process.

    The email target builds its dispatcher inside `listen()`, so the hook wraps the class's one
    sending method (for this test process only, which dies at the first answer). The kill
    then falls between Mandrill taking the call and the ledger recording it.
    """
    from target_mailchimp_transactional.dispatch import Dispatcher

    post = Dispatcher._post
    if getattr(post, "kill_hook", False):
        return

    def answered_then_killed(self: Any, call: Any, body: Any) -> Any:
        answer = post(self, call, body)
        kill_point("activate:sending")
        return answer

    # a test hook, installed only when the kill variable names this point: marked so it is
    # installed once, and patched over the class because the dispatcher is built in listen()
    answered_then_killed.kill_hook = True  # type: ignore[attr-defined]
    Dispatcher._post = answered_then_killed  # type: ignore[method-assign]


@dataclass
class StepResult:
    """What one step did in one cycle."""

    step: str
    seconds: float = 0.0
    ran: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    #: activate only: (campaign, sent_at, latency seconds or None) per accepted email
    accepted: list[tuple[Any, ...]] = field(default_factory=list)
    #: activate only: earliest send time of a scheduled email the target held back
    next_deferred_at: Any = None
    #: capture only: the earliest and latest receivedAt loaded (aware UTC datetimes)
    received: tuple[Any, Any] = (None, None)
    #: capture only: it stopped at its record limit, and the spool may hold more (a backlog)
    more: bool = False

    @property
    def released(self) -> int:
        """Activate only: triggers a stopped run held that reconciliation made sendable again.

        email_triggers left them out while the ledger held them, so only a new tick offers
        them: the watch ticks again at once rather than after `idle_tick_seconds`.
        """
        return self.counts.get("reconciled_never_sent", 0) + self.counts.get(
            "reconciled_not_found", 0
        )


class Capture:
    """New spool events into the warehouse's raw tables."""

    name = "capture"

    def __init__(self, settings: WatchSettings, state: StateFile, late: LateEvents) -> None:
        self.settings = settings
        self.state = state
        self.late = late

    def _loader(self) -> Any:
        if self.settings.engine == "duckdb":
            from target_duckdb_bulk import TargetDuckDBBulk

            return construct(
                TargetDuckDBBulk, config=self.settings.loader_config(), parse_env_config=False
            )
        from target_postgres_bulk import TargetPostgresBulk

        return construct(
            TargetPostgresBulk, config=self.settings.loader_config(), parse_env_config=False
        )

    def _clear_batches(self) -> None:
        """Delete the BATCH files an earlier capture wrote and never loaded.

        The loader deletes each file it loads; a load that failed (the warehouse down) or a
        watch killed in between leaves them, and the retry writes the same events again under
        new names, up to 200,000 records a file every 30 s of an outage. Their bookmark was
        never saved, so nothing else will read them: the folder is the watch's alone.
        """
        folder = self.settings.batches_dir
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.is_file():
                path.unlink(missing_ok=True)

    def run(self) -> StepResult:
        """Read the spool from the bookmark; load what is new; save the loader's bookmark.

        The bookmark is saved with the account of late events (`signalmail.watch.late`) in one
        write, so the next tick, after a restart too, looks back far enough to count them.
        """
        from tap_rudderstack import TapRudderStack

        began = time.perf_counter()
        self._clear_batches()
        tap = construct(
            TapRudderStack,
            config=self.settings.tap_rudderstack_config(),
            state=self.state.get(self.name),
            parse_env_config=False,
        )
        output = run_tap(tap, kill_at="capture:read")
        try:
            counts = tap.last_sync_counts
            if not counts.get("files"):
                return StepResult(self.name, time.perf_counter() - began, ran=False)
            loader = self._loader()
            try:
                bookmark = run_target(loader, output, kill_at="capture:loading")
            except BaseException:
                # a failed load leaves the loader open (its connection, its load thread and,
                # on PostgreSQL, a transaction's locks the next capture's loader would wait on)
                with contextlib.suppress(Exception):
                    loader.close()
                raise
        finally:
            output.close()
        _fault_point("capture:loaded")
        received = (tap.last_sync_received.earliest, tap.last_sync_received.latest)
        bookmarks = {self.late.name: self.late.noted(*received)}
        if bookmark is not None:
            bookmarks[self.name] = bookmark
        self.state.save_many(bookmarks)
        _fault_point("capture:saved")
        events = sum(
            n
            for key, n in counts.items()
            if key not in ("files", "late_files", "files_quarantined", "blank_lines")
        )
        return StepResult(
            self.name,
            time.perf_counter() - began,
            counts={
                "files": counts.get("files", 0),
                "events": events - counts.get("rejected_events", 0),
                "rejected": counts.get("rejected_events", 0),
            },
            received=received,
            more=tap.last_sync_limited,
        )


class Signals:
    """The dbt trigger path through the warm runner; the nightly models when they are due."""

    name = "signals"
    #: models the tick reads but only the nightly build writes (see nightly_ref())
    NIGHTLY_TAG = "nightly"

    def __init__(self, settings: WatchSettings, dbt: WarmDbt) -> None:
        self.settings = settings
        self.dbt = dbt

    def run(self, lookback_seconds: float | None = None) -> StepResult:
        """`dbt build --selector trigger_path`, looking back further when late events came."""
        began = time.perf_counter()
        override = None if lookback_seconds is None else {"lookback_minutes": lookback_seconds / 60}
        result = self.dbt.invoke(
            "build",
            "--selector",
            "trigger_path",
            vars_override=override,
            kill_at="signals:model",
            reuse_connections=True,
        )
        _fault_point("signals:built")
        results = getattr(result.result, "results", None) or []
        log.info(
            "tick nodes: %s",
            ", ".join(
                f"{item.node.name}={item.execution_time:.2f}s"
                for item in sorted(results, key=lambda r: -r.execution_time)
            ),
        )
        return StepResult(self.name, time.perf_counter() - began, counts={"nodes": len(results)})

    def nightly_models(self) -> list[str]:
        """Name the models tagged nightly."""
        return self.dbt.nodes_tagged(self.NIGHTLY_TAG)

    def build_nightly_models(self) -> StepResult:
        """Build the nightly models alone (a fresh warehouse: the tick needs them to exist)."""
        began = time.perf_counter()
        self.dbt.invoke("run", "--select", f"tag:{self.NIGHTLY_TAG}")
        return StepResult("nightly", time.perf_counter() - began, counts={"models": 1})

    def nightly(self) -> StepResult:
        """`dbt build --selector nightly`: every model and every test."""
        began = time.perf_counter()
        result = self.dbt.invoke("build", "--selector", "nightly")
        nodes = len(getattr(result.result, "results", None) or [])
        return StepResult("nightly", time.perf_counter() - began, counts={"nodes": nodes})


class Intent:
    """After the nightly build: retrain the purchase-propensity model and rescore users."""

    name = "intent"

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings

    @property
    def card_path(self) -> Any:
        """Where the model card goes: beside the watch's state."""
        return self.settings.path(self.settings.state_dir) / "intent" / "model.json"

    def run(self) -> StepResult:
        """Train and score (signalmail.intent); too little history is a note, not a failure."""
        began = time.perf_counter()
        try:
            from signalmail.intent import NotEnoughHistory, train_and_score
        except ImportError:
            log.warning(
                "predicted intent is off: scikit-learn is not installed (pip install "
                "'signalmail[intent]'); purchase_probability stays null"
            )
            return StepResult(self.name, time.perf_counter() - began, ran=False)

        # DuckDB: the same process's open database (see signalmail.watch.warehouse)
        engine = self.settings.warehouse_engine()
        try:
            card = train_and_score(engine, self.settings.dbt_schema, card_path=self.card_path)
        except NotEnoughHistory as exc:
            log.info("no purchase-propensity model trained: %s", exc)
            return StepResult(self.name, time.perf_counter() - began, ran=False)
        finally:
            engine.dispose()
        return StepResult(
            self.name, time.perf_counter() - began, counts={"scored": card.scored_users}
        )


class Retention:
    """After the nightly build: drop raw events older than SIGNALMAIL_RETENTION_DAYS.

    In the watch, which is the warehouse's one writer: on DuckDB a separate `signalmail
    retention` would have to stop it first.
    """

    name = "retention"

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings

    def run(self) -> StepResult:
        """Delete from the spool and the event tables (signalmail.privacy.retention)."""
        from tap_rudderstack import storage_options

        from signalmail.privacy.retention import apply_retention

        began = time.perf_counter()
        days = self.settings.retention_days
        if days is None:
            return StepResult(self.name, 0.0, ran=False)
        report = apply_retention(
            self.settings, days, storage_options=storage_options(self.settings.spool_access)
        )
        for line in report.lines():
            log.info("retention: %s", line.strip())
        return StepResult(
            self.name,
            time.perf_counter() - began,
            counts={
                "rows": sum(report.warehouse_rows.values()),
                "segments": report.spool.segments_deleted,
            },
        )


class Activate:
    """email_triggers -> Mandrill through the email target, exactly once."""

    name = "activate"

    def __init__(self, settings: WatchSettings, state: StateFile) -> None:
        self.settings = settings
        self.state = state

    def run(self, force: bool = False) -> StepResult:
        """Read email_triggers from the bookmark and hand the rows to the target.

        With no rows the target is not started (it would only ping Mandrill), unless `force`:
        the first cycle always starts it, which reconciles sends a crash left unsettled.
        """
        from tap_warehouse import TapWarehouse
        from target_mailchimp_transactional import TargetMailchimpTransactional

        began = time.perf_counter()
        tap = construct(
            TapWarehouse,
            config=self.settings.tap_warehouse_config(),
            state=self.state.get(self.name),
            parse_env_config=False,
        )
        output = run_tap(tap, kill_at="activate:read")
        try:
            if not output.record_count and not force:
                return StepResult(self.name, time.perf_counter() - began, ran=False)
            target = construct(
                TargetMailchimpTransactional,
                config=self.settings.target_config(),
                parse_env_config=False,
            )
            if kill_armed("activate:sending"):
                _kill_after_first_send()
            bookmark = run_target(target, output)
        finally:
            output.close()
        _fault_point("activate:sent")
        if bookmark is not None:
            self.state.save(self.name, bookmark)
        stats = target.dispatcher.stats
        counts = dict(stats.counts)
        counts["triggers"] = output.record_count
        counts["calls"] = stats.calls
        return StepResult(
            self.name,
            time.perf_counter() - began,
            counts=counts,
            accepted=[(a.campaign, a.sent_at, a.latency_seconds) for a in stats.accepted],
            next_deferred_at=stats.next_deferred_at,
        )
