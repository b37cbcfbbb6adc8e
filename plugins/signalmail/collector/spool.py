"""The durable event spool: a local journal with group commit, rotated into RudderStack segments.

Layout (docs/contracts.md, section 1), under a local directory or an fsspec URL such as
``s3://bucket/prefix``::

    <root>/rudder-logs/<source_id>/<YYYY-MM-DD>/<unix_ts>.<source_id>.<uuid>.json.gz

How an event becomes durable, and why each step is there:

1. Callers hand over encoded JSON lines (`submit_lines`, or `append` for dicts). One commit thread
   takes everything queued since its last pass, writes it to the open *journal* with one
   ``write`` and one ``fdatasync``, then completes every caller's future. Concurrent callers share
   fsyncs (group commit); nobody is told "done" before their bytes are on disk.
2. The journal is named ``<unix_ts>.<uuid>.journal`` when it is opened, so the segment it becomes
   has a name fixed in advance. When it reaches ``max_segment_bytes`` (uncompressed) or
   ``max_segment_age_s``, or on `flush`, it is sealed and a rotation thread gzips it into its
   segment: locally under ``.<name>.partial`` + fsync + rename + directory fsync, on object
   storage in one PUT (or one multipart upload, which is equally all-or-nothing). Only then is
   the journal deleted.
3. On start, leftover journals (a crash, kill -9, power loss) are recovered before anything
   else: a journal whose segment already exists was published just before the crash and is
   simply deleted (no duplicate); any other is published, keeping only lines that are complete
   JSON objects (a torn last line from an interrupted write is dropped and counted).

A process-wide ``flock`` on the journal directory keeps two writers (a collector and a
``signalmail replay --spool`` run, say) from interleaving one source's journal.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import queue
import re
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec

log = logging.getLogger("signalmail.collector.spool")

DEFAULT_MAX_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_SEGMENT_AGE_S = 60.0
#: zlib level 3: ~2.5x less CPU than 6 for ~15% larger segments (bench/bench_collector.py);
#: the collector's core is better spent acknowledging events.
DEFAULT_GZIP_LEVEL = 3

#: Source ids become one dot-separated field of the segment name, so they may not contain dots.
SOURCE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
JOURNAL_RE = re.compile(r"^(?P<ts>\d{1,12})\.(?P<uuid>[0-9a-f]{32})\.journal$")
#: Errors opening a journal that do not pass by themselves (a folder remounted read-only, its
#: permissions changed): the writer still refuses as busy, and reports itself unhealthy.
LASTING_OPEN_ERRORS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})

SEGMENT_RE = re.compile(
    r"^(?P<ts>\d{1,12})\.(?P<source>[A-Za-z0-9_-]+)\.(?P<uuid>[0-9a-f-]{32,36})\.json\.gz$"
)

#: temporary compressed copies of a journal on its way to object storage (in the journal dir)
UPLOAD_PREFIX = ".upload-"

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class SpoolBusy(RuntimeError):
    """A group was refused and nothing of it written; the writer stays sound.

    A journal could not be opened, or a write could not be completed and was taken back (out
    of file handles, disk full). The HTTP layer answers 503 with Retry-After; the next request
    tries again.
    """


class SpoolError(RuntimeError):
    """The spool cannot accept or publish events (disk error, lock held, bad settings)."""


def segment_key(source_id: str, opened_at: int, segment_uuid: str) -> str:
    """Key of a segment relative to the spool root; the date folder is the UTC opening date."""
    day = datetime.fromtimestamp(opened_at, UTC).strftime("%Y-%m-%d")
    return f"rudder-logs/{source_id}/{day}/{opened_at}.{source_id}.{segment_uuid}.json.gz"


def encode_events(events: Iterable[dict[str, Any]]) -> tuple[bytes, int]:
    """Encode events as JSON lines (UTF-8, one object per line); returns (bytes, count)."""
    parts = []
    for event in events:
        parts.append(_encoder.encode(event))
        parts.append(b"\n")
    return b"".join(parts), len(parts) // 2


def default_journal_dir(root: str, source_id: str) -> Path:
    """Where the journal of a spool lives when the caller does not say.

    For a local spool it sits inside the spool under a dot-folder (readers ignore it, and the
    rename that publishes a segment stays on one filesystem). A remote spool needs local disk
    for durability, so its journal goes to ``$XDG_STATE_HOME/signalmail/journal/<hash of root>``:
    stable across restarts, so recovery finds it.
    """
    if _is_remote(root):
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        digest = hashlib.sha1(root.rstrip("/").encode(), usedforsecurity=False).hexdigest()[:16]
        return state / "signalmail" / "journal" / digest / source_id
    return Path(local_path(root)) / ".journal" / source_id


def _is_remote(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def local_path(root: str) -> str:
    """Return the folder of a local spool given as a path or a `file://` URL.

    Path("file:///data/spool") is the relative `file:/data/spool`: a journal put there would
    follow the working directory, and a restart from another one would not recover it.
    """
    return root[len("file://") :] if root.startswith("file://") else root


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard_new_journal(fd: int, path: Path) -> None:
    """Close and delete a journal that was opened but never recorded (nothing written to it).

    Best effort: should the delete fail too, the file is empty and the next start's recovery
    discards it.
    """
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        path.unlink()


def _makedirs_durable(path: Path) -> None:
    """Create missing directories, fsyncing each parent.

    A new date folder (and the segment renamed into it) must survive a power loss that comes
    after the journal it was made from is deleted.
    """
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        _fsync_dir(directory.parent)


@dataclass(frozen=True)
class Journal:
    """One journal file and the segment it will become."""

    path: Path
    opened_at: int
    segment_uuid: str

    @classmethod
    def from_path(cls, path: Path) -> Journal | None:
        """Parse a journal file name; None for anything that is not one."""
        match = JOURNAL_RE.match(path.name)
        if match is None:
            return None
        return cls(path, int(match["ts"]), str(uuid.UUID(match["uuid"])))


def is_complete_event_line(line: bytes) -> bool:
    """Tell whether a journal line is a whole event: a newline-terminated JSON object."""
    if not line.endswith(b"\n"):
        return False
    try:
        return isinstance(_decoder.decode(line), dict)
    except (msgspec.DecodeError, RecursionError):
        return False


class _Store:
    """Where segments go: local directory (atomic rename) or an fsspec filesystem (one PUT)."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None, gzip_level: int) -> None:
        self.root = root.rstrip("/")
        self.remote = _is_remote(root)
        self.gzip_level = gzip_level
        if self.remote:
            import fsspec

            self.fs, self.base = fsspec.core.url_to_fs(self.root, **(storage_options or {}))
            self.base = self.base.rstrip("/")
        else:
            self.fs = None
            self.base = local_path(root)

    def describe(self, key: str) -> str:
        return f"{self.root}/{key}"

    def exists(self, key: str) -> bool:
        if self.fs is not None:
            path = f"{self.base}/{key}"
            self.fs.invalidate_cache(path)  # a listing cached before a crash must not decide
            return bool(self.fs.exists(path))
        return (Path(self.base) / key).exists()

    def publish(self, journal: Journal, key: str, validate: bool) -> tuple[int, int, int]:
        """Write the journal's lines as a gzip segment at `key`, all or nothing.

        Returns (events, compressed bytes, dropped lines).
        """
        if self.fs is None:
            target = Path(self.base) / key
            _makedirs_durable(target.parent)
            partial = target.with_name(f".{target.name}.partial")
            with partial.open("wb") as raw:
                events, dropped = self._compress(journal, raw, validate)
                raw.flush()
                os.fsync(raw.fileno())
                size = raw.tell()
            if events == 0:  # nothing survived validation: no empty segment for readers
                partial.unlink()
                return 0, 0, dropped
            os.replace(partial, target)
            _fsync_dir(target.parent)
            return events, size, dropped
        # Remote: compress to a local temporary file, then one upload; the object appears whole.
        with tempfile.NamedTemporaryFile(
            dir=journal.path.parent, prefix=UPLOAD_PREFIX, suffix=".partial"
        ) as tmp:
            events, dropped = self._compress(journal, tmp, validate)
            tmp.flush()
            size = tmp.tell()
            if events == 0:
                return 0, 0, dropped
            self.fs.put_file(tmp.name, f"{self.base}/{key}")
        return events, size, dropped

    def remove_partial(self, key: str) -> None:
        if self.fs is None:
            target = Path(self.base) / key
            with contextlib.suppress(FileNotFoundError):
                target.with_name(f".{target.name}.partial").unlink()

    def _compress(self, journal: Journal, out: IO[bytes], validate: bool) -> tuple[int, int]:
        """Gzip the journal into `out`; returns (events, dropped lines).

        With `validate` (recovery), a line that is not a complete JSON object (the torn tail of
        an interrupted write, or zeros left by a power loss) is dropped and logged. A journal
        rotated live was written whole by this process, so its bytes are copied as they are.
        gzip framing is done by zlib (wbits=31) so the header carries no mtime: the same journal
        always becomes the same segment bytes.
        """
        compressor = zlib.compressobj(self.gzip_level, zlib.DEFLATED, 31)
        events = dropped = 0
        with journal.path.open("rb") as handle:
            if not validate:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    out.write(compressor.compress(chunk))
                    events += chunk.count(b"\n")
            else:
                for number, line in enumerate(handle, start=1):
                    if is_complete_event_line(line):
                        out.write(compressor.compress(line))
                        events += 1
                        continue
                    dropped += 1
                    log.warning(
                        "dropping %d bytes at line %d of journal %s: not a complete JSON "
                        "object (torn write before a crash)",
                        len(line),
                        number,
                        journal.path.name,
                    )
        out.write(compressor.flush())
        return events, dropped


