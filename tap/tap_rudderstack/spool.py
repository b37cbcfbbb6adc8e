"""The RudderStack spool: listing the object-storage layout and reading its gzip JSON lines.

Layout (docs/contracts.md section 1), on a local folder or ``s3://bucket/prefix`` through fsspec:

    <root>/rudder-logs/<source_id>/<YYYY-MM-DD | MM-DD-YYYY>/<unix_ts>.<source_id>.<uuid>.json.gz

Nothing here knows about Singer: this module turns files into ``(line_number, event | rejection)``
items and file listings into an order that can be bookmarked. Everything that does not match the
layout (``.partial`` files, dot-files, dot-folders, other names) is ignored, because writers make
files appear atomically by renaming them into a matching name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

# A date folder: the current ISO form, behind any custom prefix RudderStack's object-storage
# destination may be given (`dt=2026-12-06`), and the older MM-DD-YYYY form.
_ISO_DATE = re.compile(r"^(?![.])[^/]*?(\d{4})-(\d{2})-(\d{2})$")  # hidden folders: never
_US_DATE = re.compile(r"^(\d{2})-(\d{2})-(\d{4})$")
_FILE_NAME = re.compile(r"^(?P<ts>\d{1,12})\.(?P<source>[^./]+)\.(?P<uuid>[^./]+)\.json\.gz$")


def segment_opened_at(name: str) -> int | None:
    """Return the unix second a spool file's name says its segment opened (None: not a segment).

    The one reading of RudderStack's `<ts>.<source>.<uuid>.json.gz`: the tap lists by it, and
    `signalmail forget` and retention must see every file the tap would read.
    """
    match = _FILE_NAME.match(name)
    return int(match["ts"]) if match else None


#: RudderStack `type` -> stream name.
EVENT_STREAMS: dict[str, str] = {
    "track": "tracks",
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
    "merge": "merges",
}

LOGGER = logging.getLogger(__name__)
#: folders already warned about (a long-running watch lists the spool every few seconds)
_SKIPPED_FOLDERS: set[str] = set()

_READ_CHUNK = 1 << 20  # compressed bytes per read: big enough to amortise calls, small in memory


class SpoolError(Exception):
    """The spool root cannot be listed or a file cannot be opened (configuration, credentials)."""


def parse_date_folder(name: str) -> dt.date | None:
    """Return the UTC date of a date folder name, or None when it is not a date folder."""
    match = _ISO_DATE.match(name)
    try:
        if match:
            return dt.date(int(match[1]), int(match[2]), int(match[3]))
        match = _US_DATE.match(name)
        if match:
            return dt.date(int(match[3]), int(match[1]), int(match[2]))
    except ValueError:  # 2026-13-45: looks like a date, is not one
        return None
    return None


@dataclass(frozen=True, slots=True)
class SpoolFile:
    """One segment file of the spool.

    ``position`` is the file's identity in bookmarks: its name without ``.json.gz``, i.e.
    ``<unix_ts>.<source_id>.<uuid>``, unique and sortable by the segment's opening second.
    ``sort_tuple`` (opening second, then name) is the processing order.
    """

    key: str  # path relative to the spool root, as it appears in the layout
    url: str  # what the filesystem opens
    folder_date: dt.date
    ts: int
    source_id: str
    name: str

    @property
    def position(self) -> str:
        """Bookmark identity: ``<unix_ts>.<source_id>.<uuid>``."""
        return self.name.removesuffix(".json.gz")

    @property
    def sort_tuple(self) -> tuple[int, str]:
        """Order of processing: opening second, then name."""
        return (self.ts, self.position)


def position_sort_tuple(position: str) -> tuple[int, str]:
    """Return the ``sort_tuple`` of a bookmark ``position`` string, without the file."""
    head = position.split(".", 1)[0]
    return (int(head) if head.isdigit() else 0, position)


def open_filesystem(source: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Return an fsspec filesystem and the root path inside it for a ``source`` setting.

    Local paths and ``file://`` URLs use the local filesystem; ``s3://bucket/prefix`` uses s3fs
    with ``storage_options`` (key, secret, token, client_kwargs.endpoint_url/region_name).
    """
    import fsspec  # imported here so that `--about` stays fast

    if not source or not source.strip():
        raise SpoolError("the `source` setting is empty: set a local path or s3://bucket/prefix")
    if "://" in source:
        protocol, _, path = source.partition("://")
    else:
        protocol, path = "file", source
    options = dict(storage_options or {}) if protocol != "file" else {}
    if protocol != "file":
        # A fresh instance per run: fsspec caches instances and their listings per process,
        # which would hide files that appeared since the last listing.
        options["skip_instance_cache"] = True
    try:
        fs = fsspec.filesystem(protocol, **options)
    except (ImportError, ValueError) as exc:
        raise SpoolError(f"cannot open spool source {protocol}://...: {exc}") from exc
    root = path.rstrip("/") if protocol != "file" else str(path).rstrip("/") or "/"
    return fs, root


