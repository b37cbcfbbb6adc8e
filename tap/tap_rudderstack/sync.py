"""One pass over the spool that feeds every selected stream, with a resumable spool position.

Why a pass of its own: a spool file mixes all event types, and the SDK syncs streams one after
another. Reading every file once per stream would decompress and parse the spool seven times, so
the tap reads each file once and routes each line to its stream, reusing the SDK's own pieces for
what a record goes through (property selection, type conformance, stream maps, BATCH files).

Progress (``SpoolProgress``), kept per stream under ``bookmarks.<stream>.spool``:

- ``cursor``: ``{"file": position, "line": n}`` while a file is being read: lines 1..n were
  emitted. A resumed run skips those lines. A run killed between two STATE messages re-emits the
  lines after the last cursor (at least once); the loaders upsert on the primary key, so the
  warehouse ends with each event once. STATE goes out every ``state_every_records`` records
  (at a file's end or inside a file; with BATCH messages, every ``batch_config.batch_size``
  records, once per batch) and at the end of the run.
- ``done``: positions of the files finished (or quarantined) whose segment opened within
  ``late_file_window_minutes`` of ``high_ts``, the newest finished segment. A file inside that
  window that is not in ``done`` is read whatever its place in the order: that is how a late
  file (one that sorts before files already read) is picked up. Files older than the window are
  taken as read, so ``done`` holds only the files of one window: state size and listing cost
  follow the write rate, not the age of the spool.

Streams whose progress differs (a stream selected for the first time, say) are read in separate
passes, one per distinct progress, so each stream gets every event exactly from where it stands.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import gzip
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import fsspec
import msgspec
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.encoding.base import GenericSingerWriter

from tap_rudderstack.records import EventBuilder, rejection_record
from tap_rudderstack.spool import (
    CorruptFile,
    Rejection,
    SpoolFile,
    SpoolLister,
    iter_lines,
    open_filesystem,
    parse_event,
    position_sort_tuple,
)

if TYPE_CHECKING:
    from singer_sdk import Stream, Tap

#: How far in the future a segment's opening second may be before it is distrusted.
FUTURE_SKEW_S = 300

#: Test hook (never set in production): SIGKILL the tap after this many records, to prove resume.
CRASH_ENV = "TAP_RUDDERSTACK_TEST_CRASH_AFTER_RECORDS"


class SpoolProgress:
    """How far one group of streams has read the spool (see the module docstring)."""

    __slots__ = ("cursor", "done", "high_ts")

    def __init__(
        self,
        done: set[str] | None = None,
        high_ts: int | None = None,
        cursor: tuple[str, int] | None = None,
    ) -> None:
        self.done = done or set()
        self.high_ts = high_ts
        self.cursor = cursor

    @classmethod
    def from_state(cls, stream_state: dict[str, Any]) -> SpoolProgress:
        """Progress from a stream's bookmark (empty when the stream was never synced)."""
        raw = stream_state.get("spool") or {}
        cursor = raw.get("cursor")
        return cls(
            done=set(raw.get("done") or ()),
            high_ts=raw.get("high_ts"),
            cursor=(cursor["file"], int(cursor["line"])) if cursor else None,
        )

    def to_state(self) -> dict[str, Any]:
        """JSON form, files in processing order so that state diffs read naturally."""
        state: dict[str, Any] = {
            "done": sorted(self.done, key=position_sort_tuple),
            "high_ts": self.high_ts,
        }
        if self.cursor:
            state["cursor"] = {"file": self.cursor[0], "line": self.cursor[1]}
        return state

    def horizon(self, window_s: int) -> int | None:
        """Segments opened before this second are taken as read."""
        return None if self.high_ts is None else self.high_ts - window_s

    def finish(self, spool_file: SpoolFile, window_s: int, now: float | None = None) -> None:
        """Mark a file read and forget files that fell out of the window.

        A segment named with a future second (a writer's broken clock) moves ``high_ts`` no
        further than the present, so it cannot push every other file out of the window.
        """
        self.cursor = None
        self.done.add(spool_file.position)
        ts = min(spool_file.ts, int(time.time() if now is None else now) + FUTURE_SKEW_S)
        if self.high_ts is None or ts > self.high_ts:
            self.high_ts = ts
            horizon = self.high_ts - window_s
            self.done = {p for p in self.done if position_sort_tuple(p)[0] >= horizon}