@dataclass
class SpoolStats:
    """Counters a collector exposes on /metrics (read without a lock: approximate by design)."""

    groups: int = 0
    fsyncs: int = 0
    events_written: int = 0
    journal_bytes: int = 0
    segments_written: int = 0
    segment_bytes: int = 0
    segments_recovered: int = 0
    journals_already_published: int = 0
    torn_lines_dropped: int = 0
    publish_failures: int = 0
    #: groups refused without harm (no journal could be opened, a write was taken back)
    busy_refusals: int = 0
    pending_events: int = 0
    last_error: str | None = None


@dataclass
class _Pending:
    data: bytes
    count: int
    future: concurrent.futures.Future[None]


class SpoolWriter:
    """Durable, group-committed writer of one source's spool (contract: docs/contracts.md §1).

    Thread-safe. `append` blocks until the events are fsync'd; `submit_lines` returns a future
    for callers that must not block (the collector's event loop). Every public method raises
    `SpoolError` once a journal write or fsync has failed: after a failed fsync the state of the
    file is unknown, so the writer refuses further work rather than acknowledge on a bad disk.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        source_id: str,
        max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
        max_segment_age_s: float = DEFAULT_MAX_SEGMENT_AGE_S,
        storage_options: dict[str, Any] | None = None,
        *,
        journal_dir: str | os.PathLike[str] | None = None,
        gzip_level: int = DEFAULT_GZIP_LEVEL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not SOURCE_ID_RE.match(source_id):
            raise SpoolError(
                f"source_id {source_id!r} is invalid: use 1-128 letters, digits, '_' or '-' "
                "(it is a dot-separated field of every segment name)"
            )
        if max_segment_bytes <= 0 or max_segment_age_s <= 0:
            raise SpoolError("max_segment_bytes and max_segment_age_s must be positive")
        self.root = str(root)
        self.source_id = source_id
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_age_s = max_segment_age_s
        self.clock = clock
        self.stats = SpoolStats()
        self._store = _Store(self.root, storage_options, gzip_level)
        self.journal_dir = Path(journal_dir or default_journal_dir(self.root, source_id))
        _makedirs_durable(self.journal_dir)
        self._lock_handle = self._take_lock()

        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._requests: list[tuple[str, threading.Event, list[object]]] = []
        self._closing = False
        self._failed: BaseException | None = None
        self._journal: Journal | None = None
        self._fd: int | None = None
        self._journal_size = 0
        self._rotations: queue.Queue[tuple[Journal | None, threading.Event | None]] = queue.Queue()
        # why journals cannot be opened, when it will not pass by itself (a read-only or
        # forbidden folder): health says so until a group commits again
        self._blocked: str | None = None
        # journals of an earlier process that the start could not publish (the store down):
        # the rotation thread publishes them first, as recovery would, while events come in
        self._recovering: set[Path] = set()

        self.recover(defer_on_error=True)
        self._commit_thread = threading.Thread(
            target=self._commit_loop, name=f"spool-commit-{source_id}", daemon=True
        )
        self._rotate_thread = threading.Thread(
            target=self._rotate_loop, name=f"spool-rotate-{source_id}", daemon=True
        )
        self._commit_thread.start()
        self._rotate_thread.start()

    # -- public interface -------------------------------------------------------------------

    def append(self, events: list[dict[str, Any]]) -> None:
        """Append events; returns once they are durable (fsync'd to the journal)."""
        data, count = encode_events(events)
        if count:
            self.submit_lines(data, count).result()

    def submit_lines(self, data: bytes, count: int) -> concurrent.futures.Future[None]:
        """Queue encoded JSON lines (each ending in a newline); the future is done once durable."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Running from here on, so it can no longer be cancelled: asyncio.wrap_future cancels
        # it when the request's task is cancelled (a forced shutdown, a client gone), and the
        # commit thread's set_result on a cancelled future raises InvalidStateError, which
        # killed the thread with the rest of the group unanswered and every later write stuck
        future.set_running_or_notify_cancel()
        with self._cond:
            self._check_usable()
            self._pending.append(_Pending(data, count, future))
            self.stats.pending_events += count
            self._cond.notify()
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Rotate: the current journal becomes a .json.gz segment; returns once it is published."""
        self._request("flush", timeout)

    def rotate_if_due(self, timeout: float | None = None) -> bool:
        """Rotate now if the open journal is past its size or age limit; True if it rotated.

        The commit thread checks this on its own about once a second; tests with an injected
        clock call it to make an age rotation happen deterministically.
        """
        return self._request("due", timeout)

    def close(self, timeout: float | None = None) -> None:
        """Publish what is durable and stop the threads.

        If publishing does not finish within `timeout` (object storage down, say), the journals
        stay on local disk and the next start recovers them; nothing acknowledged is lost.
        """
        if self._closing:
            return
        try:
            if self._failed is None:
                self.flush(timeout)
        except (SpoolError, TimeoutError) as exc:
            log.error("closing spool with unpublished journals left for recovery: %s", exc)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._commit_thread.join(timeout)
            self._rotations.put((None, None))
            self._rotate_thread.join(timeout)
            self._close_fd()
            with contextlib.suppress(OSError):
                self._lock_handle.close()

    @property
    def healthy(self) -> bool:
        """False once a journal write or fsync failed (the writer then refuses new events).

        Also once the commit thread is gone: nothing would answer a write any more.
        """
        return (
            self._failed is None
            and self._blocked is None
            and not self._closing
            and self._commit_thread.is_alive()
        )

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recovery ---------------------------------------------------------------------------

    def recover(self, defer_on_error: bool = False) -> int:
        """Publish journals left by an earlier process; returns how many segments it wrote.

        Deterministic names make this idempotent: if a journal's segment already exists, the
        earlier process died between publishing it and deleting the journal, and publishing it
        again would only rewrite identical bytes; the journal is deleted instead.

        With `defer_on_error` (the writer's start) and a spool on object storage, a journal that
        cannot be published now (the store unreachable) is left to the rotation thread, which
        retries it before any new journal: the collector takes events during the outage, which
        is what its local journal is for, instead of failing to start until the store is back.
        A local spool's error (a journal it cannot read) still stops the start.
        """
        written = 0
        # compressed copies a killed process was uploading (object storage): the journal they
        # came from is still here and is published again below; holding the lock, nobody else
        # can be writing them
        for leftover in self.journal_dir.glob(UPLOAD_PREFIX + "*.partial"):
            log.info("removing unfinished upload copy %s", leftover.name)
            leftover.unlink(missing_ok=True)
        deferring = False  # once the store failed, the rest go to the background untried
        for path in sorted(self.journal_dir.glob("*.journal")):
            journal = Journal.from_path(path)
            if journal is None:
                log.warning("ignoring unexpected file in journal directory: %s", path)
                continue
            if not deferring:
                try:
                    written += self._recover_journal(journal)
                    continue
                except Exception as exc:
                    # only object storage can be down while this machine is fine; a local
                    # spool's error (a journal it cannot read, a full disk) is for the operator
                    if not defer_on_error or self._store.fs is None:
                        raise
                    log.error(
                        "recovering journal %s failed (%s: %s): the journals left are published "
                        "in the background and stay on local disk meanwhile",
                        path.name,
                        type(exc).__name__,
                        exc,
                    )
                    self.stats.publish_failures += 1
                    self.stats.last_error = f"recover: {type(exc).__name__}: {exc}"
                    deferring = True
            self._recovering.add(journal.path)
            self._rotations.put((journal, None))
        return written

    def _recover_journal(self, journal: Journal) -> int:
        """Publish one journal of an earlier process (checked line by line); 1 if it wrote one."""
        path = journal.path
        written = 0
        key = segment_key(self.source_id, journal.opened_at, journal.segment_uuid)
        if self._store.exists(key):
            log.info("journal %s was already published as %s", path.name, key)
            self.stats.journals_already_published += 1
        elif path.stat().st_size == 0:
            log.info("discarding empty journal %s", path.name)
        else:
            self._store.remove_partial(key)
            events, size, dropped = self._store.publish(journal, key, validate=True)
            self.stats.torn_lines_dropped += dropped
            if events:
                written = 1
                self.stats.segments_recovered += 1
                self.stats.segments_written += 1
                self.stats.segment_bytes += size
                log.info("recovered %d events from journal %s into %s", events, path.name, key)
        path.unlink()
        _fsync_dir(self.journal_dir)
        return written

    # -- internals --------------------------------------------------------------------------

    def _take_lock(self) -> IO[str]:
        handle = (self.journal_dir / ".lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SpoolError(
                f"another process is writing source {self.source_id!r} of this spool "
                f"(journal {self.journal_dir} is locked); stop it or use another source id"
            ) from None
        return handle

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise SpoolError(f"spool journal failed earlier: {self._failed}") from self._failed
        if self._closing:
            raise SpoolError("spool writer is closed")

    def _request(self, kind: str, timeout: float | None) -> bool:
        done = threading.Event()
        answer: list[object] = []
        with self._cond:
            self._check_usable()
            self._requests.append((kind, done, answer))
            self._cond.notify()
        if not done.wait(timeout):
            raise TimeoutError(f"spool {kind} did not finish within {timeout}s")
        if answer and isinstance(answer[0], BaseException):
            raise SpoolError(str(answer[0])) from answer[0]
        return bool(answer and answer[0])

    def _tick_seconds(self) -> float:
        return max(0.05, min(1.0, self.max_segment_age_s / 4))

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._requests and not self._closing:
                    if not self._cond.wait(self._tick_seconds()):
                        break  # periodic age check
                batch, self._pending = self._pending, []
                requests, self._requests = self._requests, []
                closing = self._closing
            if batch:
                self._commit(batch)
            elif self._blocked is not None:
                self._probe_journal_dir()
            self._maybe_seal(requests)
            if closing and not batch:
                return

    def _commit(self, batch: list[_Pending]) -> None:
        count = sum(item.count for item in batch)
        try:
            if self._failed is not None:
                raise SpoolError(f"spool journal failed earlier: {self._failed}")
            if self._fd is None:
                try:
                    self._open_journal()
                except OSError as exc:  # EMFILE, ENOSPC, ...: nothing was written
                    if exc.errno in LASTING_OPEN_ERRORS:
                        # refused as busy all the same (nothing is lost), but a balancer must
                        # stop sending here: every request would get 503 until someone acts
                        self._blocked = f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc}"
                    raise SpoolBusy(f"cannot open a journal: {exc}") from exc
            assert self._fd is not None
            data = b"".join(item.data for item in batch)
            self._write_group(data)
            os.fdatasync(self._fd)
        except SpoolBusy as exc:  # the journal is as it was: refuse this group, stay usable
            log.warning("spool busy, refusing %d events for now: %s", count, exc)
            self.stats.last_error = f"busy: {exc}"
            self.stats.busy_refusals += 1
            with self._cond:
                self.stats.pending_events -= count
            for item in batch:
                item.future.set_exception(exc)
            return
        except Exception as exc:  # any failure: nobody in this group may be acknowledged
            if self._failed is None:
                log.error("spool journal write failed; refusing further events: %s", exc)
                self._failed = exc
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self.stats.pending_events -= count
            error = SpoolError(f"event not durable: {exc}")
            for item in batch:
                item.future.set_exception(error)
            return
        self._journal_size += len(data)
        self._blocked = None
        stats = self.stats
        stats.groups += 1
        stats.fsyncs += 1
        stats.events_written += count
        stats.journal_bytes += len(data)
        with self._cond:
            stats.pending_events -= count
        for item in batch:
            item.future.set_result(None)

    def _write_group(self, data: bytes) -> None:
        """Append one group to the journal, or leave the journal as it was and raise SpoolBusy.

        A write can fail half-way (the disk fills up). The journal is then cut back to its size
        before the group and that cut is made durable, so it holds only acknowledged events and
        the writer can take the next group once there is room. Only if the cut fails too is
        the journal's content unknown: that error is raised as is, and the writer stops.
        """
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            os.ftruncate(self._fd, self._journal_size)
            os.fdatasync(self._fd)
            raise SpoolBusy(f"journal write failed and was taken back: {exc}") from exc

    def _open_journal(self) -> None:
        """Open a new journal and make its name durable; only then make it the current one.

        The handle and the journal are recorded together, after both steps succeeded. Were the
        handle kept when the directory fsync fails (EMFILE: it needs a descriptor of its own),
        every later group would be written to a file no flush, rotation or close ever seals.
        On failure the new file, still empty, is closed and removed and the error goes up for
        `_commit` to refuse the group as busy; the next group opens a journal afresh.
        """
        opened_at = int(self.clock())
        segment_uuid = uuid.uuid4()
        path = self.journal_dir / f"{opened_at}.{segment_uuid.hex}.journal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            _fsync_dir(self.journal_dir)  # the journal's name must survive a crash with its data
        except BaseException:
            _discard_new_journal(fd, path)
            raise
        self._fd = fd
        self._journal = Journal(path, opened_at, str(segment_uuid))
        self._journal_size = 0

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _is_due(self) -> bool:
        if self._journal is None:
            return False
        return (
            self._journal_size >= self.max_segment_bytes
            or self.clock() - self._journal.opened_at >= self.max_segment_age_s
        )

    def _probe_journal_dir(self) -> None:
        """While journals cannot be opened for a lasting reason, try, about once a second.

        A balancer takes a collector whose health is 503 out of rotation, so no request would
        come to find out that the folder is writable again: the writer checks by itself.
        """
        probe = self.journal_dir / ".probe"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            os.close(fd)
            probe.unlink()
        except OSError:
            return
        log.info("the journal folder is writable again: %s", self.journal_dir)
        self._blocked = None

    def _maybe_seal(self, requests: list[tuple[str, threading.Event, list[object]]]) -> None:
        force = any(kind == "flush" for kind, _, _ in requests)
        sealed = False
        if self._journal is not None and self._failed is None and (force or self._is_due()):
            self._close_fd()
            self._rotations.put((self._journal, None))
            self._journal = None
            sealed = True
        for _kind, done, answer in requests:
            if self._failed is not None:
                answer.append(SpoolError(f"spool journal failed earlier: {self._failed}"))
                done.set()
                continue
            answer.append(sealed)
            # FIFO: once the rotation thread reaches this marker, every earlier journal is out.
            self._rotations.put((None, done))

    def _rotate_loop(self) -> None:
        delay = 0.5
        while True:
            journal, done = self._rotations.get()
            if journal is None and done is None:
                return
            if journal is not None:
                while True:
                    try:
                        if journal.path in self._recovering:
                            self._recover_journal(journal)
                            self._recovering.discard(journal.path)
                        else:
                            self._publish(journal)
                        delay = 0.5
                        break
                    except Exception as exc:
                        self.stats.publish_failures += 1
                        self.stats.last_error = f"publish: {type(exc).__name__}: {exc}"
                        log.error(
                            "publishing journal %s failed (retrying in %.1fs; it stays on "
                            "local disk meanwhile): %s",
                            journal.path.name,
                            delay,
                            exc,
                        )
                        if self._closing:
                            break  # recovery at the next start publishes it
                        time.sleep(delay)
                        delay = min(delay * 2, 30.0)
            if done is not None:
                done.set()

    def _publish(self, journal: Journal) -> None:
        key = segment_key(self.source_id, journal.opened_at, journal.segment_uuid)
        events, size, _ = self._store.publish(journal, key, validate=False)
        journal.path.unlink()
        _fsync_dir(self.journal_dir)
        self.stats.segments_written += 1
        self.stats.segment_bytes += size
        log.debug("published %d events as %s", events, self._store.describe(key))
