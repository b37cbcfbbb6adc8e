"""Rewriting published spool segments without some events (forget) or dropping old ones.

Segments are immutable for everyone else: a new copy is written under a hidden name (readers
skip names starting with a dot, docs/contracts.md section 1) and moved over the old one, so a
reader sees the old segment or the new one, never half of either. A segment left with no
event is deleted. Journals a running collector has not published yet are not touched: run
`forget` again after the collector has published them (the tombstone keeps the person from
being mailed meanwhile).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fsspec

SEGMENT_RE = re.compile(r"^(\d+)\.[A-Za-z0-9_-]+\.[0-9a-f-]+\.json\.gz$")


@dataclass
class SpoolChange:
    """What a pass over the spool changed."""

    segments_read: int = 0
    segments_rewritten: int = 0
    segments_deleted: int = 0
    events_removed: int = 0
    touched: list[str] = field(default_factory=list)


def _segments(fs: Any, root: str) -> list[str]:
    base = f"{root.rstrip('/')}/rudder-logs"
    if not fs.exists(base):
        return []
    paths = fs.glob(f"{base}/*/*/*.json.gz")
    return sorted(p for p in paths if SEGMENT_RE.match(p.rsplit("/", 1)[-1]))


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
    return False


def remove_events(
    url: str,
    ids: set[str],
    emails: set[str],
    storage_options: dict[str, Any] | None = None,
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

    for path in _segments(fs, root):
        change.segments_read += 1
        _rewrite(fs, path, keep, change)
    return change


def remove_segments_before(
    url: str, before: dt.datetime, storage_options: dict[str, Any] | None = None
) -> SpoolChange:
    """Delete segments opened before `before` (the unix time their name starts with)."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    cutoff = (
        before.replace(tzinfo=dt.UTC).timestamp() if before.tzinfo is None else (before.timestamp())
    )
    change = SpoolChange()
    for path in _segments(fs, root):
        change.segments_read += 1
        match = SEGMENT_RE.match(path.rsplit("/", 1)[-1])
        if match and int(match.group(1)) < cutoff:
            with fs.open(path, "rb") as raw, gzip.open(raw) as handle:
                change.events_removed += sum(1 for _ in handle)
            fs.rm(path)
            change.segments_deleted += 1
            change.touched.append(path)
    return change


def _rewrite(fs: Any, path: str, keep: Callable[[bytes], bool], change: SpoolChange) -> None:
    with fs.open(path, "rb") as raw, gzip.open(raw) as handle:
        lines = handle.read().splitlines(keepends=True)
    kept = [line for line in lines if not line.strip() or keep(line)]
    removed = len(lines) - len(kept)
    if not removed:
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
        out.write(gzip.compress(b"".join(kept), compresslevel=6, mtime=0))
    fs.mv(hidden, path)
    change.segments_rewritten += 1
