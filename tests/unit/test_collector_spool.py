"""SpoolWriter: group commit, rotation, atomic segments and crash recovery (local disk)."""

from __future__ import annotations

import errno
import gzip
import json
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from signalmail.collector import spool as spool_module
from signalmail.collector.spool import (
    SEGMENT_RE,
    SpoolBusy,
    SpoolError,
    SpoolWriter,
    segment_key,
)

from tests.helpers.collector import WRITE_KEY, serve
from tests.helpers.servers import wait_until


class FakeClock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = now

    def __call__(self) -> float:
        return self.now


def segments(root: Path) -> list[Path]:
    return sorted((root / "rudder-logs").rglob("*.json.gz"))


def read_segment(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def all_events(root: Path) -> list[dict]:
    return [event for path in segments(root) for event in read_segment(path)]


def events(n: int, start: int = 0) -> list[dict]:
    return [{"messageId": f"m{i}", "type": "track", "userId": "u"} for i in range(start, start + n)]


def test_append_flush_publishes_one_named_segment(tmp_path):
    clock = FakeClock()
    with SpoolWriter(tmp_path, "src_1", clock=clock) as writer:
        writer.append(events(3))
        writer.flush()
        (path,) = segments(tmp_path)
        match = SEGMENT_RE.match(path.name)
        assert match is not None
        assert match["ts"] == "1767225600"
        assert match["source"] == "src_1"
        assert path.parent == tmp_path / "rudder-logs" / "src_1" / "2026-01-01"
        assert [e["messageId"] for e in read_segment(path)] == ["m0", "m1", "m2"]
        # nothing a reader could mistake for a segment is left behind
        assert not list(tmp_path.rglob("*.partial"))
        assert not list(writer.journal_dir.glob("*.journal"))
        writer.flush()  # flushing with nothing open publishes nothing
        assert len(segments(tmp_path)) == 1


def test_a_cancelled_request_leaves_the_writer_answering(tmp_path):
    """The app awaits the writer's future through asyncio.wrap_future, which cancels it when the
    request's task is cancelled (a forced shutdown, a client gone). The commit thread must
    still answer the rest: its events are written (they may be on disk already) and the
    writer takes the next request."""
    import asyncio

    writer = SpoolWriter(tmp_path, "src_1", clock=FakeClock())
    try:

        async def cancelled_request() -> None:
            future = writer.submit_lines(b'{"messageId":"m0","type":"track"}\n', 1)
            task = asyncio.ensure_future(asyncio.wrap_future(future))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancelled_request())
        data = b"".join(json.dumps(e).encode() + b"\n" for e in events(2, start=1))
        writer.submit_lines(data, 2).result(timeout=10)
        assert writer.healthy
        writer.flush(timeout=10)
        assert [e["messageId"] for e in all_events(tmp_path)] == ["m0", "m1", "m2"]
    finally:
        writer.close(timeout=10)  # bounded: a dead commit thread must fail this, not hang it


def test_close_publishes_pending_journal(tmp_path):
    writer = SpoolWriter(tmp_path, "s")
    writer.append(events(2))
    writer.close()
    assert [e["messageId"] for e in all_events(tmp_path)] == ["m0", "m1"]
    with pytest.raises(SpoolError, match="closed"):
        writer.append(events(1))


def test_rotation_by_size(tmp_path):
    with SpoolWriter(tmp_path, "s", max_segment_bytes=200) as writer:
        for i in range(10):
            writer.append(events(5, start=i * 5))  # ~245 bytes: every append crosses the limit
        writer.flush()
        paths = segments(tmp_path)
    assert len(paths) == 10
    assert all(len(read_segment(path)) == 5 for path in paths)
    ids = [e["messageId"] for e in all_events(tmp_path)]
    assert sorted(ids) == sorted(f"m{i}" for i in range(50))


def test_rotation_by_age_uses_the_injected_clock(tmp_path):
    clock = FakeClock()
    with SpoolWriter(tmp_path, "s", max_segment_age_s=30, clock=clock) as writer:
        writer.append(events(1))
        clock.now += 29
        assert writer.rotate_if_due() is False
        assert segments(tmp_path) == []
        clock.now += 1
        assert writer.rotate_if_due() is True
        (first,) = segments(tmp_path)
        assert first.name.startswith("1767225600.")
        writer.append(events(1, start=1))  # the next segment opens at the new clock time
        writer.flush()
        names = [p.name for p in segments(tmp_path)]
    assert any(name.startswith("1767225630.") for name in names)


