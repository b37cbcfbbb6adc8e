"""Where generated or replayed events go: a data plane through rudder-sdk-python, or the spool.

Both `signalmail simulate` and `signalmail replay` feed one of these with RudderStack event dicts
(`messageId`, `type`, ids, `originalTimestamp`, `context`, type fields) and call `close()`.

The SDK path uses the real rudder-sdk-python 2.1.9 `Client` and works around its quirks
(docs/decisions.md): batch size and interval are constructor arguments (module-level settings are
ignored), `shutdown()` raises in sync mode, and identify traits go to `context.traits`.

The spool path skips HTTP entirely and fills the fields the collector would (`sentAt`,
`receivedAt`, `timestamp`, `request_ip`), so a million-event spool takes seconds, not minutes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

log = logging.getLogger("signalmail.simulate")

#: the SDK's own library name, reused on the spool path so both paths produce the same context
SPOOL_LIBRARY = {"name": "signalmail-spool-writer", "version": "1"}
_HELD_FIELDS = ("originalTimestamp", "sentAt")


class SinkError(RuntimeError):
    """Events could not be delivered (wrong write key, data plane unreachable, spool failure)."""


class EventSink(Protocol):
    """Anything that accepts RudderStack event dicts and can be closed (flushing them)."""

    #: events handed over so far, delivered or not (`failed`, where a sink has it, is a part)
    sent: int

    def send(self, event: dict[str, Any]) -> None:
        """Deliver one event (its `originalTimestamp` is the event time)."""

    def close(self) -> None:
        """Deliver everything still buffered; raise `SinkError` if some events were lost."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _sdk_client_class() -> type:
    """Return a `Client` subclass keeping per-event `originalTimestamp` (and maybe `sentAt`).

    rudder-sdk-python's public calls build the message dict themselves and offer no way to pass
    `originalTimestamp`; `_enqueue` is the one place every call goes through, so the subclass
    adds the held fields there and everything else (validation, size checks, batching, gzip,
    retries) stays the SDK's own.
    """
    from rudderstack.analytics.client import Client

    class SignalmailClient(Client):
        held: dict[str, str] | None = None

        def _enqueue(self, msg: dict[str, Any]) -> Any:
            if self.held:
                msg.update(self.held)
            return super()._enqueue(msg)

    return SignalmailClient