#: RudderStack's top folder under the spool root; its destination may be told another name
DEFAULT_LOGS_FOLDER = "rudder-logs"


def logs_folder_name(setting: str | None) -> str:
    """Give the `logs_folder` setting as a folder name (unset or empty: RudderStack's default)."""
    return (setting or "").strip("/") or DEFAULT_LOGS_FOLDER


class SpoolLister:
    """Lists spool files in processing order, one date folder at a time.

    Only date folders on or after ``min_date`` are listed, so the cost of a run's listing follows
    the late-file window, not the age of the spool. Within a folder the files are sorted; folders
    are visited in date order (both folder formats normalise to a date, and a date that exists in
    both formats is merged).
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        source_ids: list[str] | None = None,
        logs_folder: str | None = DEFAULT_LOGS_FOLDER,
    ) -> None:
        self.fs = fs
        self.root = root
        self.source_ids = set(source_ids) if source_ids else None
        self.logs_folder = logs_folder_name(logs_folder)

    def _ls(self, path: str) -> list[dict[str, Any]]:
        try:
            return self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        except PermissionError as exc:
            raise SpoolError(f"permission denied listing {path!r}: {exc}") from exc

    @staticmethod
    def _base(entry: dict[str, Any]) -> str:
        return entry["name"].rstrip("/").rsplit("/", 1)[-1]

    def iter_files(self, min_date: dt.date | None = None) -> Iterator[SpoolFile]:
        """Spool files with folder date >= ``min_date``, in processing order."""
        logs = f"{self.root}/{self.logs_folder}"
        self.fs.invalidate_cache()  # every run lists what is there now
        if not self.fs.exists(logs):
            raise SpoolError(
                f"no {self.logs_folder}/ folder under the spool root {self.root!r}: check the "
                f"`source` setting (it must point at the folder holding {self.logs_folder}/) "
                "and `logs_folder` (RudderStack's destination may rename it)"
            )
        folders: dict[dt.date, list[tuple[str, str]]] = {}
        for source_entry in self._ls(logs):
            source_id = self._base(source_entry)
            if source_entry.get("type") != "directory" or source_id.startswith("."):
                continue
            if self.source_ids is not None and source_id not in self.source_ids:
                continue
            for date_entry in self._ls(source_entry["name"]):
                if date_entry.get("type") != "directory":
                    continue
                day = parse_date_folder(self._base(date_entry))
                if day is None:
                    self._skip_once(date_entry["name"])
                    continue
                if min_date is not None and day < min_date:
                    continue
                folders.setdefault(day, []).append((source_id, date_entry["name"].rstrip("/")))
        for day in sorted(folders):
            files: list[SpoolFile] = []
            for source_id, folder in folders[day]:
                rel_folder = folder[len(self.root) :].lstrip("/")
                for entry in self._ls(folder):
                    if entry.get("type") != "file":
                        continue
                    name = self._base(entry)
                    match = _FILE_NAME.match(name)
                    if not match or match["source"] != source_id:
                        continue
                    files.append(
                        SpoolFile(
                            key=f"{rel_folder}/{name}",
                            url=entry["name"],
                            folder_date=day,
                            ts=int(match["ts"]),
                            source_id=source_id,
                            name=name,
                        )
                    )
            files.sort(key=lambda f: f.sort_tuple)
            yield from files

    def _skip_once(self, folder: str) -> None:
        """Warn, once per process, about a folder that holds no date: its files are not read."""
        if folder not in _SKIPPED_FOLDERS and not self._base({"name": folder}).startswith("."):
            _SKIPPED_FOLDERS.add(folder)
            LOGGER.warning(
                "skipping %s: not a date folder (YYYY-MM-DD, with any prefix, or MM-DD-YYYY); "
                "its files are not read",
                folder,
            )


@dataclass(frozen=True, slots=True)
class Rejection:
    """A line (or a whole file tail) that is not a usable event, and why."""

    line_number: int
    reason: str
    raw: bytes


class CorruptFile(Exception):
    """Raised after the last good line of a gzip file that is truncated or corrupt."""

    def __init__(self, reason: str, line_number: int, tail: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line_number = line_number
        self.tail = tail


def iter_lines(fs: Any, url: str) -> Iterator[tuple[int, bytes]]:
    """``(line_number, line)`` of a gzip JSON-lines file, 1-based, without the newline.

    Streams the file in 1 MiB compressed chunks, so memory does not depend on the file size.
    Concatenated gzip members are read in turn. When the file is truncated or corrupt, every
    complete line before the damage is yielded and then ``CorruptFile`` is raised with the
    partial line that was cut (so the caller can quarantine it with its reason).
    """
    decomp = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, auto-detected
    pending = b""
    line_number = 0
    member_started = False
    with fs.open(url, "rb") as handle:
        while True:
            chunk = handle.read(_READ_CHUNK)
            if not chunk:
                break
            data = b""
            while chunk:
                try:
                    data += decomp.decompress(chunk)
                except zlib.error as exc:
                    lines, pending = _split(pending + data)
                    for line in lines:
                        line_number += 1
                        yield line_number, line
                    raise CorruptFile(f"corrupt_gzip: {exc}", line_number + 1, pending) from exc
                member_started = True
                if decomp.eof:
                    # A finished gzip member; anything after it is the next member.
                    chunk = decomp.unused_data
                    decomp = zlib.decompressobj(wbits=47)
                    member_started = bool(chunk)
                else:
                    chunk = b""
            lines, pending = _split(pending + data)
            for line in lines:
                line_number += 1
                yield line_number, line
    if member_started and not decomp.eof:
        # The stream stopped inside a member: the file was cut short.
        with contextlib.suppress(zlib.error):  # flush on a truncated stream rarely raises
            pending += decomp.flush()
        lines, pending = _split(pending)
        for line in lines:
            line_number += 1
            yield line_number, line
        raise CorruptFile(
            "truncated_gzip: the file ends inside a gzip member", line_number + 1, pending
        )
    if pending:
        # A last line without a trailing newline is still a complete line.
        line_number += 1
        yield line_number, pending


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines of ``data`` and the unfinished remainder."""
    if b"\n" not in data:
        return [], data
    *lines, rest = data.split(b"\n")
    return [line[:-1] if line.endswith(b"\r") else line for line in lines], rest