def test_group_commit_shares_one_fsync_and_never_acks_before_it(tmp_path, monkeypatch):
    real = os.fdatasync
    entered, release = threading.Event(), threading.Event()
    calls = []

    def slow_fdatasync(fd):
        calls.append(fd)
        if len(calls) == 1:
            entered.set()
            assert release.wait(10)
        real(fd)

    monkeypatch.setattr(spool_module.os, "fdatasync", slow_fdatasync)
    with SpoolWriter(tmp_path, "s") as writer:
        first = writer.submit_lines(b'{"messageId":"a"}\n', 1)
        assert entered.wait(10)
        later = [writer.submit_lines(f'{{"messageId":"b{i}"}}\n'.encode(), 1) for i in range(20)]
        # the first group is still inside fsync: nobody may be acknowledged yet
        assert not first.done()
        assert not any(f.done() for f in later)
        release.set()
        for future in [first, *later]:
            future.result(10)
        assert writer.stats.groups == 2  # 21 requests, two fsyncs
        assert writer.stats.events_written == 21


def test_failed_fsync_refuses_events_and_marks_unhealthy(tmp_path, monkeypatch):
    def broken(_fd):
        raise OSError(5, "Input/output error")

    writer = SpoolWriter(tmp_path, "s")
    monkeypatch.setattr(spool_module.os, "fdatasync", broken)
    with pytest.raises(SpoolError, match="Input/output error"):
        writer.append(events(1))
    assert not writer.healthy
    with pytest.raises(SpoolError, match="failed earlier"):
        writer.append(events(1))
    monkeypatch.undo()
    writer.close()
    # the journal stays for recovery: the failed group was never acknowledged, but whatever
    # reached the file is published at the next start rather than lost
    assert list(writer.journal_dir.glob("*.journal"))


# -- out of file handles: back-pressure, never a failed disk ---------------------------------


class OpenFault:
    """Stands in for `os.open`: the first call `matches` accepts fails with EMFILE, once.

    EMFILE (the process's descriptor table is full) is what a busy collector meets, and it
    strikes any `open`: the journal's, or the journal directory's that its fsync needs.
    """

    def __init__(self, matches: Callable[[str, int], bool]) -> None:
        self.matches = matches
        self.real = os.open
        self.fired = False

    def __call__(self, path: str | os.PathLike[str], flags: int, *args: object, **kw: object):
        if not self.fired and self.matches(os.fspath(path), flags):
            self.fired = True
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), os.fspath(path))
        return self.real(path, flags, *args, **kw)


def fail_journal_dir_fsync(writer: SpoolWriter) -> Callable[[str, int], bool]:
    """Match the directory open that the fsync making a new journal's name durable needs."""
    directory = str(writer.journal_dir)
    return lambda path, flags: bool(flags & os.O_DIRECTORY) and path == directory


def fail_journal_open(_writer: SpoolWriter) -> Callable[[str, int], bool]:
    """Match the open (O_CREAT) of a new journal file itself."""
    return lambda path, _flags: path.endswith(".journal")


