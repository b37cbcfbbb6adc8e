"""The watch's bookmarks: one JSON file, replaced atomically after every step that moves one.

Two bookmarks are the STATE a target emitted last: `capture` (tap-rudderstack's spool
position, emitted by the loader once the rows are committed) and `activate` (tap-warehouse's
position in email_triggers, emitted by the email target once every send is in its ledger).
A third, `signals`, is the watch's own: how far the dbt ticks have counted the loaded events
(see `signalmail.watch.late`); it is saved with `capture`, in the same write.
A bookmark is written only after the work it covers is durable, so a watch killed at any
moment resumes from a bookmark that is at most one step behind: the loader's upsert and the
send ledger make repeating that step harmless.

The file is written to a temporary name, fsync'd, renamed over the old one and the folder
fsync'd: a crash leaves the old bookmarks or the new ones, never a torn file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

VERSION = 1


class StateFile:
    """Bookmarks by name, persisted in `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, Any] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise RuntimeError(
                    f"the watch's state file {path} is not JSON ({exc}); move it away to "
                    "start over from the spool (loads and sends are idempotent)"
                ) from None
            self.values = dict(data.get("bookmarks") or {})

    def get(self, name: str) -> dict[str, Any]:
        """One bookmark (empty before the first save)."""
        return dict(self.values.get(name) or {})

    def save(self, name: str, value: dict[str, Any]) -> None:
        """Replace one bookmark durably."""
        self.save_many({name: value})

    def save_many(self, values: dict[str, dict[str, Any]]) -> None:
        """Replace several bookmarks durably, in one write: a crash keeps all or none."""
        self.values.update(values)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump({"version": VERSION, "bookmarks": self.values}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
