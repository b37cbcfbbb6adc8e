"""The watch loop: capture, signals and activate, again and again, in one process.

A cycle loads whatever the spool gained since the last bookmark, runs the dbt tick when there
was something new (or when `idle_tick_seconds` have passed: time alone makes some triggers due,
an idle cart for one), and hands email_triggers to the email target after each tick (or when a
scheduled send has come due). A cycle that found nothing waits `poll_seconds` before the next
look. Every step saves its bookmark once its work is durable, so the loop can be stopped at
any point:

- SIGINT or SIGTERM: the current step finishes, its bookmark is saved, the warehouse is
  checkpointed and closed, and the summary is printed;
- SIGKILL (or a crash): the next start reads the spool from the last saved bookmark (the
  loader's upsert keeps each event once) and the email target reconciles any send that was in
  flight with Mandrill before sending anything (its ledger keeps each email once).

The watch is the warehouse's only writer (see `signalmail.watch.warehouse`), so `meltano run`
must not write the same DuckDB file while it runs; on PostgreSQL both may run.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from signalmail.watch.dbt import WarmDbt
from signalmail.watch.late import LateEvents
from signalmail.watch.latency import Summary
from signalmail.watch.metrics import WatchMetrics
from signalmail.watch.restart import invalidates_duckdb
from signalmail.watch.settings import WatchSettings
from signalmail.watch.state import StateFile
from signalmail.watch.status import CycleRecord, WatchStatus, utcnow
from signalmail.watch.steps import Activate, Capture, Intent, Retention, Signals, StepResult
from signalmail.watch.view import LineView
from signalmail.watch.warehouse import open_warehouse

log = logging.getLogger("signalmail.watch")

#: Longest pause after a failed step (the pause doubles per failure in a row).
MAX_BACKOFF_SECONDS = 30.0
#: The steps every cycle may run, whose failures hold the backoff until they work again
CYCLE_STEPS = frozenset({"capture", "signals", "activate"})


class Watch:
    """One watch process (see the module docstring)."""

    def __init__(
        self,
        settings: WatchSettings,
        view: LineView,
        status: WatchStatus,
        metrics: WatchMetrics | None = None,
        fail_fast: bool = False,
        report_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.report_dir = report_dir
        self.view = view
        self.status = status
        self.metrics = metrics
        self.fail_fast = fail_fast
        self.stop = threading.Event()
        self._stopped_by: str | None = None
        self.state = StateFile(settings.state_path)
        self.late = LateEvents(self.state, settings.lookback_seconds)
        self.capture = Capture(settings, self.state, self.late)
        self.activate = Activate(settings, self.state)
        self.intent = Intent(settings)
        self.retention = Retention(settings)
        self.signals: Signals | None = None
        self.warehouse: Any = None
        self._failures = 0
        # Cycle steps whose last run failed: a cycle that does not run them (a tick is only due
        # every few seconds) is no sign they work again, so it does not reset the backoff. The
        # daily steps are left out: a nightly test that fails is reported once a day, and must
        # not slow every cycle until the next night.
        self._failing: set[str] = set()
        # Until they succeed once: the first tick builds the nightly models a fresh warehouse
        # lacks, and the first activation settles the sends a crash left claimed or sending
        # (email_triggers leaves those out, so nothing else would start the target for them).
        # A failure (the warehouse or Mandrill down at start) leaves them due, not dropped.
        self._bootstrap_due = True
        self._reconcile_due = True
        self._last_tick = 0.0
        self._tick_now = False  # triggers were released: the next cycle ticks whatever the time

    # -- lifecycle --------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Finish the current step, then stop (the SIGINT and SIGTERM handler)."""
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if signum is not None:
            # said once the step is done (_close): logging from a signal handler could
            # deadlock on the logging lock the interrupted code holds
            self._stopped_by = signal.Signals(signum).name
        self.status.stopping = True
        self.stop.set()

    def run(self, max_cycles: int | None = None, exit_when_idle: bool = False) -> WatchStatus:
        """Cycle until stopped (or `max_cycles`, or a cycle with nothing to do)."""
        previous = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            with self.view:
                self._open()
                while not self.stop.is_set():
                    worked = self.cycle()
                    if max_cycles is not None and self.status.cycle_count >= max_cycles:
                        break
                    if exit_when_idle and not worked:
                        break
                    if self._failures:
                        self.stop.wait(min(MAX_BACKOFF_SECONDS, 2.0**self._failures))
                    elif not worked:
                        self.stop.wait(self.settings.poll_seconds)
                if self.report_dir is not None:
                    self._refresh_report_models()
        finally:
            try:
                self._close()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        self.view.summary(self.status)
        if self.report_dir is not None:
            from signalmail.report import build_report

            path = build_report(self.settings, self.report_dir)
            self.view.note(f"report written to {path}")
        return self.status

    def _refresh_report_models(self) -> None:
        """Build the marts the report reads while dbt still holds the warehouse."""
        from signalmail.report.build import refresh_models

        assert self.signals is not None
        self.view.note("refreshing the report's marts")
        refresh_models(self.signals.dbt)

    def _open(self) -> None:
        settings = self.settings
        self.view.note(f"watch starting: {settings.describe()}")
        self.warehouse = open_warehouse(settings)
        began = time.perf_counter()
        dbt = WarmDbt(settings.dbt_project_dir, settings.dbt_env(), settings.watch_dbt_vars())
        self.signals = Signals(settings, dbt)
        self.view.note(f"dbt project parsed in {time.perf_counter() - began:.1f}s")

    def _close(self) -> None:
        if self._stopped_by is not None:
            self.view.note(f"{self._stopped_by}: the current step finished, stopping")
        if self.signals is not None:
            self.signals.dbt.release()
        if self.warehouse is not None and self.status.restart_reason is not None:
            # an invalidated database takes no checkpoint; the next process replays the log
            self.warehouse.abandon()
        elif self.warehouse is not None:
            began = time.perf_counter()
            self.warehouse.close()
            self.view.note(
                f"warehouse checkpointed and closed in {time.perf_counter() - began:.2f}s"
            )
        if self.metrics is not None:
            self.metrics.stop()

    # -- one cycle -------------------------------------------------------------------------

    def cycle(self) -> bool:
        """Run one cycle; True if it loaded events or handled triggers."""
        assert self.signals is not None
        signals = self.signals
        cycle = self.status.begin_cycle()
        failures_before = self.status.totals["errors"]

        captured = self._step(cycle, "capture", self.capture.run)
        loaded = captured is not None and captured.ran
        # A backlog is taken in steps (max_records_per_sync), but no rule may look at part of
        # it: a cart whose order is in the next step would look abandoned now, and an email
        # cannot be taken back. The tick and the sends wait until a capture comes back short.
        backlog = captured is not None and captured.more
        if backlog:
            self._tick_now = True  # the moment the backlog is in
        ticked = False
        idle_for = time.monotonic() - self._last_tick
        if (
            not self.stop.is_set()
            and not backlog
            and (
                self._bootstrap_due  # the first cycle's, and until it has worked
                or loaded
                or self._tick_now
                or idle_for >= self.settings.idle_tick_seconds
            )
        ):
            self._tick_now = False
            lookback = self._tick_lookback()
            ticked = self._step(cycle, "signals", lambda: signals.run(lookback)) is not None
            self._last_tick = time.monotonic()
            if ticked:
                self.late.counted()
            if self._bootstrap_due and ticked:
                ticked = self._bootstrap_nightly(cycle)
                self._bootstrap_due = not ticked
        deferred_due = (
            self.status.next_deferred_at is not None and utcnow() >= self.status.next_deferred_at
        )
        activated = None
        if (
            not self.stop.is_set()
            and not backlog
            and (ticked or self._reconcile_due or deferred_due)
        ):
            force = self._reconcile_due
            activated = self._step(cycle, "activate", lambda: self.activate.run(force=force))
            if activated is not None:
                self._reconcile_due = False
        released = activated is not None and activated.released > 0
        self._tick_now = self._tick_now or released
        self._maybe_checkpoint(cycle)
        if not backlog:
            # the nightly trains the intent model on every order so far: mid-backlog, orders
            # still in the spool would label their buyers as not having bought
            self._maybe_nightly(cycle)

        if self.status.totals["errors"] > failures_before:
            self._failures += 1
        elif not self._failing:
            self._failures = 0
        if self.metrics is not None:
            self.metrics.cycle_finished(self.status)
        self.view.cycle_finished(self.status, cycle)
        return (
            loaded
            or released
            or bool(activated is not None and activated.ran and activated.accepted)
        )

    def _tick_lookback(self) -> float | None:
        """Give the next tick's lookback, wider after late events (signalmail.watch.late)."""
        seconds = self.late.tick_lookback()
        late_from = self.late.late_from
        if seconds is not None and late_from is not None and self.late.counted_until is not None:
            self.view.note(
                f"late events received at {late_from:%Y-%m-%d %H:%M:%S} UTC: "
                f"this tick looks back {seconds:,.0f}s"
            )
        return seconds

    def _step(
        self, cycle: CycleRecord, name: str, run: Callable[[], StepResult]
    ) -> StepResult | None:
        """Run one step, recording it; a failure is logged and counted, not raised."""
        self.status.running = name
        self.view.step_started(self.status, name)
        try:
            result = run()
        except Exception as exc:
            if self.settings.engine == "duckdb" and invalidates_duckdb(exc):
                # nothing more can run in this process (see signalmail.watch.restart)
                log.error("step %s failed:\n%s", name, traceback.format_exc())
                self.status.restart_reason = f"{name}: {_first_line(exc)}"
                self.status.stopping = True
                self.stop.set()
                self.view.note(
                    f"DuckDB invalidated the warehouse during {name}; the watch restarts "
                    "from its bookmarks"
                )
                return None
            if self.fail_fast:
                raise
            log.error("step %s failed:\n%s", name, traceback.format_exc())
            self.status.error(name, _first_line(exc))
            if name in CYCLE_STEPS:
                self._failing.add(name)
            if self.metrics is not None:
                self.metrics.error(name)
            return None
        finally:
            self.status.running = None
        self._failing.discard(name)
        self.status.record(cycle, result)
        if self.metrics is not None:
            self.metrics.step(result)
        return result

    def _bootstrap_nightly(self, cycle: CycleRecord) -> bool:
        """Build the nightly models the tick reads on a fresh warehouse, then tick again."""
        assert self.signals is not None
        signals = self.signals
        missing = self.warehouse.missing_tables(self.settings.dbt_schema, signals.nightly_models())
        if not missing:
            return True
        self.view.note(f"first run: building the nightly models {', '.join(missing)}")
        if self._step(cycle, "nightly", signals.build_nightly_models) is None:
            return False
        # today's models are fresh: the full nightly build (with every test) waits for tomorrow
        self.state.save("nightly", {"date": utcnow().date().isoformat(), "ok": True})
        return self._step(cycle, "signals", signals.run) is not None

    def _maybe_checkpoint(self, cycle: CycleRecord) -> None:
        limit = self.settings.checkpoint_wal_mb * 1024 * 1024
        if self.warehouse is None or not limit or self.warehouse.wal_bytes() < limit:
            return

        def checkpoint() -> StepResult:
            began = time.perf_counter()
            self.warehouse.checkpoint()
            return StepResult("checkpoint", time.perf_counter() - began)

        self._step(cycle, "checkpoint", checkpoint)

    def _maybe_nightly(self, cycle: CycleRecord) -> None:
        """Once a day at `nightly_at` (UTC): every model and every test."""
        assert self.signals is not None
        at = self.settings.nightly_at
        if at is None or self.stop.is_set():
            return
        now = utcnow()
        today = now.date().isoformat()
        if now.time() < at or self.state.get("nightly").get("date") == today:
            return
        self.view.note("nightly build: every model and every test, then predicted intent")
        result = self._step(cycle, "nightly", self.signals.nightly)
        # a stop asked for during the build ends the nightly after its step, as after any
        # other step ("finishes the current step"); the date is not saved, so it runs again
        if self.stop.is_set():
            return
        if result is not None:
            self._step(cycle, "intent", self.intent.run)
        if self.stop.is_set():
            return
        # whatever the build's tests said: keeping events past the retention is the failure
        self._step(cycle, "retention", self.retention.run)
        # tried once a day: a failing test is reported, not retried every few seconds
        self.state.save("nightly", {"date": today, "ok": result is not None})

    # -- output ----------------------------------------------------------------------------

    def write_summary(self, path: Path) -> None:
        """Machine-readable summary (benches): every cycle and every email's latency."""
        status = self.status
        overall = status.latency.overall()
        data = {
            "started_at": status.started_at.isoformat(),
            "finished_at": utcnow().isoformat(),
            "cycles": [c.to_dict() for c in status.cycles],
            "totals": {"events": 0, "errors": 0, **status.totals},
            "emails_by_campaign": dict(status.emails_by_campaign),
            "latency": {
                **_figures(overall),
                "by_minute": [
                    {"minute": m.isoformat(), **_figures(s)} for m, s in status.latency.minutes()
                ],
                "seconds": [
                    round(v, 4) for values in status.latency.by_minute.values() for v in values
                ],
            },
            "errors": list(status.errors),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _figures(summary: Summary) -> dict[str, float | int | None]:
    """Give a latency summary as JSON (no NaN: null when there were no emails)."""

    def finite(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 4)

    return {
        "count": summary.count,
        "p50": finite(summary.p50),
        "p95": finite(summary.p95),
        "max": finite(summary.max),
    }