class SdkSink:
    """Send events with rudder-sdk-python to `data_plane_url` (a collector or RudderStack).

    `sent_at="wall"` (default) lets the SDK stamp the batch's real `sentAt`, so the data plane's
    skew correction (timestamp = receivedAt - (sentAt - originalTimestamp)) yields the simulated
    event time. `sent_at="event"` also sets each event's `sentAt` to its own event time, as a
    client whose clock reads the simulated time would; the data plane then computes
    timestamp ~ receivedAt.
    """

    def __init__(
        self,
        data_plane_url: str,
        write_key: str,
        *,
        batch_size: int = 500,
        upload_interval: float = 0.2,
        max_queue_size: int = 20000,
        max_retries: int = 3,
        timeout: float = 15.0,
        sync: bool = False,
        gzip: bool = True,
        sent_at: str = "wall",
    ) -> None:
        if not write_key:
            raise SinkError("a write key is required (--write-key or SIGNALMAIL_WRITE_KEY)")
        if sent_at not in ("wall", "event"):
            raise ValueError(f"sent_at must be 'wall' or 'event', got {sent_at!r}")
        self.sent = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.sync = sync
        self.sent_at = sent_at
        self.max_queue_size = max_queue_size
        self._lock = threading.Lock()
        self._fatal: str | None = None
        client_class = _sdk_client_class()
        self.client = client_class(
            write_key=write_key,
            host=data_plane_url.rstrip("/"),
            sync_mode=sync,
            upload_size=batch_size,
            upload_interval=upload_interval,
            max_queue_size=max_queue_size,
            max_retries=max_retries,
            timeout=timeout,
            gzip=gzip,
            on_error=self._on_error,
        )

    @property
    def fatal(self) -> str | None:
        """Describe the first batch the SDK gave up on (after its retries), if any.

        Callers stop feeding events once this is set: a wrong write key (401) is never retried,
        and an unreachable or failing data plane has already had `max_retries` chances, so
        carrying on would only lose more events, slowly.
        """
        return self._fatal

    def _on_error(self, exc: Exception, batch: list[dict[str, Any]]) -> None:
        self._record(exc, len(batch))

    def _record(self, exc: Exception, count: int) -> None:
        status = getattr(exc, "status", None)
        if status:
            reason = f"HTTP {status}: {getattr(exc, 'message', exc)}"
        else:  # requests' messages carry the URL, never the auth header
            reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        with self._lock:
            self.failed += count
            self.errors[reason] += count
            if self._fatal is None:
                self._fatal = reason

    def send(self, event: dict[str, Any]) -> None:
        """Hand one event to the SDK through its public call for the event's type."""
        held = {"originalTimestamp": event["originalTimestamp"]}
        if self.sent_at == "event":
            held["sentAt"] = event["originalTimestamp"]
        self.client.held = held
        timestamp = _parse_iso(event["originalTimestamp"])
        common = {
            "anonymous_id": event.get("anonymousId"),
            "context": dict(event.get("context") or {}),
            "timestamp": timestamp,
            "message_id": event["messageId"],
        }
        kind = event["type"]
        user_id = event.get("userId")
        self._check()
        while not self.sync and self.client.queue.qsize() >= self.max_queue_size - 1:
            # back-pressure: never let the SDK drop on a full queue; poll so a failure that
            # happens meanwhile stops us instead of waiting for every queued batch's retries
            time.sleep(0.005)
            self._check()
        try:
            if kind == "track":
                ok, _ = self.client.track(
                    user_id=user_id,
                    event=event["event"],
                    properties=event.get("properties") or {},
                    **common,
                )
            elif kind == "identify":
                traits = common["context"].pop("traits", None) or event.get("traits") or {}
                ok, _ = self.client.identify(user_id=user_id, traits=traits, **common)
            elif kind == "page":
                ok, _ = self.client.page(
                    user_id=user_id,
                    name=event.get("name"),
                    category=event.get("category"),
                    properties=event.get("properties") or {},
                    **common,
                )
            else:
                raise SinkError(f"the simulator does not send {kind!r} events")
        except SinkError:
            raise
        except Exception as exc:  # sync mode raises the SDK's APIError or a network error
            if not self.sync:
                raise
            self.sent += 1  # handed over and refused: `failed` is always a part of `sent`
            self._record(exc, 1)
            return
        self.sent += 1
        if not ok:  # queue full despite the wait above (consumer died): count it, do not hide it
            self._record(SinkError("SDK queue full"), 1)

    def _check(self) -> None:
        if self._fatal is not None:
            raise SinkError(f"the data plane did not accept a batch ({self._fatal}); stopping")

    def _discard_queue(self) -> None:
        """After a failure, drop what is still queued (counted as failed) instead of retrying it."""
        dropped = 0
        while True:
            try:
                self.client.queue.get_nowait()
            except queue.Empty:
                break
            self.client.queue.task_done()
            dropped += 1
        if dropped:
            with self._lock:
                self.failed += dropped
                self.errors["not sent: stopped after the first failed batch"] += dropped

    def close(self) -> None:
        """Flush the SDK's queue and stop its consumer; raise if any event was not accepted."""
        if not self.sync:  # Client.shutdown() raises in sync mode (no consumer threads)
            if self._fatal is not None:
                self._discard_queue()
            self.client.flush()
            self.client.join()
        if self.failed:
            details = "; ".join(f"{reason} ({n} events)" for reason, n in self.errors.items())
            raise SinkError(f"{self.failed} of {self.sent} events were not accepted: {details}")


#: the longest a live event waits in the sink's buffer before the writer has it
LIVE_CHUNK_SECONDS = 1.0


