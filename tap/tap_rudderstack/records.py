"""The records of tap-rudderstack: RudderStack events as raw-table rows, and rejections.

The raw-table columns are fixed by docs/contracts.md section 3 (dbt builds on them). Nested
``properties`` / ``traits`` / ``context`` stay JSON objects so every field is reachable from dbt
without a schema change; the handful of context fields every model needs are also flattened.
The streams (``streams.py``) declare these schemas; the spool reader (``sync.py``) builds the
records; both import them from here.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from tap_rudderstack.spool import parse_timestamp, rejected_id

if TYPE_CHECKING:
    from tap_rudderstack.spool import Rejection, SpoolFile

_fromisoformat = dt.datetime.fromisoformat

#: RudderStack's UTC text, `YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`: the form every loader parses as is.
#: fromisoformat also takes `,123` or ` Z`, which DuckDB's TIMESTAMPTZ refuses; those go
#: through the full parse instead of being passed on as text.
_utc_text = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z", re.ASCII).fullmatch

# Integers carry a `maximum`: target-duckdb maps an unbounded integer to hugeint.
_INT32 = {"type": ["integer", "null"], "minimum": 0, "maximum": 2147483647}
_STR = {"type": ["string", "null"]}
_TS = {"type": ["string", "null"], "format": "date-time"}
_OBJ = {"type": ["object", "null"], "additionalProperties": True}

#: Columns every event stream has, in table order.
COMMON_PROPERTIES: dict[str, dict[str, Any]] = {
    "message_id": {"type": ["string"]},
    "type": _STR,
    "anonymous_id": _STR,
    "user_id": _STR,
    "channel": _STR,
    "original_timestamp": _TS,
    "sent_at": _TS,
    "received_at": _TS,
    "timestamp": _TS,
    "request_ip": _STR,
    "context_ip": _STR,
    "context_user_agent": _STR,
    "context_page_url": _STR,
    "context_locale": _STR,
    "context_timezone": _STR,
    "context_library_name": _STR,
    "context_library_version": _STR,
    "context": _OBJ,
    "_spool_key": _STR,
    "_spool_line": _INT32,
}

#: Stream-specific columns, keyed by stream name.
EXTRA_PROPERTIES: dict[str, dict[str, dict[str, Any]]] = {
    "tracks": {"event": _STR, "properties": _OBJ},
    "identifies": {"traits": _OBJ},
    "pages": {"name": _STR, "category": _STR, "properties": _OBJ},
    "screens": {"name": _STR, "category": _STR, "properties": _OBJ},
    "groups": {"group_id": _STR, "traits": _OBJ},
    "aliases": {"previous_id": _STR},
    # rudder-server's rudder_identity_merge_rules columns (warehouse/idresolution.go)
    "merges": {
        "merge_property_1_type": _STR,
        "merge_property_1_value": _STR,
        "merge_property_2_type": _STR,
        "merge_property_2_value": _STR,
    },
}


#: ``rejected_events``: one row per spool line that is not a usable event, or per quarantined
#: file tail.
REJECTED_EVENT_PROPERTIES: dict[str, dict[str, Any]] = {
    "rejected_id": {"type": ["string"]},
    "source_file": _STR,
    "line_number": _INT32,
    "reason": _STR,
    "raw_text": _STR,
    "rejected_at": _TS,
}


def _text(value: Any) -> str | None:
    """Return a string column's value: strings as is, scalars as text, nothing as null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    import msgspec

    return msgspec.json.encode(value).decode()


def _object(value: Any) -> dict[str, Any] | None:
    """Return a JSON-object column's value; a non-object is kept, wrapped, not dropped."""
    if value is None or isinstance(value, dict):
        return value
    return {"_value": value}