FAULTS = [
    pytest.param(fail_journal_dir_fsync, id="directory-fsync"),
    pytest.param(fail_journal_open, id="journal-open"),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_emfile_opening_a_journal_refuses_the_group_and_later_events_are_published(
    tmp_path, monkeypatch, fault
):
    writer = SpoolWriter(tmp_path, "s")
    injected = OpenFault(fault(writer))
    monkeypatch.setattr(spool_module.os, "open", injected)
    with pytest.raises(SpoolBusy, match="Too many open files"):
        writer.append(events(1))
    assert injected.fired
    # back-pressure, not a failed disk: still healthy, and no half-opened journal is kept
    assert writer.healthy
    assert writer.stats.busy_refusals == 1
    assert not list(writer.journal_dir.glob("*.journal"))
    writer.append(events(2, start=10))  # the fault has cleared: acknowledged...
    writer.flush()  # ...and published by the next flush
    (flushed,) = segments(tmp_path)
    assert [e["messageId"] for e in read_segment(flushed)] == ["m10", "m11"]
    assert not list(writer.journal_dir.glob("*.journal"))
    writer.append(events(1, start=20))
    writer.close()  # and by close
    (closed,) = set(segments(tmp_path)) - {flushed}
    assert [e["messageId"] for e in read_segment(closed)] == ["m20"]
    assert not list(writer.journal_dir.glob("*.journal"))


def test_a_read_only_journal_folder_refuses_as_busy_and_says_so_in_health(tmp_path, monkeypatch):
    """EROFS (the disk remounted read-only) does not pass by itself like EMFILE: every request
    would get 503 while /health said ok, and a balancer kept sending here."""
    writer = SpoolWriter(tmp_path, "s")
    real = os.open

    def read_only(path, flags, *args, **kw):
        # any file made in the journal folder: the journal, and the writer's probe of it
        if os.fspath(path).startswith(str(writer.journal_dir)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real(path, flags, *args, **kw)

    monkeypatch.setattr(spool_module.os, "open", read_only)
    with pytest.raises(SpoolBusy, match="Read-only file system"):
        writer.append(events(1))
    assert not writer.healthy
    monkeypatch.setattr(spool_module.os, "open", real)  # remounted read-write
    # no request comes to a collector a balancer took out: the writer finds out by itself
    wait_until(lambda: writer.healthy, 30, "health back to ok on a writable disk, unasked")
    writer.append(events(1, start=5))
    assert writer.healthy
    writer.close()
    assert [e["messageId"] for e in all_events(tmp_path)] == ["m5"]


@pytest.mark.parametrize("fault", FAULTS)
def test_emfile_opening_a_journal_is_a_503_with_retry_after_and_the_retry_lands(
    tmp_path, monkeypatch, fault
):
    with serve(tmp_path) as running:
        injected = OpenFault(fault(running.writer))
        monkeypatch.setattr(spool_module.os, "open", injected)

        def track(message_id: str) -> requests.Response:
            body = {"anonymousId": "a", "event": "Viewed", "messageId": message_id}
            return requests.post(
                f"{running.url}/v1/track", json=body, auth=(WRITE_KEY, ""), timeout=10
            )

        refused = track("refused")
        assert injected.fired
        assert (refused.status_code, refused.text) == (503, "storage busy, retry shortly")
        assert refused.headers["Retry-After"] == "1"
        assert requests.get(f"{running.url}/health", timeout=5).status_code == 200
        assert running.metrics()["rejected_requests"] == {"storage_busy": 1}
        assert track("retried").status_code == 200
        assert [e["messageId"] for e in running.events()] == ["retried"]


def test_second_writer_on_same_source_is_refused(tmp_path):
    with SpoolWriter(tmp_path, "s"):
        with pytest.raises(SpoolError, match="another process is writing source 's'"):
            SpoolWriter(tmp_path, "s")
        SpoolWriter(tmp_path, "other").close()  # another source is independent


@pytest.mark.parametrize("bad", ["has.dot", "", "a/b", "x" * 129])
def test_invalid_source_id(tmp_path, bad):
    with pytest.raises(SpoolError, match="source_id"):
        SpoolWriter(tmp_path, bad)


# -- recovery ----------------------------------------------------------------------------------


def leftover_journal(root: Path, source: str, lines: bytes, opened_at: int = 1767225600) -> Path:
    journal_dir = root / ".journal" / source
    journal_dir.mkdir(parents=True, exist_ok=True)
    path = journal_dir / f"{opened_at}.{uuid.uuid4().hex}.journal"
    path.write_bytes(lines)
    return path


def test_recovery_publishes_leftover_journal_and_drops_torn_last_line(tmp_path):
    good = b"".join(json.dumps(e).encode() + b"\n" for e in events(3))
    journal = leftover_journal(tmp_path, "s", good + b'{"messageId": "m3", "ty')
    writer = SpoolWriter(tmp_path, "s")
    writer.close()
    assert [e["messageId"] for e in all_events(tmp_path)] == ["m0", "m1", "m2"]
    assert writer.stats.segments_recovered == 1
    assert writer.stats.torn_lines_dropped == 1
    assert not journal.exists()
    (path,) = segments(tmp_path)
    assert path.name.split(".")[2] == str(uuid.UUID(journal.name.split(".")[1]))


def test_recovery_drops_zero_filled_tail_of_power_loss(tmp_path):
    good = json.dumps(events(1)[0]).encode() + b"\n"
    leftover_journal(tmp_path, "s", good + b"\0" * 4096 + b"\n")
    writer = SpoolWriter(tmp_path, "s")
    writer.close()
    assert [e["messageId"] for e in all_events(tmp_path)] == ["m0"]
    assert writer.stats.torn_lines_dropped == 1


def test_crash_between_publish_and_journal_delete_never_duplicates(tmp_path):
    lines = b"".join(json.dumps(e).encode() + b"\n" for e in events(4))
    journal = leftover_journal(tmp_path, "s", lines)
    opened_at, hex_uuid = journal.name.split(".")[:2]
    key = segment_key("s", int(opened_at), str(uuid.UUID(hex_uuid)))
    published = tmp_path / key
    published.parent.mkdir(parents=True)
    published.write_bytes(gzip.compress(lines))  # the segment made it, the delete did not
    before = published.read_bytes()
    writer = SpoolWriter(tmp_path, "s")
    writer.close()
    assert segments(tmp_path) == [published]
    assert published.read_bytes() == before
    assert len(all_events(tmp_path)) == 4
    assert writer.stats.journals_already_published == 1
    assert not journal.exists()


def test_crash_mid_publish_leaves_partial_that_recovery_replaces(tmp_path):
    lines = b"".join(json.dumps(e).encode() + b"\n" for e in events(2))
    journal = leftover_journal(tmp_path, "s", lines)
    opened_at, hex_uuid = journal.name.split(".")[:2]
    target = tmp_path / segment_key("s", int(opened_at), str(uuid.UUID(hex_uuid)))
    target.parent.mkdir(parents=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(b"\x1f\x8b half a gzip")
    SpoolWriter(tmp_path, "s").close()
    assert not partial.exists()
    assert [e["messageId"] for e in read_segment(target)] == ["m0", "m1"]


def test_recovery_discards_empty_and_fully_torn_journals(tmp_path):
    empty = leftover_journal(tmp_path, "s", b"")
    torn = leftover_journal(tmp_path, "s", b'{"messageId": "x"', opened_at=1767225601)
    SpoolWriter(tmp_path, "s").close()
    assert segments(tmp_path) == []
    assert not empty.exists()
    assert not torn.exists()


def test_read_back_counts_events_the_collector_takes_without_a_type_or_name(tmp_path):
    """The collector takes a batch item without `type`, a track without `event` and an identify
    with only an anonymous id (as rudder-server does); reading the spool back must not fail."""
    from signalmail.collector.readback import read_spool

    with SpoolWriter(tmp_path, "src_1", clock=FakeClock()) as writer:
        writer.append([
            {"messageId": "m1", "anonymousId": "a1"},
            {"messageId": "m2", "type": "track", "anonymousId": "a1"},
            {"messageId": "m3", "type": "identify", "anonymousId": "a1",
             "traits": {"email_opt_in": True}},
            {"messageId": "m4", "type": "track", "event": "Product Viewed", "userId": "u1"},
        ])  # fmt: skip
        writer.flush()
    (tmp_path / "rudder-logs" / "src_1" / "2026-01-01" / "notes.json.gz").write_bytes(b"x")
    summary = read_spool(tmp_path)
    assert summary.events == 4
    assert summary.by_type == {"None": 1, "track": 2, "identify": 1}
    assert summary.by_name == {"None": 1, "Product Viewed": 1}
    assert summary.opted_in == set()


def test_a_file_url_spool_keeps_its_journal_inside_the_spool(tmp_path, monkeypatch):
    """`file:///data/spool` as a path is the relative `file:/data/spool`: the journal would
    follow the working directory, and a restart from another one would not find it."""
    from signalmail.collector.spool import default_journal_dir

    monkeypatch.chdir(tmp_path)
    spool = tmp_path / "spool"
    journal = default_journal_dir(spool.as_uri(), "src_1")
    assert journal == spool / ".journal" / "src_1"
    with SpoolWriter(spool.as_uri(), "src_1", clock=FakeClock()) as writer:
        writer.append(events(1))
        assert writer.journal_dir == spool / ".journal" / "src_1"
    assert not (tmp_path / "file:").exists()
