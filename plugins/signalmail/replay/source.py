"""Reading public clickstream CSVs as streams: input opening, format sniffing, rejects.

The data sets are several GB per month, so nothing here holds more than one row (plus the CSV
module's bounded field buffer) at a time: rows flow from the file through a converter to a sink.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

GZIP_MAGIC = b"\x1f\x8b"
#: a malformed row (an unterminated quote) can swallow the rest of the file; cap its memory
FIELD_SIZE_LIMIT = 1 << 20
RAW_TEXT_LIMIT = 500

REES46_HEADER = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
RETAILROCKET_HEADER = ("timestamp", "visitorid", "event", "itemid", "transactionid")
HEADERS: dict[str, tuple[str, ...]] = {"rees46": REES46_HEADER, "retailrocket": RETAILROCKET_HEADER}


class ReplayError(RuntimeError):
    """The input cannot be replayed at all (missing file, unknown format); not a bad row."""


class InputUnreadable(ReplayError):
    """The input stops being readable part way (a gzip file cut short, corrupt data)."""


class RowError(ValueError):
    """One row is malformed; the reason is reported with its line number and the replay goes on."""


def is_decimal_id(text: str) -> bool:
    """ASCII digits only, as the datasets write ids and epoch times.

    str.isdigit() also takes '²' or Arabic-Indic digits, which int() refuses or reads as
    another number.
    """
    return text.isascii() and text.isdigit()


@dataclass(slots=True)
class Reject:
    """A row that was not converted, and why."""

    line: int
    reason: str
    raw: str


@dataclass(slots=True)
class Rejects:
    """Counts rejected rows by reason, keeps a few examples, optionally writes all to a CSV file.

    Memory stays bounded however many rows are bad: only `keep` examples are held.
    """

    path: Path | None = None
    keep: int = 10
    count: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    examples: list[Reject] = field(default_factory=list)
    _writer: Any = None
    _handle: IO[str] | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(["line", "reason", "raw"])

    def add(self, reject: Reject) -> None:
        """Record one rejected row."""
        self.count += 1
        # group by the reason's kind (before the first colon) so values do not explode the table
        self.by_reason[reject.reason.split(":", 1)[0]] += 1
        if len(self.examples) < self.keep:
            self.examples.append(reject)
        if self._writer is not None:
            self._writer.writerow([reject.line, reject.reason, reject.raw])

    def close(self) -> None:
        """Close the rejects file, if one was asked for."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class Input:
    """A CSV file (plain or gzip, detected by its magic bytes, not its name) opened as text.

    `position()` is how far into the file on disk reading has got (compressed bytes for gzip),
    which is what a progress bar over a multi-GB .csv.gz needs.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._raw: io.BufferedReader = self.path.open("rb")
        except OSError as exc:
            raise ReplayError(f"cannot open {self.path}: {exc.strerror or exc}") from exc
        self.size = self.path.stat().st_size
        self.compressed = self._raw.read(2) == GZIP_MAGIC
        self._raw.seek(0)
        if self.compressed:
            import gzip

            binary: gzip.GzipFile | io.BufferedReader = gzip.GzipFile(fileobj=self._raw, mode="rb")
        else:
            binary = self._raw
        # utf-8-sig drops a BOM; undecodable bytes become U+FFFD and the row is rejected
        self.text: TextIO = io.TextIOWrapper(
            binary, encoding="utf-8-sig", errors="replace", newline=""
        )

    def position(self) -> int:
        """Bytes of the file on disk consumed so far."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return self.size

    def close(self) -> None:
        """Release the file."""
        self.text.close()
        self._raw.close()


def normalise_header(row: list[str]) -> tuple[str, ...]:
    """Header cells compared case- and space-insensitively."""
    return tuple(cell.strip().lower() for cell in row)


def sniff_format(first_row: list[str], wanted: str) -> tuple[str, bool]:
    """(format, first row is a header) from the first row and `--format`.

    With `auto` the header decides. With an explicit format, a file without a header is accepted
    (its first row is data), but a header of the other format is an error, not a silent mix-up.
    """
    header = normalise_header(first_row)
    found = next((name for name, cols in HEADERS.items() if header == cols), None)
    if wanted == "auto":
        if found is None:
            expected = "; ".join(f"{n}: {','.join(c)}" for n, c in HEADERS.items())
            raise ReplayError(
                f"cannot tell the format from the header {','.join(first_row)[:200]!r}; "
                f"expected one of ({expected}), or pass --format"
            )
        return found, True
    if wanted not in HEADERS:
        raise ReplayError(f"unknown format {wanted!r}; use auto, rees46 or retailrocket")
    if found is not None and found != wanted:
        raise ReplayError(f"--format {wanted} given but the header is {found}'s")
    if found is None and len(first_row) != len(HEADERS[wanted]):
        raise ReplayError(
            f"first row has {len(first_row)} columns, {wanted} has {len(HEADERS[wanted])} "
            f"({','.join(HEADERS[wanted])})"
        )
    return wanted, found is not None


def iter_rows(text: TextIO) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line number, cells, None) per row, or (line number, None, error) for unparseable input.

    Line numbers are physical lines (1 is the header), the number a reader finds in an editor.
    Each line is parsed on its own: neither data set has a field that spans lines, and a
    reader that let one quote open a field would swallow every line up to the next quote
    (about a megabyte) into one rejected row. A read error (a gzip file cut short, corrupt
    compressed data) raises InputUnreadable, saying after which line.
    """
    csv.field_size_limit(FIELD_SIZE_LIMIT)
    lines = iter(text)
    line_no = 0
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except (EOFError, OSError, zlib.error) as exc:
            raise InputUnreadable(f"the input is unreadable after line {line_no}: {exc}") from None
        line_no += 1
        try:
            row = next(csv.reader((line,), strict=True), [])
        except csv.Error as exc:
            yield line_no, None, f"unparseable CSV: {exc}"
            continue
        yield line_no, row, None


def raw_text(row: list[str] | None) -> str:
    """Return a row as text for reports, truncated."""
    if row is None:
        return ""
    text = ",".join(row)
    return text if len(text) <= RAW_TEXT_LIMIT else text[:RAW_TEXT_LIMIT] + "..."
