"""The send engine: triggers in, Mandrill calls out, every trigger's fate in the ledger.

Kept apart from the singer-sdk sink so it can be driven (and tested) without the SDK. One
`Dispatcher` lives for the whole run; the sink hands it a drained batch of records at a time.

Per batch:
1. parse and de-duplicate the records (trigger_id; payload as JSON text or object);
2. drop triggers the ledger already knows (any state but `failed` with attempts left);
3. decide the ones that are never sent: held out, expired, bad data, unknown campaign
   (recorded at once), and the ones not due yet (`send_after` in the future: deferred, logged,
   not recorded, so the mart emits them again when due);
4. claim the rest (`sending`) in one statement, group them by campaign/variant, cut them into
   calls of at most `max_recipients_per_call` distinct addresses, and run `concurrency` calls at a
   time on threads; the main thread writes each call's results as it completes.

Exactly once (docs/activation.md, "Exactly once"): a trigger is claimed (`claimed`, with this
run's id) before anything else, and marked `sending` just before its request leaves. Only
errors where Mandrill certainly did not take the message (GeneralError, ServiceUnavailable,
429, an unnamed 503, refused connection, connect timeout) are retried; an ambiguous one (read
timeout, connection lost mid-request, empty 2xx answer, an unnamed 502, 504 or other 5xx that
a gateway gives after passing the call on) leaves the triggers `sending`, because Mandrill has no
idempotency key and the request may still land. Rows a stopped run left are settled before
anything is sent: `claimed` ones never left and are sendable again at once; `sending` ones are
looked up with messages/search and recorded as Mandrill has them, and one the search does not
find is sendable again only when the same answer shows a control (a message Mandrill accepted
well after the request) — an empty or lagging answer is never taken for "not sent".
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from target_mailchimp_transactional.blocks import BlockRenderer, BlockRenderError
from target_mailchimp_transactional.campaigns import Campaign, Variant, block_var_name
from target_mailchimp_transactional.client import (
    AmbiguousError,
    InvalidKeyError,
    MandrillClient,
    MandrillError,
    PermanentError,
    RetryableError,
    TemplateError,
    ValidationFailed,
    redact,
)
from target_mailchimp_transactional.content import (
    UNUSABLE_VALUE_ERRORS,
    ContentSettings,
    PayloadError,
    recipient_content,
    text_or_none,
)
from target_mailchimp_transactional.events import EmailSentEmitter
from target_mailchimp_transactional.ledger import Ledger, LedgerEntry, tombstone_digest, utcnow
from target_mailchimp_transactional.runs import RunLease

LOGGER = logging.getLogger("target_mailchimp_transactional")
# Characters no address Mandrill takes may hold: whitespace, the RFC 5322 specials, controls
# and invisible format characters (a zero-width space in a domain). Matched whole (fullmatch):
# `$` alone would take an address with a newline at its end.
_NOT_IN_ADDRESS = (
    '\\s"(),:;<>\\[\\\\\\]\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff'
)
EMAIL_RE = re.compile(f"[^@{_NOT_IN_ADDRESS}]+@[^@{_NOT_IN_ADDRESS}]+\\.[^@{_NOT_IN_ADDRESS}]+")
EMAIL_MAX_LENGTH = 254
METADATA_LIMIT = 250
#: Mandrill errors about the account, not the email: a failure they cause is no try of it
ACCOUNT_ERROR_NAMES = frozenset({"PaymentRequired", "Unknown_Subaccount"})
ACCEPTED = frozenset({"sent", "queued", "scheduled"})
# messages/search `state` -> ledger state. Anything Mandrill tried to deliver counts as sent.
SEARCH_STATES = {
    "sent": "sent", "bounced": "sent", "soft-bounced": "sent", "deferred": "sent",
    "spam": "sent", "unsub": "sent", "queued": "queued", "scheduled": "scheduled",
    "rejected": "rejected", "invalid": "invalid",
}  # fmt: skip


class RunStopped(RuntimeError):
    """The run cannot go on (bad key, unreachable search during reconciliation)."""


@dataclass
class Settings:
    """The target settings the engine uses (see target.py for their documentation)."""

    max_recipients_per_call: int = 500
    concurrency: int = 4
    max_retries: int = 5
    max_attempts: int = 3
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    search_calls_per_minute: int = 20
    search_batch_size: int = 50
    send_after_grace_seconds: int = 0
    reconcile_grace_seconds: int = 600
    unconfirmed_after_hours: float = 24.0
    link_domains: tuple[str, ...] = ()
    default_currency: str | None = None
    default_locale: str = "en_US"
    dry_run: bool = False
    outbox_dir: Path | None = None


class _TriggerFields(TypedDict):
    """The LedgerEntry fields every outcome of `Dispatcher._prepare` shares."""

    trigger_id: str
    campaign: str | None
    user_id: str | None
    email: str | None
    variant: NotRequired[str]
    template: NotRequired[str]


@dataclass
class Prepared:
    """A trigger ready to go: its recipient entries for the call body."""

    trigger_id: str
    campaign: Campaign
    variant: Variant
    user_id: str | None
    email: str
    name: str | None
    merge_vars: list[dict[str, Any]]
    metadata: dict[str, Any]
    retry_of_failed: bool = False
    due_at: dt.datetime | None = None

    def entry(self, state: str, **kw: Any) -> LedgerEntry:
        """Build a ledger row for this trigger."""
        return LedgerEntry(
            trigger_id=self.trigger_id,
            campaign=self.campaign.name,
            user_id=self.user_id,
            email=self.email,
            variant=self.variant.name,
            template=template_label(self.variant),
            state=state,
            due_at=self.due_at,
            **kw,
        )


@dataclass
class Outcome:
    """What happened to one trigger in a call."""

    item: Prepared
    state: str  # final ledger state, or "sending" when Mandrill gave no result for it
    reject_reason: str | None = None
    error: str | None = None
    mandrill_id: str | None = None
    #: when Mandrill's answer arrived (naive UTC), for the ledger's sent_at
    answered_at: dt.datetime | None = None
    #: whether the failure counts as one of the trigger's tries (Ledger.refund_attempts)
    spent: bool = True


@dataclass
class Accepted:
    """One email Mandrill accepted in this run, with the times latency is measured between."""

    trigger_id: str
    campaign: str
    due_at: dt.datetime | None
    sent_at: dt.datetime

    @property
    def latency_seconds(self) -> float | None:
        """Seconds from due to accepted (None when the mart gave no due time)."""
        if self.due_at is None:
            return None
        return (self.sent_at - self.due_at).total_seconds()


@dataclass
class CallResult:
    """Outcomes of one (possibly split or retried) call, and a run-stopping error if any."""

    outcomes: list[Outcome] = field(default_factory=list)
    fatal: InvalidKeyError | None = None
    template_broken: str | None = None


@dataclass
class Stats:
    """Counts per outcome for the end-of-run summary."""

    counts: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    accepted: list[Accepted] = field(default_factory=list)
    #: earliest send_after among the triggers deferred in this run
    next_deferred_at: dt.datetime | None = None

    def summary(self) -> str:
        """One log line."""
        parts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        deferred = ""
        if self.next_deferred_at is not None:
            deferred = f"; next deferred send at {self.next_deferred_at.isoformat()} UTC"
        return f"calls={self.calls}, {parts}{deferred}"


def template_label(variant: Variant) -> str:
    """Name the template for the ledger and events (slug, or `mc:<id>`)."""
    return variant.template or f"mc:{variant.mc_template_id}"


def parse_ts(value: Any) -> dt.datetime | None:
    """Naive-UTC datetime from the tap's ISO text (or a datetime)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        text = str(value).strip().replace("Z", "+00:00")
        parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


