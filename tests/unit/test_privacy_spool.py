"""`forget` and retention over spool segments, damaged ones included.

A truncated or corrupt gzip segment is read as tap-rudderstack reads it (every complete line
before the damage): one such segment must neither stop an erasure request half-way, leaving the
person in every later segment, nor stop the nightly retention on every night after.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import fsspec
from signalmail.privacy.spool import remove_events, remove_segments_before
from tap_rudderstack import CorruptFile, iter_lines

DAY = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def event(n: int, user: str) -> bytes:
    return json.dumps({"messageId": f"m{n}", "type": "track", "userId": user}).encode()


def segment(root: Path, opened: dt.datetime, lines: list[bytes], *, cut: int = 0) -> Path:
    """A published segment; `cut` bytes taken off the end make a truncated gzip."""
    folder = root / "rudder-logs" / "src" / f"{opened:%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{int(opened.timestamp())}.src.{len(list(folder.iterdir())):032x}.json.gz"
    data = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1)
    path.write_bytes(data[: len(data) - cut])
    return path


def readable(path: Path) -> tuple[list[str], bool]:
    """The userId of each line the tap can read, and whether a damaged tail followed."""
    found: list[str] = []
    try:
        for _number, line in iter_lines(fsspec.filesystem("file"), str(path)):
            found.append(json.loads(line)["userId"])
    except CorruptFile:
        return found, True
    return found, False


def test_forget_rewrites_a_damaged_segment_and_goes_on_to_the_next(tmp_path):
    first = segment(tmp_path, DAY, [event(1, "ann"), event(2, "bob")])
    many = [event(n, "ann" if n % 3 == 0 else "bob") for n in range(3000)]
    damaged = segment(tmp_path, DAY + dt.timedelta(minutes=1), many, cut=40)
    later = segment(tmp_path, DAY + dt.timedelta(minutes=2), [event(9000, "ann")])
    untouched = segment(tmp_path, DAY + dt.timedelta(minutes=3), [event(9001, "bob")])
    before = untouched.read_bytes()
    prefix, cut = readable(damaged)
    assert cut
    assert 0 < len(prefix) < len(many)

    change = remove_events(str(tmp_path), {"ann"}, set())

    assert readable(first) == (["bob"], False)
    # a whole gzip now, holding bob's readable lines; the unreadable tail is gone
    assert readable(damaged) == ([u for u in prefix if u == "bob"], False)
    assert not later.exists()  # it held only ann's event
    assert untouched.read_bytes() == before
    assert change.damaged == [str(damaged)]
    assert change.segments_read == 4
    assert (change.segments_rewritten, change.segments_deleted) == (2, 1)
    assert change.events_removed == 1 + prefix.count("ann") + 1


def test_forget_reaches_every_file_the_tap_reads_and_folders_it_skips(tmp_path):
    """Names as RudderStack writes them (any source id, any object id) and a folder without a
    date, which the tap skips with a warning: a person's events there are still stored."""
    logs = tmp_path / "rudder-logs" / "2ZkXsrc"
    named = logs / "2026-12-01" / "1764547200.2ZkXsrc.9F1C-UPPER-CASE.json.gz"
    archived = logs / "old-copies" / "1764547200.2ZkXsrc.0a1b.json.gz"
    for path in (named, archived):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(event(1, "ann") + b"\n" + event(2, "bob") + b"\n"))

    change = remove_events(str(tmp_path), {"ann"}, set())

    assert readable(named) == (["bob"], False)
    assert readable(archived) == (["bob"], False)
    assert (change.segments_read, change.events_removed) == (2, 2)


def test_retention_deletes_an_old_damaged_segment_and_counts_what_it_could_read(tmp_path):
    many = [event(n, "bob") for n in range(2000)]
    old = segment(tmp_path, DAY - dt.timedelta(days=40), many, cut=40)
    new = segment(tmp_path, DAY, [event(5000, "bob")])

    change = remove_segments_before(str(tmp_path), DAY - dt.timedelta(days=30))

    prefix, _cut = readable(new)
    assert not old.exists()
    assert prefix == ["bob"]
    assert change.damaged == [str(old)]
    assert 0 < change.events_removed < len(many)
    assert change.segments_deleted == 1