class EventBuilder:
    """Turns a parsed RudderStack event into a raw-table record of its stream.

    A timestamp that does not parse as ISO-8601 loads as null rather than failing the whole load
    in the warehouse; such values are counted and the count is logged at the end of the run.
    """

    def __init__(self) -> None:
        self.bad_timestamps = 0

    def _ts(self, value: Any) -> dt.datetime | str | None:
        """Return a date-time column's value: valid UTC text as is, anything else parsed.

        RudderStack writes UTC as `YYYY-MM-DDTHH:MM:SS[.fff]Z`. Such a value is only checked
        (the shape here, the calendar by fromisoformat) and passed on as the same text, which
        every loader parses anyway; converting it to a datetime and back was a fifth of the
        tap's time. Other forms (offsets, no zone) are parsed and normalised to UTC.
        """
        if value is None:
            return None
        if type(value) is str and _utc_text(value):
            try:
                _fromisoformat(value)
            except ValueError:
                pass
            else:
                return value
        parsed = parse_timestamp(value)
        if parsed is None:
            self.bad_timestamps += 1
        return parsed

    def build(self, stream: str, event: dict[str, Any], key: str, line: int) -> dict[str, Any]:
        """Build the record for ``stream`` (already chosen from the event's type)."""
        get = event.get
        context = get("context")
        ctx = context if isinstance(context, dict) else {}
        library = ctx.get("library")
        library = library if isinstance(library, dict) else {}
        page = ctx.get("page")
        page = page if isinstance(page, dict) else {}
        record: dict[str, Any] = {
            "message_id": _text(get("messageId")),
            "type": _text(get("type")),
            "anonymous_id": _text(get("anonymousId")) or None,
            "user_id": _text(get("userId")) or None,
            "channel": _text(get("channel")),
            "original_timestamp": self._ts(get("originalTimestamp")),
            "sent_at": self._ts(get("sentAt")),
            "received_at": self._ts(get("receivedAt")),
            "timestamp": self._ts(get("timestamp")),
            "request_ip": _text(get("request_ip")),
            "context_ip": _text(ctx.get("ip")),
            "context_user_agent": _text(ctx.get("userAgent")),
            "context_page_url": _text(page.get("url")),
            "context_locale": _text(ctx.get("locale")),
            "context_timezone": _text(ctx.get("timezone")),
            "context_library_name": _text(library.get("name")),
            "context_library_version": _text(library.get("version")),
            "context": _object(context),
            "_spool_key": key,
            "_spool_line": line,
        }
        if stream == "tracks":
            record["event"] = _text(get("event"))
            record["properties"] = _object(get("properties"))
        elif stream == "identifies":
            record["traits"] = _object(get("traits"))
        elif stream in ("pages", "screens"):
            props = get("properties")
            props_d = props if isinstance(props, dict) else {}
            record["name"] = _text(get("name") or props_d.get("name"))
            record["category"] = _text(get("category") or props_d.get("category"))
            record["properties"] = _object(props)
        elif stream == "groups":
            record["group_id"] = _text(get("groupId"))
            record["traits"] = _object(get("traits"))
        elif stream == "aliases":
            record["previous_id"] = _text(get("previousId"))
        elif stream == "merges":  # parse_event checked the shape: two {type, value} objects
            first, second = event["mergeProperties"]
            record["merge_property_1_type"] = _text(first.get("type"))
            record["merge_property_1_value"] = _text(first.get("value"))
            record["merge_property_2_type"] = _text(second.get("type"))
            record["merge_property_2_value"] = _text(second.get("value"))
        return record


def rejection_record(
    spool_file: SpoolFile, rejection: Rejection, max_chars: int, rejected_at: dt.datetime
) -> dict[str, Any]:
    """Build the ``rejected_events`` record of a rejected line or quarantined file tail."""
    raw = rejection.raw.decode("utf-8", errors="replace")
    if len(raw) > max_chars:
        raw = raw[:max_chars]
    return {
        "rejected_id": rejected_id(spool_file.key, rejection.line_number),
        "source_file": spool_file.key,
        "line_number": rejection.line_number,
        "reason": rejection.reason,
        "raw_text": raw,
        "rejected_at": rejected_at,
    }