class RateLimiter:
    """At most `per_minute` calls in any 60 s window, shared by every thread."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 60.0 / max(per_minute, 1)
        self.clock = clock
        self.lock = threading.Lock()
        self.next_at = 0.0

    def acquire(self) -> None:
        """Wait for the next slot."""
        with self.lock:
            now = self.clock()
            slot = max(now, self.next_at)
            self.next_at = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class Dispatcher:
    """Sends triggers exactly once (see the module docstring for the protocol)."""

    def __init__(
        self,
        settings: Settings,
        campaigns: dict[str, Campaign],
        renderer: BlockRenderer,
        client: MandrillClient | None,
        ledger: Ledger | None,
        emitter: EmailSentEmitter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.dry_run and (client is None or ledger is None):
            raise ValueError("a live run needs a Mandrill client and a ledger")
        self.s = settings
        self.content_settings = ContentSettings(
            settings.link_domains, settings.default_currency, settings.default_locale
        )
        self.campaigns = campaigns
        self.renderer = renderer
        self.client = client
        self.ledger = ledger
        self.emitter = emitter
        self.sleep = sleep
        self.stats = Stats()
        self.broken: dict[tuple[str, str], str] = {}
        self.search_limiter = RateLimiter(settings.search_calls_per_minute)
        self.pool = ThreadPoolExecutor(max_workers=max(1, settings.concurrency))
        self._seen_dry: set[str] = set()
        self._outbox_n = 0
        self._template_content: dict[tuple[str, str], list[dict[str, str]]] = {}
        self._pending: list[Future[CallResult]] = []
        self._fatal: InvalidKeyError | None = None  # seen by the main thread
        self._stop: InvalidKeyError | None = None  # seen by the workers
        self._lock = threading.Lock()
        self.lease: RunLease | None = None

    # ---------------------------------------------------------------- start / stop

    def start(self) -> None:
        """Prove the key, then reconcile triggers a crash left in `sending`."""
        if self.s.dry_run:
            LOGGER.info(
                "dry_run: writing requests to %s, Mandrill is not called", self.s.outbox_dir
            )
            return
        assert self.client is not None
        assert self.ledger is not None
        try:
            self._with_retries(self.client.ping, "users/ping")
        except InvalidKeyError as exc:
            raise RunStopped(str(exc)) from None
        except MandrillError as exc:
            raise RunStopped(f"Mandrill at {self.client.host} is not usable: {exc}") from None
        self._index_metadata()
        self.lease = RunLease(self.ledger.engine)
        self.reconcile()

    @property
    def run_id(self) -> str:
        """Give the id this run writes as `claimed_by`."""
        assert self.lease is not None, "start() first"
        return self.lease.run_id

    def _index_metadata(self) -> None:
        """Make `trigger_id` searchable (Mandrill indexes only keys added by metadata/add)."""
        assert self.client is not None
        try:
            names = {
                m.get("name")
                for m in self._with_retries(self.client.metadata_list, "metadata/list")
            }
            if "trigger_id" not in names:
                self.client.metadata_add("trigger_id")
                LOGGER.info("indexed metadata field trigger_id for messages/search")
        except InvalidKeyError as exc:
            raise RunStopped(str(exc)) from None
        except MandrillError as exc:
            LOGGER.warning(
                "could not index metadata trigger_id (%s): crash reconciliation "
                "relies on messages/search finding it",
                exc,
            )

    def close(self) -> None:
        """Finish in-flight calls, settle this run's ambiguous sends, flush events, log."""
        if not self.s.dry_run:
            self.flush()
        self.pool.shutdown(wait=True)
        if not self.s.dry_run and self.stats.counts.get("left_sending"):
            self.reconcile(end_of_run=True)
        if self.lease is not None:
            self.lease.close()
        if self.emitter is not None:
            self.emitter.close()
        LOGGER.info("target-mailchimp-transactional: %s", self.stats.summary())

    def abandon(self) -> None:
        """After a failed run: wait for the calls in flight, record what can be, let go.

        Rows whose outcome cannot be recorded stay `claimed`/`sending` under this run's id;
        once its lease is released the next run settles them (reconcile).
        """
        self.pool.shutdown(wait=True)
        try:
            self._harvest(limit=0)
        except Exception as exc:  # already failing: the next run reconciles
            LOGGER.warning("outcomes of the failed run not recorded (%s); next run settles them",
                           exc)  # fmt: skip
        finally:
            if self.lease is not None:
                self.lease.close()
            if self.emitter is not None:
                self.emitter.close()
            if self.ledger is not None:
                self.ledger.close()

    # ---------------------------------------------------------------- reconciliation

    def reconcile(self, *, end_of_run: bool = False) -> None:
        """Settle the triggers stopped runs left `claimed` or `sending` (this run's at the end).

        - `claimed` by a run that is gone: its request never left, so `failed` (sendable again)
          at once.
        - `sending` (the request may have reached Mandrill): looked up with messages/search. A
          message found is recorded with Mandrill's state, whatever its age. One not found is
          `failed` only if the same search answer also holds a control: a message Mandrill
          accepted at least `reconcile_grace_seconds` after the trigger's request left. That
          answer was neither lost nor behind the trigger, so the absence is real. Without such
          evidence the row stays `sending` for a later run; after `unconfirmed_after_hours` it
          becomes `unconfirmed` and is never sent automatically.
        - rows of a run that is still alive (a concurrent run on PostgreSQL) are left to it.
        """
        assert self.ledger is not None
        assert self.lease is not None
        stuck = self.ledger.in_flight()
        if end_of_run:
            stuck = [r for r in stuck if r.get("claimed_by") == self.run_id]
        if not stuck:
            return
        now = utcnow()
        grace = dt.timedelta(seconds=max(0, self.s.reconcile_grace_seconds))
        alive: dict[str | None, bool | None] = {}
        never_left: list[dict[str, Any]] = []
        maybe_sent: list[dict[str, Any]] = []
        for row in stuck:
            owner = row.get("claimed_by")
            if owner != self.run_id:
                if owner not in alive:
                    alive[owner] = self.lease.alive(owner)
                running = alive[owner]
                if running is None:  # no way to ask: a claim younger than the grace may be live
                    running = row["updated_at"] > now - grace
                if running:
                    self.stats.counts["reconcile_other_run"] += 1
                    continue
            (never_left if row["state"] == "claimed" else maybe_sent).append(row)
        if not never_left and not maybe_sent:
            return
        LOGGER.warning(
            "settling %d trigger(s) %s: %d claimed but never sent, %d possibly at Mandrill",
            len(never_left) + len(maybe_sent),
            "this run left `sending`" if end_of_run else "an interrupted run left",
            len(never_left),
            len(maybe_sent),
        )
        owners = {row["trigger_id"]: row.get("claimed_by") for row in stuck}
        unsent = [
            LedgerEntry(
                trigger_id=row["trigger_id"], state="failed",
                error="claimed by a run that stopped before its request left",
                claimed_by=owners[row["trigger_id"]],
            )
            for row in never_left
        ]  # fmt: skip
        self.stats.counts["reconciled_never_sent"] += len(never_left)
        # Only while still `claimed`: the owner may be alive after all and have posted since.
        settled = self.ledger.settle(unsent, seen=("claimed",))
        searched = self._settle_by_search(maybe_sent, now, grace, end_of_run) if maybe_sent else []
        settled |= self.ledger.settle(
            [replace(e, claimed_by=owners[e.trigger_id]) for e in searched]
        )
        if len(settled) < len(unsent) + len(searched):  # another run settled or re-claimed them
            self.stats.counts["reconcile_overtaken"] += len(unsent) + len(searched) - len(settled)

    def _settle_by_search(
        self,
        rows: list[dict[str, Any]],
        now: dt.datetime,
        grace: dt.timedelta,
        end_of_run: bool,
    ) -> list[LedgerEntry]:
        """Ledger entries for the `sending` rows the evidence settles (see reconcile)."""
        assert self.ledger is not None
        by_id = {r["trigger_id"]: r for r in rows}
        oldest = min(r["updated_at"] for r in rows)
        controls = self.ledger.controls(accepted_after=oldest + grace)
        # Any of the first few will do; a random one keeps a control Mandrill cannot find
        # (sent before its metadata key was indexed) from holding every later run back.
        control = random.choice(controls) if controls else None  # noqa: S311 - not crypto
        try:
            answers = self.lookup(list(by_id), oldest, control=control)
        except MandrillError as exc:
            if end_of_run:
                LOGGER.warning("end-of-run reconciliation failed (%s); next start retries", exc)
                return []
            raise RunStopped(
                f"cannot reconcile {len(rows)} trigger(s) left `sending` (messages/search "
                f"failed: {exc}); nothing was sent, rerun when Mandrill answers"
            ) from None
        entries: list[LedgerEntry] = []
        waiting = 0
        for tid, row in by_id.items():
            msg, control_seen = answers.get(tid, (None, False))
            if msg is not None:
                entries.append(self._found(row, msg))
                continue
            absent = (
                control is not None
                and control_seen
                and row["updated_at"] + grace <= control["sent_at"]
            )
            if absent:
                assert control is not None  # absent implies a control was asked for
                entries.append(LedgerEntry(
                    trigger_id=tid, state="failed",
                    error=f"not at Mandrill: the search that found {control['mandrill_id']} "
                    "(accepted later) did not find it",
                ))  # fmt: skip
                self.stats.counts["reconciled_not_found"] += 1
            elif row["updated_at"] < now - dt.timedelta(hours=self.s.unconfirmed_after_hours):
                entries.append(LedgerEntry(
                    trigger_id=tid, state="unconfirmed",
                    error=f"no answer and no evidence after {self.s.unconfirmed_after_hours:g} "
                    "h: not sent again automatically (docs/activation.md)",
                ))  # fmt: skip
                self.stats.counts["unconfirmed"] += 1
                LOGGER.error("trigger %s is unconfirmed: never sent again automatically", tid)
            else:
                waiting += 1
        if waiting:
            self.stats.counts["reconcile_waiting"] += waiting
            LOGGER.warning(
                "%d trigger(s) possibly at Mandrill are not found yet and no search has proven "
                "them absent (a control accepted %d s after their request, found by the same "
                "answer): left `sending`, a later run settles them",
                waiting,
                self.s.reconcile_grace_seconds,
            )
        return entries

    def _found(self, row: dict[str, Any], msg: dict[str, Any]) -> LedgerEntry:
        """Record a trigger messages/search found with Mandrill's state and time."""
        tid = row["trigger_id"]
        state = SEARCH_STATES.get(str(msg.get("state")), "sent")
        self.stats.counts["reconciled_found"] += 1
        if state in ACCEPTED:
            self.stats.accepted.append(Accepted(
                tid, row.get("campaign") or "", row.get("due_at"),
                _message_time(msg) or utcnow(),
            ))  # fmt: skip
        if self.emitter is not None and state in ACCEPTED and row.get("email"):
            # The stopped run never got to emit it; the stable messageId dedupes.
            self.emitter.email_sent(
                trigger_id=tid, campaign=row.get("campaign") or "",
                variant=row.get("variant") or "", template=row.get("template") or "",
                mandrill_id=msg.get("_id"), email=row["email"],
                user_id=row.get("user_id"), status=state,
            )  # fmt: skip
        return LedgerEntry(
            trigger_id=tid, state=state, mandrill_id=msg.get("_id"),
            reject_reason=(msg.get("reject") or {}).get("reason") or (
                msg.get("state") if state == "rejected" else None),
            sent_at=_message_time(msg),
        )  # fmt: skip

    def lookup(
        self,
        trigger_ids: Sequence[str],
        since: dt.datetime,
        control: dict[str, Any] | None = None,
    ) -> dict[str, tuple[dict[str, Any] | None, bool]]:
        """messages/search by trigger_id metadata, OR-batched, within the rate limit.

        Gives, for every trigger id, the message found (or None) and whether the answer that
        was asked about it also held `control` (a trigger id Mandrill is known to have), which
        is added to every batch's query when given.
        """
        assert self.client is not None
        date_from = (since - dt.timedelta(days=1)).date().isoformat()
        out: dict[str, tuple[dict[str, Any] | None, bool]] = {}
        step = max(1, self.s.search_batch_size)
        control_id = None if control is None else str(control["trigger_id"])
        for start in range(0, len(trigger_ids), step):
            chunk = list(trigger_ids[start : start + step])
            wanted = set(chunk)
            asked = chunk + ([control_id] if control_id and control_id not in wanted else [])
            query = " OR ".join(f'u_trigger_id:"{_lucene_escape(t)}"' for t in asked)

            def call(query: str = query) -> list[dict[str, Any]]:
                self.search_limiter.acquire()
                assert self.client is not None
                return self.client.search(query, date_from=date_from, limit=1000)

            found: dict[str, dict[str, Any]] = {}
            for msg in self._with_retries(call, "messages/search"):
                tid = str((msg.get("metadata") or {}).get("trigger_id", ""))
                if tid in wanted | {control_id} and tid not in found:
                    found[tid] = msg
            control_seen = (
                control is not None
                and control_id in found
                and found[control_id].get("_id") == control["mandrill_id"]
            )
            for tid in chunk:
                out[tid] = (found.get(tid), control_seen)
        return out

    # ---------------------------------------------------------------- batches

    def dispatch(self, records: Iterable[dict[str, Any]]) -> None:
        """Handle one drained batch of records (see the module docstring)."""
        now = utcnow()
        batch: dict[str, dict[str, Any]] = {}
        for record in records:
            tid = record.get("trigger_id")
            if not tid:
                raise RunStopped(
                    "a record has no trigger_id (docs/contracts.md section 4 requires it); "
                    f"campaign={record.get('campaign')!r}, user_id={record.get('user_id')!r}"
                )
            if tid in batch:
                self.stats.counts["duplicate_in_input"] += 1
                continue
            batch[str(tid)] = record

        if self.ledger is not None:
            self._drop_forgotten(batch)
        known = self.ledger.states(batch) if self.ledger is not None else {}
        if self.s.dry_run:
            known = {t: ("dry_run", 0) for t in batch if t in self._seen_dry}
            self._seen_dry.update(batch)

        to_send: list[Prepared] = []
        new_final: list[LedgerEntry] = []
        retry_final: list[LedgerEntry] = []
        for tid, record in batch.items():
            state = known.get(tid)
            if state is not None and not (state[0] == "failed" and state[1] < self.s.max_attempts):
                self.stats.counts[f"skipped_already_{state[0]}"] += 1
                continue
            result = self._prepare(tid, record, now, retry=state is not None)
            if result is None:
                continue
            if isinstance(result, Prepared):
                to_send.append(result)
            else:
                (retry_final if state is not None else new_final).append(result)
                self.stats.counts[result.state] += 1

        if self.ledger is not None:
            self.ledger.record_new(new_final)
            self.ledger.record(retry_final)
        if self.s.dry_run:
            self._dry_run(to_send)
            return
        if to_send:
            self._send(to_send)

    def _drop_forgotten(self, batch: dict[str, dict[str, Any]]) -> None:
        """Take out the triggers of people who asked to be forgotten (`signalmail forget`).

        Nothing is recorded for them: the ledger must not learn their address again.
        """
        assert self.ledger is not None
        marks: dict[str, list[str]] = defaultdict(list)
        for tid, record in batch.items():
            if record.get("user_id"):
                marks[tid].append(tombstone_digest("user", str(record["user_id"])))
            if record.get("email"):
                marks[tid].append(tombstone_digest("email", str(record["email"])))
        forgotten = self.ledger.tombstoned(d for digests in marks.values() for d in digests)
        if not forgotten:
            return
        for tid, digests in marks.items():
            if forgotten.intersection(digests):
                del batch[tid]
                self.stats.counts["forgotten"] += 1

    def _prepare(
        self, tid: str, record: dict[str, Any], now: dt.datetime, retry: bool
    ) -> Prepared | LedgerEntry | None:
        """Return a Prepared send, a final LedgerEntry (never sent), or None (deferred)."""
        name = record.get("campaign")
        user_id = text_or_none(record.get("user_id"))
        email = text_or_none(record.get("email"))
        base: _TriggerFields = {
            "trigger_id": tid,
            "campaign": name,
            "user_id": user_id,
            "email": email,
        }
        campaign = self.campaigns.get(str(name))
        if campaign is None:
            # Configuration, not data: left `failed` so it goes out once the file exists.
            return LedgerEntry(
                **base, state="failed", error=f"no campaign file {name}.yml in campaigns_dir"
            )
        variant = campaign.variant_for(user_id, tid)
        base["variant"] = variant.name
        base["template"] = template_label(variant)
        holdout = record.get("holdout")
        if holdout is None:
            holdout = campaign.holdout_fallback(user_id, tid)
        if holdout:
            return LedgerEntry(**base, state="held_out")
        try:
            expires_at = parse_ts(record.get("expires_at"))
            send_after = parse_ts(record.get("send_after"))
            due_at = parse_ts(record.get("due_at")) or send_after
        except (ValueError, OverflowError) as exc:  # OverflowError: past year 1 or 9999 in UTC
            return LedgerEntry(**base, state="invalid", error=f"bad timestamp: {exc}")
        if expires_at is not None and expires_at <= now:
            return LedgerEntry(
                **base,
                state="invalid",
                reject_reason="expired",
                error=f"expires_at {expires_at.isoformat()} passed before sending",
            )
        if send_after is not None and send_after > now + dt.timedelta(
            seconds=self.s.send_after_grace_seconds
        ):
            # scheduled (best hour, quiet hours): the mart offers it again on every run until due
            self.stats.counts["deferred_not_due"] += 1
            nxt = self.stats.next_deferred_at
            self.stats.next_deferred_at = send_after if nxt is None else min(nxt, send_after)
            return None
        if not email or len(email) > EMAIL_MAX_LENGTH or not EMAIL_RE.fullmatch(email):
            return LedgerEntry(
                **base,
                state="invalid",
                reject_reason="invalid-email",
                error="missing or malformed email address",
            )
        try:
            content = recipient_content(record, self.content_settings, self.stats.counts)
            merge_vars = content.merge_vars(campaign, variant, self.renderer)
        except PayloadError as exc:
            return LedgerEntry(**base, state="invalid", error=str(exc))
        except KeyError as exc:
            return LedgerEntry(**base, state="invalid", error=str(exc.args[0]))
        except BlockRenderError as exc:
            return LedgerEntry(**base, state="invalid", error=str(exc))
        except UNUSABLE_VALUE_ERRORS as exc:
            # an error, with the traceback: a bug in a block or here would show as every
            # trigger of a campaign going `invalid`, which the operator must see
            LOGGER.error("trigger %s: payload not usable", tid, exc_info=True)
            return LedgerEntry(
                **base, state="invalid", error=f"payload not usable: {type(exc).__name__}: {exc}"
            )
        metadata = {"trigger_id": tid, "campaign": campaign.name, "variant": variant.name}
        if user_id:
            metadata["user_id"] = user_id
        if len(json.dumps(metadata, separators=(",", ":")).encode()) > METADATA_LIMIT:
            return LedgerEntry(
                **base, state="invalid", error=f"metadata over Mandrill's {METADATA_LIMIT} bytes"
            )
        return Prepared(
            trigger_id=tid, campaign=campaign, variant=variant, user_id=user_id, email=email,
            name=content.person["first_name"], merge_vars=merge_vars, metadata=metadata,
            retry_of_failed=retry, due_at=due_at,
        )  # fmt: skip

    def calls_for(self, items: Sequence[Prepared]) -> list[list[Prepared]]:
        """Group by campaign/variant; cut into calls with distinct addresses, in input order.

        Distinct addresses matter because Mandrill answers per email: two triggers for one
        address in one call could not be told apart.
        """
        groups: dict[tuple[str, str], list[Prepared]] = defaultdict(list)
        for item in items:
            groups[(item.campaign.name, item.variant.name)].append(item)
        calls: list[list[Prepared]] = []
        limit = max(1, self.s.max_recipients_per_call)
        for group in groups.values():
            pending = group
            while pending:
                call: list[Prepared] = []
                emails: set[str] = set()
                rest: list[Prepared] = []
                for item in pending:
                    key = item.email.lower()
                    if len(call) < limit and key not in emails:
                        call.append(item)
                        emails.add(key)
                    else:
                        rest.append(item)
                calls.append(call)
                pending = rest
        return calls

    def body_for(self, call: Sequence[Prepared]) -> dict[str, Any]:
        """Build the send-template / send-mc-template request body for one call."""
        first = call[0]
        campaign, variant = first.campaign, first.variant
        message: dict[str, Any] = {
            "from_email": variant.from_email,
            "to": [{"email": i.email, "name": i.name, "type": "to"} for i in call],
            "preserve_recipients": False,
            "merge": True,
            "merge_language": "handlebars",
            # every email gets a plain-text part, generated by Mandrill from the HTML
            "auto_text": True,
            "merge_vars": [{"rcpt": i.email, "vars": i.merge_vars} for i in call],
            "tags": list(variant.tags),
            "metadata": {"campaign": campaign.name, "variant": variant.name},
            "recipient_metadata": [{"rcpt": i.email, "values": i.metadata} for i in call],
        }
        if variant.from_name:
            message["from_name"] = variant.from_name
        if variant.subject:
            message["subject"] = variant.subject
        if variant.template:
            key = (campaign.name, variant.name)
            if key not in self._template_content:
                self._template_content[key] = self.renderer.template_content(campaign, variant)
            return {
                "template_name": variant.template,
                "template_content": self._template_content[key],
                "message": message,
            }
        body: dict[str, Any] = {
            "mc_template_id": int(variant.mc_template_id or 0),
            "message": message,
        }
        if variant.mc_template_version:
            body["mc_template_version"] = variant.mc_template_version
        return body

    # ---------------------------------------------------------------- live sends

    def _send(self, items: list[Prepared]) -> None:
        """Claim, then hand the calls to the pool and return while they are in flight.

        Preparing the next batch overlaps with Mandrill's answers to this one. In-flight calls
        are bounded (`2 x concurrency`), and `flush()` waits for all of them: the target calls it
        before it writes any Singer STATE and at the end, so state never runs ahead of the
        ledger.
        """
        assert self.ledger is not None
        entries = [i.entry("claimed") for i in items]
        claimed = self.ledger.claim(entries, self.s.max_attempts, self.run_id)
        lost = len(items) - len(claimed)
        if lost:
            self.stats.counts["skipped_claimed_elsewhere"] += lost
        items = [i for i in items if i.trigger_id in claimed]
        calls = self.calls_for(items)
        for n, call in enumerate(calls):
            self._pending.append(self.pool.submit(self._run_call, call))
            try:
                self._harvest(limit=2 * max(1, self.s.concurrency))
            except RunStopped:
                # Claimed but never attempted: back to failed, retried on the next run.
                self._finish(CallResult([
                    Outcome(i, "failed", error="run stopped: Invalid_Key", spent=False)
                    for rest in calls[n + 1 :] for i in rest
                ]))  # fmt: skip
                raise

    def flush(self) -> None:
        """Wait for every call in flight and record its outcome; raise if the run must stop."""
        self._harvest(limit=0)

    def _harvest(self, limit: int) -> None:
        """Record finished calls; block until at most `limit` remain in flight."""
        while self._pending:
            done = [f for f in self._pending if f.done()]
            if not done and len(self._pending) <= limit and self._fatal is None:
                break
            if not done:
                wait(self._pending, return_when=FIRST_COMPLETED)
                continue
            for future in done:
                self._pending.remove(future)
                self._finish(future.result())
        if self._fatal is not None and not self._pending:
            fatal, self._fatal = self._fatal, None
            raise RunStopped(str(fatal))

    def _finish(self, result: CallResult) -> None:
        """Write a call's outcomes and emit events (main thread only)."""
        assert self.ledger is not None
        if result.fatal is not None and self._fatal is None:
            self._fatal = result.fatal
        final = [o for o in result.outcomes if o.state != "sending"]
        for o in result.outcomes:
            self.stats.counts[o.state if o.state != "sending" else "left_sending"] += 1
        written = self.ledger.settle([
            o.item.entry(o.state, reject_reason=o.reject_reason, error=o.error,
                         mandrill_id=o.mandrill_id, sent_at=o.answered_at,
                         claimed_by=self.run_id)
            for o in final
        ])  # fmt: skip
        self.ledger.refund_attempts(
            [o.item.trigger_id for o in final if not o.spent and o.item.trigger_id in written],
            self.run_id,
        )
        if len(written) < len(final):
            LOGGER.error(
                "%d outcome(s) not recorded: another run settled those triggers while this run "
                "held them (two runs on one ledger without a working lease?)",
                len(final) - len(written),
            )
            self.stats.counts["outcome_overtaken"] += len(final) - len(written)
        for o in final:
            if o.state in ACCEPTED:
                self.stats.accepted.append(Accepted(
                    o.item.trigger_id, o.item.campaign.name, o.item.due_at,
                    o.answered_at or utcnow(),
                ))  # fmt: skip
        if self.emitter is not None:
            for o in final:
                if o.state in ACCEPTED:
                    self.emitter.email_sent(
                        trigger_id=o.item.trigger_id, campaign=o.item.campaign.name,
                        variant=o.item.variant.name, template=template_label(o.item.variant),
                        mandrill_id=o.mandrill_id, email=o.item.email, user_id=o.item.user_id,
                        status=o.state,
                    )  # fmt: skip

    def _run_call(self, call: list[Prepared]) -> CallResult:
        """Worker thread: one call with retries, ambiguity checks and ValidationError bisection."""
        result = CallResult()
        key = (call[0].campaign.name, call[0].variant.name)
        if self._stop is not None:
            # Claimed but never attempted: back to failed, retried on the next run.
            result.outcomes = [Outcome(i, "failed", error=f"run stopped: {self._stop.name}",
                                       spent=False) for i in call]  # fmt: skip
            return result
        if key in self.broken:
            result.outcomes = [
                Outcome(i, "failed", error=self.broken[key], spent=False) for i in call
            ]
            return result
        assert self.ledger is not None
        pending = list(call)
        attempt = 0
        while pending:
            try:
                # committed before every request (retries included): from here on the request
                # may reach Mandrill, and a run that finds these rows asks Mandrill instead of
                # sending them again
                held = self.ledger.mark_sending([i.trigger_id for i in pending], self.run_id)
            except Exception as exc:  # the ledger is unusable: send nothing it cannot record
                # before a first try nothing left; after one, an earlier try may have
                state = "failed" if attempt == 0 else "sending"
                result.outcomes += [Outcome(i, state, error=f"ledger: {exc}") for i in pending]
                return result
            if len(held) < len(pending):
                LOGGER.error(
                    "%d trigger(s) no longer claimed by this run: not sent (another run "
                    "settled them)", len(pending) - len(held),
                )  # fmt: skip
                with self._lock:
                    self.stats.counts["claim_lost"] += len(pending) - len(held)
                pending = [i for i in pending if i.trigger_id in held]
                if not pending:
                    return result
            try:
                body = self.body_for(pending)
            except Exception as exc:
                # No request went out: the call fails (retried by a later run) and the run goes
                # on. Left `sending`, the triggers would wait for a reconciliation that can only
                # find nothing, and a run that raised here lost the outcomes of other calls.
                LOGGER.exception("request for %d recipient(s) not built", len(pending))
                result.outcomes += [Outcome(i, "failed", error=f"request not built: {exc}")
                                    for i in pending]  # fmt: skip
                return result
            with self._lock:
                self.stats.calls += 1
            try:
                answers = self._post(pending, body)
            except InvalidKeyError as exc:
                self._stop = exc
                result.fatal = exc
                result.outcomes += [
                    Outcome(i, "failed", error="Invalid_Key", spent=False) for i in pending
                ]
                return result
            except TemplateError as exc:
                result.template_broken = f"{exc.name}: {exc}"
                self.broken[key] = result.template_broken  # later calls skip the campaign
                result.outcomes += [
                    Outcome(i, "failed", error=str(exc), spent=False) for i in pending
                ]
                return result
            except ValidationFailed as exc:
                if len(pending) == 1:
                    result.outcomes.append(Outcome(pending[0], "invalid", error=str(exc)))
                    return result
                # One bad recipient must not sink the others: split and send the halves.
                half = len(pending) // 2
                for part in (pending[:half], pending[half:]):
                    sub = self._run_call(part)
                    result.outcomes += sub.outcomes
                    if sub.fatal or sub.template_broken:
                        result.fatal = result.fatal or sub.fatal
                        result.template_broken = result.template_broken or sub.template_broken
                        return result
                return result
            except PermanentError as exc:
                # the account's errors are not the email's (ACCOUNT_ERROR_NAMES); any other
                # permanent answer, such as a request too large, counts as a try
                spent = exc.name not in ACCOUNT_ERROR_NAMES
                result.outcomes += [
                    Outcome(i, "failed", error=str(exc), spent=spent) for i in pending
                ]
                return result
            except AmbiguousError as exc:
                # Mandrill may have accepted the call (read timeout, connection lost, empty
                # answer) and has no idempotency key: resending now could send twice. The
                # triggers stay `sending`; the end-of-run and next-start reconciliation look
                # them up with messages/search and only the ones Mandrill lacks go out again.
                LOGGER.warning("%d recipient(s) left `sending` for reconciliation: %s",
                               len(pending), exc)  # fmt: skip
                result.outcomes += [Outcome(i, "sending", error=str(exc)) for i in pending]
                return result
            except RetryableError as exc:
                attempt += 1
                if attempt > self.s.max_retries:
                    # Mandrill was busy or down, which says nothing about the email: the try
                    # is given back, or a minute's outage under the watch (a run every few
                    # seconds) would spend every due trigger's tries; expires_at bounds it
                    result.outcomes += [
                        Outcome(i, "failed", error=f"gave up after {attempt} tries: {exc}",
                                spent=False)
                        for i in pending
                    ]  # fmt: skip
                    return result
                LOGGER.warning("retrying %d recipient(s) (try %d): %s", len(pending), attempt, exc)
                self.sleep(self._backoff(attempt))
                continue
            except Exception as exc:
                # Not one of the client's answers (a bug, an answer it could not read): the
                # request may have gone out, so the triggers stay `sending` for reconciliation,
                # as after a lost answer, and the other calls' outcomes are still recorded.
                LOGGER.exception("%d recipient(s) left `sending` after an unexpected error",
                                 len(pending))  # fmt: skip
                result.outcomes += [Outcome(i, "sending", error=f"unexpected: {exc!r}")
                                    for i in pending]  # fmt: skip
                return result
            result.outcomes += self._match(pending, answers, answered_at=utcnow())
            return result
        return result

    def _post(self, call: list[Prepared], body: dict[str, Any]) -> list[dict[str, Any]]:
        """Send one call's request (built by body_for); Mandrill's answer per recipient."""
        assert self.client is not None
        if call[0].variant.template:
            return self.client.send_template(body)
        return self.client.send_mc_template(body)

    @staticmethod
    def _match(
        call: list[Prepared], answers: list[dict[str, Any]], answered_at: dt.datetime
    ) -> list[Outcome]:
        by_email = {str(a.get("email", "")).lower(): a for a in answers}
        outcomes = []
        for item in call:
            answer = by_email.get(item.email.lower())
            if answer is None:
                outcomes.append(Outcome(item, "sending", error="no per-recipient result"))
                continue
            status = str(answer.get("status", ""))
            state = status if status in ACCEPTED | {"rejected", "invalid"} else "sent"
            outcomes.append(Outcome(
                item, state, reject_reason=answer.get("reject_reason"),
                mandrill_id=answer.get("_id"), answered_at=answered_at,
            ))  # fmt: skip
        return outcomes

    def _backoff(self, attempt: int) -> float:
        cap = min(self.s.backoff_max_seconds, self.s.backoff_base_seconds * 2 ** (attempt - 1))
        return random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not crypto

    def _with_retries(self, fn: Callable[[], Any], what: str) -> Any:
        """Retry an idempotent call (ping, search) on transient errors.

        A lost or timed-out answer is transient here too: asking again changes nothing at
        Mandrill (unlike a send).
        """
        attempt = 0
        while True:
            try:
                return fn()
            except (RetryableError, AmbiguousError) as exc:
                attempt += 1
                if attempt > self.s.max_retries:
                    raise
                LOGGER.warning("%s failed (try %d), retrying: %s", what, attempt, exc)
                self.sleep(self._backoff(attempt))

    # ---------------------------------------------------------------- dry run

    def _dry_run(self, items: list[Prepared]) -> None:
        """Write each request body (key redacted) and an HTML preview per recipient."""
        assert self.s.outbox_dir is not None
        for call in self.calls_for(items):
            self._outbox_n += 1
            first = call[0]
            folder = self.s.outbox_dir / first.campaign.name / first.variant.name
            folder.mkdir(parents=True, exist_ok=True)
            body = redact(self.body_for(call))
            endpoint = "send-template" if first.variant.template else "send-mc-template"
            (folder / f"call-{self._outbox_n:05d}.json").write_text(
                json.dumps({"endpoint": f"messages/{endpoint}", "body": body}, indent=2,
                           default=str),
                encoding="utf-8",
            )  # fmt: skip
            for item in call:
                (folder / f"{_safe(item.trigger_id)}.html").write_text(
                    preview_html(item, body), encoding="utf-8"
                )
                self.stats.counts["dry_run"] += 1


