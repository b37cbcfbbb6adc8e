"""Rewriting published spool segments without some events (forget) or dropping old ones.

Segments are immutable for everyone else: a new copy is written under a hidden name (readers
skip names starting with a dot, docs/contracts.md section 1) and moved over the old one, so a
reader sees the old segment or the new one, never half of either. A segment left with no
event is deleted.

A removed event leaves an empty line in its place, so every other event keeps its line number.
The tap resumes a segment by line number (its cursor says how many lines of a file it has
read) and skips empty lines: had the lines moved up, a tap stopped mid-segment (a capture that
hit `max_records_per_sync`, a crash) would skip as many of other people's events as were
removed above its cursor, for good.

A damaged segment (truncated or corrupt gzip) is read as the tap reads it: every complete line
before the damage. `forget` cannot tell whose events the unreadable rest holds, so it rewrites
the segment without it (the tap had quarantined it already; nothing downstream can read it);
retention deletes an old damaged segment like any other. Neither stops at one: each damaged
segment is counted and named in the report.

Journals a running collector has not published yet are not touched: run `forget` again after
the collector has published them (the tombstone keeps the person from being mailed meanwhile).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fsspec
from tap_rudderstack import (
    DEFAULT_LOGS_FOLDER,
    CorruptFile,
    iter_lines,
    logs_folder_name,
    segment_opened_at,
)


@dataclass
class SpoolChange:
    """What a pass over the spool changed."""

    segments_read: int = 0
    segments_rewritten: int = 0
    segments_deleted: int = 0
    events_removed: int = 0
    touched: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)


def _read_lines(fs: Any, path: str, change: SpoolChange) -> tuple[list[bytes], bool]:
    """Return the segment's complete lines (no newlines) and whether a damaged tail followed."""
    lines: list[bytes] = []
    try:
        for _number, line in iter_lines(fs, path):
            lines.append(line)
    except CorruptFile:
        change.damaged.append(path)
        return lines, True
    return lines, False


def _segments(fs: Any, root: str, logs_folder: str) -> list[str]:
    base = f"{root.rstrip('/')}/{logs_folder_name(logs_folder)}"
    if not fs.exists(base):
        return []
    # every date folder, also one the tap skips for its name: a person's events there are
    # still in the spool
    paths = fs.glob(f"{base}/*/*/*.json.gz")
    return sorted(p for p in paths if segment_opened_at(p.rsplit("/", 1)[-1]) is not None)


def _event_mentions(event: dict[str, Any], ids: set[str], emails: set[str]) -> bool:
    for key in ("userId", "anonymousId", "previousId"):
        if event.get(key) in ids:
            return True
    raw_context = event.get("context")
    context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
    for holder in (event.get("traits"), context.get("traits"), event.get("properties")):
        if isinstance(holder, dict):
            email = holder.get("email")
            if isinstance(email, str) and email.strip().lower() in emails:
                return True
    # a merge names people in its properties' values (an address, a user id), as the
    # warehouse's merge_property_*_value columns do
    merged = event.get("mergeProperties")
    for item in merged if isinstance(merged, list) else []:
        value = item.get("value") if isinstance(item, dict) else None
        if isinstance(value, str) and (value in ids or value.strip().lower() in emails):
            return True
    return False


def remove_events(
    url: str,
    ids: set[str],
    emails: set[str],
    storage_options: dict[str, Any] | None = None,
    logs_folder: str = DEFAULT_LOGS_FOLDER,
) -> SpoolChange:
    """Rewrite every segment under `url` without the events of these ids or addresses."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    needles = [value.encode() for value in ids | emails if value]
    change = SpoolChange()

    def keep(line: bytes) -> bool:
        # the quick test: an event that names none of them as text cannot be theirs
        lowered = line.lower()
        if not any(needle.lower() in lowered for needle in needles):
            return True
        try:
            event = json.loads(line)
        except ValueError:
            return True  # not an event: nothing to match (the tap quarantines it)
        return not (isinstance(event, dict) and _event_mentions(event, ids, emails))

    for path in _segments(fs, root, logs_folder):
        change.segments_read += 1
        _rewrite(fs, path, keep, change)
    return change


def remove_segments_before(
    url: str,
    before: dt.datetime,
    storage_options: dict[str, Any] | None = None,
    logs_folder: str = DEFAULT_LOGS_FOLDER,
) -> SpoolChange:
    """Delete segments opened before `before` (the unix time their name starts with)."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    cutoff = (
        before.replace(tzinfo=dt.UTC).timestamp() if before.tzinfo is None else (before.timestamp())
    )
    change = SpoolChange()
    for path in _segments(fs, root, logs_folder):
        change.segments_read += 1
        opened = segment_opened_at(path.rsplit("/", 1)[-1])
        if opened is not None and opened < cutoff:
            lines, _damaged = _read_lines(fs, path, change)
            change.events_removed += sum(1 for line in lines if line.strip())
            fs.rm(path)
            change.segments_deleted += 1
            change.touched.append(path)
    return change


def _rewrite(fs: Any, path: str, keep: Callable[[bytes], bool], change: SpoolChange) -> None:
    lines, damaged = _read_lines(fs, path, change)
    # an empty line in place of each removed one: the others keep their numbers (module docstring)
    kept = [line if not line.strip() or keep(line) else b"" for line in lines]
    removed = sum(1 for line, new in zip(lines, kept, strict=True) if new is not line)
    if not removed and not damaged:
        return
    change.events_removed += removed
    change.touched.append(path)
    if not any(line.strip() for line in kept):
        fs.rm(path)
        change.segments_deleted += 1
        return
    folder, name = path.rsplit("/", 1)
    hidden = f"{folder}/.{name}.forget.partial"
    with fs.open(hidden, "wb") as out:
        out.write(gzip.compress(b"".join(line + b"\n" for line in kept), compresslevel=6, mtime=0))
    fs.mv(hidden, path)
    change.segments_rewritten += 1