_decoder = msgspec.json.Decoder()


def parse_event(line: bytes) -> tuple[str, dict[str, Any]] | str:
    """``(stream_name, event)`` for a usable event line, else the rejection reason.

    Reasons: ``invalid_json``, ``not_an_object``, ``missing_type``, ``unknown_type``,
    ``missing_message_id``, ``missing_ids`` (neither anonymousId nor userId), and for a merge
    the reasons rudder-server's warehouse transformer gives (idresolution.go,
    mergePropsForMergeEventType): ``merge_properties_missing`` (absent, or not exactly two
    identifiers) and ``merge_property_invalid`` (not a list, an identifier that is not an
    object, or one with an empty type or value).
    """
    try:
        event = _decoder.decode(line)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        # RecursionError: nesting deeper than this interpreter's stack takes (a hand-written
        # spool file; the collector never writes a line it could not encode).
        # UnicodeDecodeError: bytes that are not UTF-8 inside a string; msgspec raises it as
        # is, not as a DecodeError, and one such line must not stop the run.
        return "invalid_json"
    if not isinstance(event, dict):
        return "not_an_object"
    kind = event.get("type")
    if not kind or not isinstance(kind, str):
        return "missing_type"
    stream = EVENT_STREAMS.get(kind.lower())
    if stream is None:
        return "unknown_type"
    message_id = event.get("messageId")
    if not message_id or not isinstance(message_id, str | int):
        return "missing_message_id"
    if not _present(event.get("anonymousId")) and not _present(event.get("userId")):
        return "missing_ids"
    if stream == "merges":
        problem = merge_problem(event.get("mergeProperties"))
        if problem is not None:
            return problem
    return stream, event


def merge_problem(merge_properties: Any) -> str | None:
    """Why a merge event's mergeProperties cannot be loaded, as rudder-server judges it."""
    if merge_properties is None:
        return "merge_properties_missing"
    if not isinstance(merge_properties, list):
        return "merge_property_invalid"
    if len(merge_properties) != 2:
        return "merge_properties_missing"
    for item in merge_properties:
        if not isinstance(item, dict):
            return "merge_property_invalid"
        if not _filled(item.get("type")) or not _filled(item.get("value")):
            return "merge_property_invalid"
    return None


def _filled(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _present(value: Any) -> bool:
    return value is not None and value != ""


def rejected_id(key: str, line_number: int) -> str:
    """Deterministic id of a rejection, so re-reading a file upserts instead of duplicating."""
    return hashlib.sha1(f"{key}:{line_number}".encode(), usedforsecurity=False).hexdigest()


_UTC = dt.UTC


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Return an aware UTC datetime for an ISO-8601 value; naive values are taken as UTC.

    Returns None for absent or unparseable values (the caller counts those): a warehouse load
    must never fail on one client's broken clock string.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=_UTC)
    return parsed.astimezone(_UTC)