def preview_html(item: Prepared, body: dict[str, Any]) -> str:
    """Render a self-contained page: header fields, the Jinja2 blocks, the merge vars.

    The Mandrill template itself lives in Mandrill; the full email rendering is
    `signalmail templates preview`. This shows exactly what the target contributes.
    """
    esc = html.escape
    variant = item.variant
    block_vars = {
        v["name"]: v["content"] for v in item.merge_vars if v["name"].startswith("block_")
    }
    blocks = "".join(
        f"<section><h3>mc:edit=&quot;{esc(b.region)}&quot; ({esc(b.template)})</h3>"
        f"<div class='block'>{block_vars.get(block_var_name(b.region), '<em>shared block</em>')}"
        "</div>"
        "</section>"
        for b in variant.blocks
    )
    data = {v["name"]: v["content"] for v in item.merge_vars if not v["name"].startswith("block_")}
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(item.campaign.name)} / {esc(item.trigger_id)}</title>"
        "<style>body{font-family:sans-serif;max-width:760px;margin:2em auto}"
        ".block{border:1px dashed #999;padding:8px}pre{background:#f5f5f5;padding:8px}</style>"
        "</head><body>"
        f"<h1>{esc(item.campaign.name)} &middot; variant {esc(variant.name)}</h1>"
        f"<p><b>To:</b> {esc(item.email)}<br><b>From:</b> {esc(variant.from_name or '')} "
        f"&lt;{esc(variant.from_email)}&gt;<br><b>Subject:</b> "
        f"{esc(variant.subject or '(template default)')}"
        f"<br><b>Template:</b> {esc(template_label(variant))}<br><b>Tags:</b> "
        f"{esc(', '.join(variant.tags))}</p>{blocks}<h3>Merge vars (handlebars)</h3>"
        f"<pre>{esc(json.dumps(data, indent=2, default=str))}</pre>"
        f"<h3>Metadata</h3><pre>{esc(json.dumps(item.metadata, indent=2))}</pre>"
        "</body></html>"
    )


def _message_time(msg: dict[str, Any]) -> dt.datetime | None:
    """When Mandrill took a message found by messages/search (its `ts`, unix seconds)."""
    ts = msg.get("ts")
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).replace(tzinfo=None)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:150]


def _lucene_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
