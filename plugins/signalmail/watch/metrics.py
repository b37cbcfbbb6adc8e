"""Prometheus `/metrics` for the watch: the figures of the terminal view, for scraping.

Counters and histograms are updated as steps finish; the latency percentiles of the last
minute (which Prometheus cannot derive from counters alone without a query) are gauges the
watch sets after each cycle. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from signalmail.watch.status import ACCEPTED, WatchStatus, utcnow
from signalmail.watch.steps import StepResult

STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300)
LATENCY_BUCKETS = (0.5, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 60, 120, 300, 900, 3600)


class WatchMetrics:
    """The watch's metrics in their own registry (nothing of the process's default one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycles = Counter("signalmail_watch_cycles", "Watch cycles started.", registry=r)
        self.step_seconds = Histogram(
            "signalmail_watch_step_seconds",
            "Wall time of each step that ran.",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.step_last = Gauge(
            "signalmail_watch_step_last_seconds", "Wall time of the step's last run.", ["step"],
            registry=r,
        )  # fmt: skip
        self.step_errors = Counter(
            "signalmail_watch_step_errors", "Steps that failed.", ["step"], registry=r
        )
        self.events = Counter(
            "signalmail_watch_events_loaded", "Events loaded into the warehouse.", registry=r
        )
        self.outcomes = Counter(
            "signalmail_watch_triggers",
            "Triggers the email target handled, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.emails = Counter(
            "signalmail_watch_emails_sent",
            "Emails Mandrill accepted, by campaign.",
            ["campaign"],
            registry=r,
        )
        self.latency = Histogram(
            "signalmail_watch_email_latency_seconds",
            "From due (event received, or scheduled send time) to Mandrill's accepted answer.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency_last_minute = Gauge(
            "signalmail_watch_email_latency_last_minute_seconds",
            "Latency percentiles of the emails sent in the current and previous minute.",
            ["quantile"],
            registry=r,
        )
        self.deferred = Gauge(
            "signalmail_watch_emails_deferred",
            "Scheduled emails the target held back in its last run (best hour, quiet hours).",
            registry=r,
        )
        self.last_cycle = Gauge(
            "signalmail_watch_last_cycle_timestamp_seconds",
            "Unix time the last cycle finished.",
            registry=r,
        )
        self._server: Any = None

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP server in a daemon thread; returns the port (0 picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def stop(self) -> None:
        """Stop serving and release the listening socket (shutdown alone keeps it open)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def step(self, result: StepResult) -> None:
        """Count a finished step."""
        if not result.ran:
            return
        self.step_seconds.labels(result.step).observe(result.seconds)
        self.step_last.labels(result.step).set(result.seconds)
        if result.step == "capture":
            self.events.inc(result.counts.get("events", 0))
        if result.step == "activate":
            for outcome in (*ACCEPTED, "held_out", "rejected", "invalid", "failed"):
                if result.counts.get(outcome):
                    self.outcomes.labels(outcome).inc(result.counts[outcome])
            self.deferred.set(result.counts.get("deferred_not_due", 0))
            for campaign, _sent_at, seconds in result.accepted:
                self.emails.labels(campaign).inc()
                if seconds is not None:
                    self.latency.observe(max(0.0, seconds))

    def error(self, step: str) -> None:
        """Count a failed step."""
        self.step_errors.labels(step).inc()

    def cycle_finished(self, status: WatchStatus) -> None:
        """Refresh the gauges derived from the whole status."""
        self.cycles.inc()
        recent = status.latency.last_minutes(utcnow(), minutes=2)
        for name, value in (("0.5", recent.p50), ("0.95", recent.p95), ("1", recent.max)):
            self.latency_last_minute.labels(name).set(0.0 if math.isnan(value) else value)
        self.last_cycle.set_to_current_time()
