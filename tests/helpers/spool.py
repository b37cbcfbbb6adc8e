"""Writes RudderStack spool files for tap-rudderstack's tests, independent of the collector.

The layout is docs/contracts.md section 1; the events follow section 2. Kept deliberately small:
tests describe the exact lines they need (good events, bad lines, raw bytes) and where they go.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import gzip
import io
import json
import uuid
from pathlib import Path
from typing import Any

SOURCE_ID = "src1"
DAY = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)

#: RudderStack event type -> the stream and raw table it lands in (the contract, written out
#: here rather than read from the tap, so tests check the tap against it).
STREAM_OF = {
    "track": "tracks",
    "identify": "identifies",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
    "merge": "merges",
}
KINDS = list(STREAM_OF)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(kind: str = "track", n: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid RudderStack event of `kind` with messageId `m-<kind>-<n>`."""
    at = DAY + dt.timedelta(seconds=n)
    base: dict[str, Any] = {
        "messageId": f"m-{kind}-{n}",
        "type": kind,
        "anonymousId": f"anon-{n % 7}",
        "userId": f"user-{n % 5}" if n % 2 else None,
        "channel": "web",
        "originalTimestamp": iso(at),
        "sentAt": iso(at + dt.timedelta(milliseconds=20)),
        "receivedAt": iso(at + dt.timedelta(milliseconds=50)),
        "timestamp": iso(at + dt.timedelta(milliseconds=30)),
        "request_ip": "203.0.113.9",
        "context": {
            "ip": "203.0.113.9",
            "userAgent": "Mozilla/5.0",
            "locale": "en-US",
            "timezone": "Europe/Paris",
            "library": {"name": "rudder-sdk-python", "version": "2.1.9"},
            "page": {"url": f"https://shop.example/p/{n}"},
            "traits": {"email": f"u{n}@example.com"},
        },
    }
    if kind == "track":
        base["event"] = "Product Viewed"
        base["properties"] = {"product_id": f"p{n}", "price": 19.99, "currency": "EUR"}
    elif kind == "identify":
        base["traits"] = {"email": f"u{n}@example.com", "email_opt_in": True}
    elif kind in ("page", "screen"):
        base["name"] = "Home"
        base["properties"] = {"category": "landing", "url": "https://shop.example/"}
    elif kind == "group":
        base["groupId"] = f"g{n}"
        base["traits"] = {"plan": "pro"}
    elif kind == "alias":
        base["previousId"] = f"anon-{n}"
    elif kind == "merge":
        base["mergeProperties"] = [
            {"type": "email", "value": f"u{n}@example.com"},
            {"type": "anonymousId", "value": f"anon-{n % 7}"},
        ]
    base.update(overrides)
    return base


def encode_lines(lines: list[Any]) -> bytes:
    """JSON lines; `bytes`/`str` items are written verbatim (to make bad lines)."""
    out = bytearray()
    for line in lines:
        if isinstance(line, bytes):
            out += line
        elif isinstance(line, str):
            out += line.encode()
        else:
            out += json.dumps(line).encode()
        out += b"\n"
    return bytes(out)


def segment_path(
    root: Path | str,
    ts: int,
    source_id: str = SOURCE_ID,
    *,
    us_date: bool = False,
    name_uuid: str | None = None,
) -> Path:
    day = dt.datetime.fromtimestamp(ts, dt.UTC)
    folder = day.strftime("%m-%d-%Y") if us_date else day.strftime("%Y-%m-%d")
    name = f"{ts}.{source_id}.{name_uuid or uuid.uuid4().hex}.json.gz"
    return Path(root) / "rudder-logs" / source_id / folder / name


def write_segment(
    root: Path | str,
    ts: int,
    lines: list[Any],
    source_id: str = SOURCE_ID,
    *,
    us_date: bool = False,
    truncate_to: int | None = None,
    name_uuid: str | None = None,
) -> Path:
    """A gzip JSON-lines segment in the layout; `truncate_to` cuts the gzip bytes (corruption)."""
    path = segment_path(root, ts, source_id, us_date=us_date, name_uuid=name_uuid)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(encode_lines(lines), compresslevel=1)
    if truncate_to is not None:
        data = data[:truncate_to]
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.rename(path)
    return path


def ts_of(day_offset_s: int) -> int:
    return int(DAY.timestamp()) + day_offset_s


def run_tap(
    config: dict[str, Any], state: dict | None = None, catalog: dict | None = None
) -> list[dict[str, Any]]:
    """Run one sync in-process and return the Singer messages it wrote."""
    from tap_rudderstack.tap import TapRudderStack

    tap = TapRudderStack(
        config=config, state=copy.deepcopy(state), catalog=catalog, parse_env_config=False
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tap.sync_all()
    return [json.loads(line) for line in out.getvalue().splitlines() if line]


def records(messages, stream=None) -> list[dict[str, Any]]:
    return [
        m["record"]
        for m in messages
        if m["type"] == "RECORD" and (stream is None or m["stream"] == stream)
    ]


def ids(messages, stream=None) -> list[str]:
    return [r.get("message_id") or r.get("rejected_id") for r in records(messages, stream)]


def last_state(messages) -> dict:
    return [m for m in messages if m["type"] == "STATE"][-1]["value"]