class ReceivedRange:
    """The earliest and latest `receivedAt` among the records of a sync, to the second.

    Embedders use it to see late data: `signalmail watch` widens its next dbt tick's lookback
    when a sync loaded events received before what the previous tick already counted (a
    collector that recovered its journal after a crash publishes them late). Kept as
    `YYYY-MM-DDTHH:MM:SS` text, which compares in time order: a comparison per record, no parse.
    """

    __slots__ = ("_earliest", "_latest")

    def __init__(self) -> None:
        self._earliest: str | None = None
        self._latest: str | None = None

    def add(self, value: dt.datetime | str) -> None:
        """Take one record's received_at (UTC text as the builder passes it on, or a datetime)."""
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat()
        second = value[:19]
        if self._earliest is None or second < self._earliest:
            self._earliest = second
        if self._latest is None or second > self._latest:
            self._latest = second

    @property
    def earliest(self) -> dt.datetime | None:
        """The earliest receipt (UTC, truncated to the second), None for no records."""
        return _utc_second(self._earliest)

    @property
    def latest(self) -> dt.datetime | None:
        """The latest receipt (UTC, truncated to the second), None for no records."""
        return _utc_second(self._latest)


def _utc_second(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


class FastWriter(GenericSingerWriter):
    """msgspec serialisation of Singer messages, flushing only at non-RECORD messages.

    The SDK's msgspec writer flushes stdout after every record; here records accumulate in a
    buffer and go out with the next STATE (or SCHEMA/BATCH) message, which keeps their order and
    means a STATE line is never visible before the records it covers. ``sys.stdout`` is looked up
    at write time so that the SDK's test runner (which swaps it for a StringIO) sees the output.
    """

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(decimal_format="number")
        self._buffer = bytearray()

    def serialize_message(self, message: Any) -> bytes:
        """One JSON line for an SDK message object."""
        return self._encoder.encode(message.to_dict()) + b"\n"

    def write_record(self, stream: str, record: dict[str, Any], extracted: str) -> None:
        """One RECORD line, straight from a dict (no message object on the hot path)."""
        buf = self._buffer
        buf += b'{"type":"RECORD","stream":'
        buf += self._encoder.encode(stream)
        buf += b',"record":'
        self._encoder.encode_into(record, buf, -1)
        buf += b',"time_extracted":"'
        buf += extracted.encode()
        buf += b'"}\n'
        if len(buf) > 1 << 20:
            self._drain()

    def write_message(self, message: Any) -> None:
        """Any other message: write everything pending, then flush the stream."""
        self._buffer += self.serialize_message(message)
        self.flush()

    def _drain(self) -> None:
        if not self._buffer:
            return
        out = sys.stdout
        binary = getattr(out, "buffer", None)
        if binary is not None:
            out.flush()
            binary.write(self._buffer)
        else:
            out.write(self._buffer.decode())
        self._buffer.clear()

    def flush(self) -> None:
        """Write pending bytes and flush stdout."""
        self._drain()
        sys.stdout.flush()


class SpoolSync:
    """A sync of some streams over the spool, in one or more passes (see module docstring)."""

    def __init__(self, tap: Tap, streams: list[Stream]) -> None:
        self.tap = tap
        self.streams = streams
        config = tap.config
        self.window_s = int(config.get("late_file_window_minutes", 120)) * 60
        self.state_every = max(1, int(config.get("state_every_records", 10000)))
        self.max_raw = int(config.get("max_raw_text_chars", 2000))
        start = config.get("start_date")
        self.start_ts = int(_parse_start(start).timestamp()) if start else None
        self.fs, self.root = open_filesystem(config["source"], storage_options(config))
        self.lister = SpoolLister(
            self.fs, self.root, config.get("source_ids"), config.get("logs_folder")
        )
        limit = config.get("max_records_per_sync")
        self.limit = int(limit) if limit else None
        self.emitted = 0  # records covered by a STATE written so far
        self.limited = False  # stopped at max_records_per_sync: the spool may hold more
        self.builder = EventBuilder()
        self.counts: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.received = ReceivedRange()
        crash = os.environ.get(CRASH_ENV)
        self.crash_after = int(crash) if crash else None
        self._gc_paused = False

    # -- planning -------------------------------------------------------------------------------

    def plan(self, progress: SpoolProgress) -> Iterator[tuple[SpoolFile, int, bool]]:
        """``(file, lines to skip, is_late)`` for every file this progress still has to read."""
        horizon = progress.horizon(self.window_s)
        floor = max(x for x in (horizon, self.start_ts, -1) if x is not None)
        min_date = None
        if floor > 0:
            # A folder's date is the UTC date its segments were opened; one day of slack for
            # writers that name folders by local date.
            min_date = dt.datetime.fromtimestamp(floor, dt.UTC).date() - dt.timedelta(days=1)
        newest_done = max((position_sort_tuple(p) for p in progress.done), default=None)
        for spool_file in self.lister.iter_files(min_date):
            if spool_file.ts < floor or spool_file.position in progress.done:
                continue
            skip = 0
            if progress.cursor and progress.cursor[0] == spool_file.position:
                skip = progress.cursor[1]
            late = newest_done is not None and spool_file.sort_tuple < newest_done
            yield spool_file, skip, late

    # -- one file ---------------------------------------------------------------------------------

    def read_file(
        self, spool_file: SpoolFile, skip: int
    ) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """Yield ``(line, stream, record)`` for each line after ``skip``.

        Unusable lines become ``rejected_events`` records. A corrupt or truncated gzip yields
        its good lines, then one rejection row for the damage, and the file counts as read
        (quarantined).
        """
        key = spool_file.key
        now = dt.datetime.now(dt.UTC)
        build = self.builder.build
        try:
            for line_number, line in iter_lines(self.fs, spool_file.url):
                if line_number <= skip:
                    continue
                if not line.strip():
                    self.counts["blank_lines"] += 1
                    continue
                parsed = parse_event(line)
                if isinstance(parsed, str):
                    self.rejections[parsed] += 1
                    rejection = Rejection(line_number, parsed, line)
                    yield (
                        line_number,
                        "rejected_events",
                        rejection_record(spool_file, rejection, self.max_raw, now),
                    )
                    continue
                stream, event = parsed
                yield line_number, stream, build(stream, event, key, line_number)
        except CorruptFile as exc:
            if exc.line_number <= skip:
                return
            self.counts["files_quarantined"] += 1
            self.rejections[exc.reason.split(":", 1)[0]] += 1
            self.tap.logger.warning(
                "Quarantined spool file %s at line %d: %s", key, exc.line_number, exc.reason
            )
            rejection = Rejection(exc.line_number, exc.reason, exc.tail)
            yield (
                exc.line_number,
                "rejected_events",
                rejection_record(spool_file, rejection, self.max_raw, now),
            )

    # -- single stream (SDK path) ----------------------------------------------------------------

    def iter_stream_records(self, stream: Stream) -> Iterator[dict[str, Any]]:
        """Yield one stream's records from its progress (when the SDK syncs a single stream)."""
        progress = SpoolProgress.from_state(stream.stream_state)
        for spool_file, skip, _late in self.plan(progress):
            for _line, name, record in self.read_file(spool_file, skip):
                if name == stream.name:
                    yield record

    # -- all selected streams (the tap's sync) --------------------------------------------------

    def run(self) -> None:
        """Sync every stream in ``self.streams``: one pass per distinct progress."""
        groups: dict[str, list[Stream]] = {}
        for stream in self.streams:
            key = msgspec.json.encode(stream.stream_state.get("spool") or {}).decode()
            groups.setdefault(key, []).append(stream)
        writer = self.tap.message_writer
        if not isinstance(writer, FastWriter):
            # A tap given another writer: records and STATE must share one ordered buffer.
            writer = FastWriter()
            self.tap.message_writer = writer
            self.tap.state_writer._message_writer = writer
        self._writer = writer
        self._records = 0
        for stream in self.streams:
            stream._write_schema_message()
        with _cyclic_gc_paused() as self._gc_paused:
            for group in groups.values():
                if self._limit_reached():
                    break  # the other groups resume from their own bookmarks next time
                self._run_group(group)
        writer.flush()
        self._log_counts()

    def _run_group(self, group: list[Stream]) -> None:
        progress = SpoolProgress.from_state(group[0].stream_state)
        by_name = {stream.name: stream for stream in group}
        batch = _Batches(self.tap, by_name) if self.tap.config.get("batch_config") else None
        try:
            self._read_group(group, by_name, progress, batch)
        except BaseException:
            if batch is not None:
                batch.discard()  # no BATCH message names them: nothing would ever load them
            raise

    def _read_group(
        self,
        group: list[Stream],
        by_name: dict[str, Stream],
        progress: SpoolProgress,
        batch: _Batches | None,
    ) -> None:
        emitters = {name: self._emitter(stream) for name, stream in by_name.items()}
        crash = self.crash_after is not None
        since_state = 0
        for spool_file, skip, late in self.plan(progress):
            if late:
                self.counts["late_files"] += 1
                self.tap.logger.info("Reading late spool file %s", spool_file.key)
            self.counts["files"] += 1
            extracted = dt.datetime.now(dt.UTC).isoformat()
            stopped = False
            for line, name, record in self.read_file(spool_file, skip):
                if batch is not None:
                    stream = by_name.get(name)
                    if stream is None:
                        continue
                    batch.add(stream, record)
                else:
                    emit = emitters.get(name)
                    if emit is None:
                        continue
                    emit(record, extracted)
                if crash:
                    self._crash_check()
                self.counts[name] += 1
                received = record.get("received_at")
                if received is not None:
                    self.received.add(received)
                since_state += 1
                if self._state_due(since_state, batch):
                    progress.cursor = (spool_file.position, line)
                    self._checkpoint(group, progress, batch)
                    self.emitted += since_state
                    since_state = 0
                    if self._limit_reached():
                        stopped = True  # mid-file: the cursor just written holds the place
                        break
            if not stopped:
                progress.finish(spool_file, self.window_s)
                # a finished file moves the bookmark at the next checkpoint; checkpointing after
                # every file would cost a STATE (and in BATCH mode a batch file per stream) per
                # segment, and a collector publishing one-second segments makes many small files
                if self._state_due(since_state, batch):
                    self._checkpoint(group, progress, batch)
                    self.emitted += since_state
                    since_state = 0
                    stopped = self._limit_reached()
            if stopped:
                self.limited = True
                self.tap.logger.info(
                    "Stopping at %d records (max_records_per_sync); the next sync resumes here",
                    self.emitted,
                )
                break
        self._checkpoint(group, progress, batch)
        self.emitted += since_state

    def _limit_reached(self) -> bool:
        return self.limit is not None and self.emitted >= self.limit

    def _state_due(self, since_state: int, batch: _Batches | None) -> bool:
        """Whether the next STATE is due.

        With BATCH messages a STATE closes a batch file per stream, so it comes when the batch
        is full, as in singer-sdk's own batch sync (Stream._sync_batches): every
        state_every_records it would cut each batch into files of that size.
        """
        return batch.full() if batch is not None else since_state >= self.state_every

    def _emitter(self, stream: Stream) -> Callable[[dict[str, Any], str], None]:
        """How one stream's records are written, decided once per run.

        With no stream map and no flattening configured (the common case), records go straight
        to the writer: the builder already produces the schema's types at the root level (what
        ``TYPE_CONFORMANCE_LEVEL = ROOT_ONLY`` would enforce), and deselected properties are
        dropped from a precomputed list. Otherwise every record goes through the SDK's own
        selection, conformance and stream-map pipeline.
        """
        writer = self._writer
        if _is_identity(stream):
            name = stream.name
            dropped = _unselected(stream)
            write = writer.write_record

            def emit(record: dict[str, Any], extracted: str) -> None:
                for prop in dropped:
                    record.pop(prop, None)
                write(name, record, extracted)

            return emit

        def emit_mapped(record: dict[str, Any], extracted: str) -> None:
            for message in stream._generate_record_messages(record):
                writer.write_record(message.stream, message.record, extracted)

        return emit_mapped

    def _crash_check(self) -> None:
        self._records += 1
        if self.crash_after is not None and self._records >= self.crash_after:
            self._writer.flush()  # the records go out, the STATE that would cover them does not
            os.kill(os.getpid(), signal.SIGKILL)

    def _checkpoint(
        self, group: list[Stream], progress: SpoolProgress, batch: _Batches | None
    ) -> None:
        if batch is not None:
            batch.flush()
        if self._gc_paused:
            # Between records little is alive, so a young-generation pass is cheap here, and any
            # cycle made since the last checkpoint goes now rather than at the end of a backfill.
            gc.collect(0)
        state = progress.to_state()
        for stream in group:
            stream.stream_state["spool"] = state
        self.tap.state_writer.write_state(self.tap.state)

    def _log_counts(self) -> None:
        counts = dict(sorted(self.counts.items()))
        counts["bad_timestamps"] = self.builder.bad_timestamps
        self.tap.logger.info(
            "Spool sync finished: %s; rejected by reason: %s",
            msgspec.json.encode(counts).decode(),
            msgspec.json.encode(dict(sorted(self.rejections.items()))).decode(),
        )


class _Batches:
    """BATCH mode: records written to a batch file per stream as they come, closed at checkpoints.

    A STATE message is only written after every record before it is in a closed batch file and
    its BATCH message is out, so a resumed run never skips records that were only buffered.
    Records go out in encoded chunks of ``CHUNK`` as they arrive, so the tap holds a chunk per
    stream rather than the batch: buffering 200,000 records would take about 850 MB.

    Files are written here rather than by the SDK's JSONLinesBatcher, which encodes each record
    with the standard json module and always gzips at level 9: that tripled the tap's cost per
    event. These are the same JSON-lines files (one record per line, names and manifests as the
    SDK makes them), encoded with msgspec in one call per chunk, gzipped at level 1 when
    ``encoding.compression`` is ``gzip`` and left plain when it is unset or ``none``.
    """

    #: Records encoded per write: big enough that the per-call cost vanishes, small enough that
    #: the encoded chunk stays a few MB.
    CHUNK = 2000

    def __init__(self, tap: Tap, streams: dict[str, Stream]) -> None:
        from singer_sdk.helpers._batch import BatchConfig, BatchFileFormat

        self.tap = tap
        self.config = BatchConfig.from_dict(tap.config["batch_config"])
        if self.config.encoding.format != BatchFileFormat.JSONL:
            msg = (
                f"batch_config.encoding.format {self.config.encoding.format!r} is not supported"
                " by tap-rudderstack (use jsonl)"
            )
            raise ValueError(msg)
        # The SDK's config schema already limits compression to gzip or none.
        self.gzip = self.config.encoding.compression == "gzip"
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, _BatchFile] = {}
        self.streams = streams
        # Streams without a stream map skip the SDK's per-record map step (as RECORD mode does).
        self.dropped = {
            name: _unselected(stream) for name, stream in streams.items() if _is_identity(stream)
        }
        self.size = 0
        self._encoder = msgspec.json.Encoder(decimal_format="number")
        storage = self.config.storage
        self.fs, self.root = fsspec.core.url_to_fs(storage.root, **(storage.params or {}))
        # A local folder that does not exist yet is created (object stores need nothing).
        self.fs.makedirs(self.root, exist_ok=True)

    def add(self, stream: Stream, record: dict[str, Any]) -> None:
        """Take the (mapped) record; the caller closes the batch once it is ``full()``."""
        dropped = self.dropped.get(stream.name)
        if dropped is not None:
            for prop in dropped:
                record.pop(prop, None)
            self._append(stream.name, record)
        else:
            for message in stream._generate_record_messages(record):
                self._append(message.stream, message.record)

    def full(self) -> bool:
        """Whether the batch holds ``batch_size`` records (over every stream alias).

        One record adds at most one to each alias, so no file passes ``batch_size`` when the
        batch is closed as soon as this is true.
        """
        return self.size >= self.config.batch_size

    def _append(self, alias: str, record: dict[str, Any]) -> None:
        pending = self.pending.get(alias)
        if pending is None:
            pending = self.pending[alias] = []
        pending.append(record)
        self.size += 1
        if len(pending) >= self.CHUNK:
            self._write(alias, pending)

    def _write(self, alias: str, records: list[dict[str, Any]]) -> None:
        """Encode the stream's pending records into its batch file, then forget them."""
        file = self.files.get(alias)
        if file is None:
            file = self.files[alias] = _BatchFile(self, alias)
        file.write(self._encoder.encode_lines(records))
        records.clear()

    def flush(self) -> None:
        """Close each stream alias's batch file and write one BATCH message for it."""
        from singer_sdk.helpers._batch import SDKBatchMessage

        for alias, pending in self.pending.items():
            if pending:
                self._write(alias, pending)
        for alias, file in self.files.items():
            file.close()
            self.tap.write_message(
                SDKBatchMessage(stream=alias, encoding=self.config.encoding, manifest=[file.url])
            )
        self.files.clear()
        self.size = 0

    def discard(self) -> None:
        """Remove the files of a batch that will not be closed (the sync failed)."""
        for file in self.files.values():
            file.discard()
        self.files.clear()
        self.pending.clear()
        self.size = 0