class SpoolSink:
    """Write events straight into the spool with the collector's `SpoolWriter`.

    Events are encoded here with msgspec in chunks and handed over as JSON lines; up to
    `in_flight` chunks are being fsync'd while the next one is encoded, so generation, encoding
    and the disk overlap.
    """

    def __init__(
        self,
        root: str,
        source_id: str,
        *,
        chunk_size: int = 5000,
        in_flight: int = 2,
        max_segment_bytes: int | None = None,
        writer_factory: Callable[..., Any] | None = None,
        received_at: str = "now",
        live: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if received_at not in ("now", "event"):
            raise ValueError(f"received_at must be 'now' or 'event', not {received_at!r}")
        # "event": history as a data plane received it when it happened (a backfill), so the
        # warehouse sees it arrive over the simulated days rather than all at this moment
        self.received_at_event = received_at == "event"
        if writer_factory is None:
            from signalmail.collector.spool import SpoolWriter

            writer_factory = SpoolWriter
        options: dict[str, Any] = {}
        if max_segment_bytes is not None:
            options["max_segment_bytes"] = max_segment_bytes
        # Live (events stamped with the wall clock, a few a second): each event is received
        # when it is sent, a chunk goes to the writer within a second and segments publish at
        # the collector's age, so a watch sees them as it would a collector's. Otherwise a
        # generous age: segment boundaries follow size while a bulk load is running.
        self.live = live
        self.clock = clock
        if live:
            from signalmail.collector.spool import DEFAULT_MAX_SEGMENT_AGE_S

            options["max_segment_age_s"] = DEFAULT_MAX_SEGMENT_AGE_S
        else:
            options["max_segment_age_s"] = 3600.0
        self.writer = writer_factory(root, source_id, **options)
        self._chunk_started = clock()
        self.sent = 0
        self.failed = 0
        self.chunk_size = chunk_size
        self.in_flight = in_flight
        self._encoder = msgspec.json.Encoder()
        self._buffer = bytearray()
        self._count = 0
        self._futures: list[tuple[concurrent.futures.Future[None], int]] = []
        self._now = _now_iso()

    def send(self, event: dict[str, Any]) -> None:
        """Buffer one event, filled in as the collector would have received it now."""
        if self._count == 0:
            self._chunk_started = self.clock()
        if self._count == 0 or self.live:  # live: each event received as it is sent
            self._now = _now_iso()
        context = event.get("context")
        if context is None:
            context = event["context"] = {}
        context.setdefault("library", SPOOL_LIBRARY)
        received = event["originalTimestamp"] if self.received_at_event else self._now
        event.setdefault("sentAt", received)
        event["receivedAt"] = received
        # sentAt is the wall clock here, so the skew correction keeps the event's own time
        event.setdefault("timestamp", event["originalTimestamp"])
        event.setdefault("request_ip", context.get("ip", "127.0.0.1"))
        self._encoder.encode_into(event, self._buffer, len(self._buffer))
        self._buffer += b"\n"
        self._count += 1
        if self._count >= self.chunk_size or (
            self.live and self.clock() - self._chunk_started >= LIVE_CHUNK_SECONDS
        ):
            self._submit()

    def _submit(self) -> None:
        """Hand the buffered chunk to the writer; raise `SinkError` once any chunk failed.

        A failed chunk's events count in `failed` (they were handed over, none is durable), so
        `sent - failed` is what the spool holds, as with the SDK sink.
        """
        if not self._count:
            return
        count = self._count
        self.sent += count
        try:
            future = self.writer.submit_lines(bytes(self._buffer), count)
        except Exception as exc:  # SpoolError: the writer failed earlier or is closed
            self.failed += count
            raise SinkError(f"spool write failed: {exc}") from exc
        finally:
            self._buffer.clear()
            self._count = 0
        self._futures.append((future, count))
        while len(self._futures) > self.in_flight:
            self._wait(*self._futures.pop(0))

    def _wait(self, future: concurrent.futures.Future[None], count: int) -> None:
        try:
            future.result()
        except Exception as exc:
            self.failed += count
            raise SinkError(f"spool write failed: {exc}") from exc

    def close(self) -> None:
        """Make everything durable and publish the last segment."""
        errors: list[SinkError] = []
        try:
            try:
                self._submit()
            except SinkError as exc:
                errors.append(exc)
            for future, count in self._futures:  # account for every chunk, not just the first
                try:
                    self._wait(future, count)
                except SinkError as exc:
                    errors.append(exc)
            self._futures.clear()
            if errors:
                raise errors[0]
        finally:
            self.writer.close()
