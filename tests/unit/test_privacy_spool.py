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

from tests.helpers import spool as tap_spool

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
            if line.strip():  # a removed event's place, skipped by the tap
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


def test_a_tap_stopped_mid_segment_resumes_on_the_same_events_after_forget(tmp_path):
    """The tap resumes a segment by line number: forget leaves an empty line where it removed
    an event, so a tap stopped at line 60 (a capture that hit its limit, a crash) reads on from
    the same event. Lines that moved up would have made it skip 20 of bob's events for good."""
    root = tmp_path / "spool"
    lines = [tap_spool.event("track", n, userId="ann" if n % 3 == 0 else "bob") for n in range(100)]
    tap_spool.write_segment(root, tap_spool.ts_of(0), lines)
    config = {"source": str(root), "state_every_records": 30}
    states = [m["value"] for m in tap_spool.run_tap(config) if m["type"] == "STATE"]
    stopped = states[1]
    assert stopped["bookmarks"]["tracks"]["spool"]["cursor"]["line"] == 60

    change = remove_events(str(root), {"ann"}, set())

    assert change.events_removed == 34
    resumed = tap_spool.run_tap(config, state=stopped)
    assert tap_spool.ids(resumed, "tracks") == [
        f"m-track-{n}" for n in range(60, 100) if n % 3 != 0
    ]
    assert not tap_spool.records(resumed, "rejected_events")  # the empty lines are no rejections


def test_forget_and_retention_read_the_logs_folder_the_tap_reads(tmp_path):
    """A RudderStack destination that renames rudder-logs (the tap's logs_folder): both used to
    find no segment there and report success."""
    renamed = tmp_path / "events" / "src" / f"{DAY:%Y-%m-%d}"
    renamed.mkdir(parents=True)
    path = renamed / f"{int(DAY.timestamp())}.src.0a1b.json.gz"
    path.write_bytes(gzip.compress(event(1, "ann") + b"\n" + event(2, "bob") + b"\n"))
    change = remove_events(str(tmp_path), {"ann"}, set(), logs_folder="events")
    assert (change.segments_read, change.events_removed) == (1, 1)
    gone = remove_segments_before(str(tmp_path), DAY + dt.timedelta(days=1), logs_folder="events")
    assert (gone.segments_deleted, path.exists()) == (1, False)


def test_forget_removes_a_merge_that_names_the_person_in_its_properties(tmp_path):
    """A CRM's merge sent from a device of someone else's: only its properties name ann, as
    the warehouse's merge_property_*_value columns do, and it went back in at a re-ingest."""
    merge = json.dumps({
        "messageId": "m-merge", "type": "merge", "userId": "crm-sync",
        "mergeProperties": [
            {"type": "email", "value": " Ann@Example.com"}, {"type": "user_id", "value": "ann-2"},
        ],
    }).encode()  # fmt: skip
    path = segment(tmp_path, DAY, [merge, event(2, "bob")])
    change = remove_events(str(tmp_path), {"ann"}, {"ann@example.com"})
    assert change.events_removed == 1
    assert readable(path) == (["bob"], False)