class _BatchFile:
    """One stream's file of the batch being written, opened at its first chunk.

    Written with fsspec's ``autocommit=False``, as singer-sdk's StorageTarget.open writes: the
    file appears under its name only when ``close()`` commits it (a local file is moved into
    place, an object store's upload completes), so a failed or killed run leaves no partial
    file for anything to take for a batch. Not through StorageTarget.open itself: that wraps
    each file in a transaction of the shared filesystem object, which the first file to close
    would end for all of them.
    """

    def __init__(self, batches: _Batches, alias: str) -> None:
        storage = batches.config.storage
        suffix = ".json.gz" if batches.gzip else ".jsonl"
        # named as singer-sdk's batcher names its files: <prefix><tap>--<stream>-<uuid>-<part>
        name = f"{storage.prefix or ''}{batches.tap.name}--{alias}-{uuid.uuid4()}-1{suffix}"
        self.url = storage.get_url(name)
        self._file = batches.fs.open(f"{batches.root}/{name}", "wb", autocommit=False)
        self._out = (
            gzip.GzipFile(fileobj=self._file, mode="wb", compresslevel=1)
            if batches.gzip
            else self._file
        )

    def write(self, data: bytes) -> None:
        """Append encoded lines."""
        self._out.write(data)

    def close(self) -> None:
        """Finish the file and publish it under its name."""
        if self._out is not self._file:
            self._out.close()  # the gzip trailer; GzipFile leaves the file it was given open
        self._file.close()
        self._file.commit()

    def discard(self) -> None:
        """Drop the unfinished file."""
        with contextlib.suppress(Exception):
            self._file.close()
        self._file.discard()


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[bool]:
    """Keep Python's cyclic garbage collector off for a sync, then restore it.

    Yields whether it paused the collector (not when its caller had it off already).
    Decoding an event allocates a dozen dicts and lists, so the collector's young generation
    fills every few dozen events; its passes took about 30% of the time to parse and build an
    event (docs/bench.md, backfill). Records and events form no reference cycles (reference
    counting frees them), so nothing is lost by pausing it; `_checkpoint` runs a
    young-generation pass between batches, which catches any cycle a library makes along the
    way. Restored afterwards, also when the sync raises, because `signalmail watch` runs the
    tap inside its own long-lived process.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield was_enabled
    finally:
        if was_enabled:
            gc.enable()


def _is_identity(stream: Stream) -> bool:
    """Tell whether the stream has no stream map or flattening (records go out as built)."""
    maps = stream.stream_maps
    return (
        len(maps) == 1 and type(maps[0]) is SameRecordTransform and not maps[0].flattening_enabled
    )


def _unselected(stream: Stream) -> list[str]:
    """Properties deselected in the catalog, which the fast paths drop from each record."""
    mask = stream.mask
    return [p for p in stream.schema["properties"] if not mask[("properties", p)]]


def _parse_start(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def storage_options(config: Any) -> dict[str, Any]:
    """fsspec/s3fs options from the tap settings (only those that are set)."""
    options: dict[str, Any] = {}
    if config.get("aws_access_key_id"):
        options["key"] = config["aws_access_key_id"]
    if config.get("aws_secret_access_key"):
        options["secret"] = config["aws_secret_access_key"]
    if config.get("aws_session_token"):
        options["token"] = config["aws_session_token"]
    client_kwargs: dict[str, Any] = {}
    if config.get("endpoint_url"):
        client_kwargs["endpoint_url"] = config["endpoint_url"]
    if config.get("region"):
        client_kwargs["region_name"] = config["region"]
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options
