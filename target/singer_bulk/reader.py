"""The Singer message reader of the bulk loaders: msgspec, bytes in, a RECORD's record kept raw.

Why: the SDK's default reader decodes text with the standard json module, which was a third of
target-duckdb-bulk's CPU. singer-sdk's contrib MsgSpecReader turns every float into a Decimal,
which would then be written as a string; this one keeps JSON numbers as int/float. A RECORD's
record is left as msgspec.Raw, so the raw-record path (records.py) can hand its bytes to the
sink without ever parsing them.
"""

from __future__ import annotations

import json
import re
import sys
import typing as t

import msgspec
from singer_sdk.singerlib.encoding.base import GenericSingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine


class MsgspecBytesReader(GenericSingerReader[bytes]):
    """Reads Singer messages as bytes from stdin with msgspec.

    A RECORD message's `record` stays raw bytes (msgspec.Raw): the target decides whether it
    must parse it. Every other message, and every other field of a RECORD, is decoded.
    """

    _decoder = msgspec.json.Decoder()
    # Top level only: nested values stay as raw bytes, so a RECORD's record is never parsed here.
    _envelope = msgspec.json.Decoder(dict[str, msgspec.Raw])

    @property
    def default_input(self) -> t.IO[bytes]:
        """Stdin as bytes: msgspec decodes UTF-8 itself, no text layer needed."""
        return sys.stdin.buffer

    def deserialize_json(self, line: bytes | str) -> dict:
        """Decode one Singer message; a clear InvalidInputLine for anything else."""
        # bytes from stdin; str when the SDK's `--input FILE` option opens a file in text mode.
        # A RECORD keeps its record as msgspec.Raw (the target decides whether it must parse it).
        try:
            envelope = self._envelope.decode(line)
            kind = envelope.get("type")
            if kind is not None and bytes(kind) == b'"RECORD"':
                message: t.Any = {
                    k: (v if k == "record" else self._decoder.decode(v))
                    for k, v in envelope.items()
                }
                return message
            message = self._decoder.decode(line)
        except msgspec.DecodeError as exc:
            lenient = _lenient_message(line)
            if lenient is not None:
                return lenient
            head = line[:500]
            shown = head if isinstance(head, str) else head.decode("utf-8", "replace")
            msg = f"Unable to parse line as JSON ({exc}): {shown}"
            raise InvalidInputLine(msg) from exc
        if not isinstance(message, dict):
            msg = f"Singer message is not a JSON object: {str(line)[:200]}"
            raise InvalidInputLine(msg)
        return message


def _lenient_message(line: bytes | str) -> dict | None:
    r"""Decode a line msgspec refuses but Python's json (which singer-sdk's taps write) takes.

    `NaN`, `Infinity` and `-Infinity` (Python's json writes them for float values) and a lone
    surrogate escape (`"\ud800"`) are not JSON that msgspec or the databases take, yet a
    standard SDK target reads such a line, and refusing it stopped the whole run. Here the
    numbers become null and a lone surrogate U+FFFD (as NUL does in target-postgres-bulk),
    and the record goes the SDK's way (decoded, not raw). None for a line that is no JSON.
    """
    try:
        message = json.loads(line, parse_constant=lambda _name: None)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    return t.cast("dict", _without_surrogates(message))


#: a UTF-16 surrogate on its own, which json.loads lets through from a `\\ud800` escape
_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_surrogates(value: t.Any) -> t.Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value
