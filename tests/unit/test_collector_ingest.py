"""Request reading, validation and enrichment rules of the collector (no server)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import tracemalloc
import uuid
from datetime import UTC, datetime

import pytest
from signalmail.collector import ingest

LIMIT = 64 * 1024


def read(chunks, encoding=None, length=None, limit=LIMIT):
    async def stream():
        for chunk in chunks:
            yield chunk

    return asyncio.run(ingest.read_body(stream(), encoding, length, limit))


def error_of(fn, *args, **kwargs) -> ingest.IngestError:
    with pytest.raises(ingest.IngestError) as info:
        fn(*args, **kwargs)
    return info.value


# -- read_body ---------------------------------------------------------------------------------


def test_plain_and_gzip_bodies_read_back_identically():
    body = json.dumps({"batch": [{"type": "track", "userId": "u"}]}).encode()
    assert read([body[:10], body[10:]]) == body
    packed = gzip.compress(body)
    assert read([packed[:7], packed[7:]], "gzip") == body


def test_concatenated_gzip_members_are_one_stream():
    assert read([gzip.compress(b"ab") + gzip.compress(b"cd")], "gzip") == b"abcd"


def test_raw_body_over_limit_is_413_even_without_content_length():
    err = error_of(read, [b"x" * (LIMIT // 2), b"x" * (LIMIT // 2 + 1)])
    assert err.status == 413
    assert str(LIMIT) in err.message


def test_declared_content_length_over_limit_is_413_before_reading():
    def never():
        raise AssertionError("body must not be read")

    async def stream():
        never()
        yield b""

    with pytest.raises(ingest.IngestError) as info:
        asyncio.run(ingest.read_body(stream(), None, str(LIMIT + 1), LIMIT))
    assert info.value.status == 413


def test_gzip_bomb_is_413_without_inflating_it():
    # 64 MB of zeros compresses to ~64 KB; reading must stop at the 1 MB cap, not inflate it all.
    limit = 1024 * 1024
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < limit
    chunks = [bomb[i : i + 16384] for i in range(0, len(bomb), 16384)]  # as a server streams it
    tracemalloc.start()
    try:
        err = error_of(read, chunks, "gzip", None, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.status == 413
    assert err.reason == "too_large"
    # Bounded by the cap (plus slack for the event loop), far below the 64 MB it would inflate to.
    assert peak < 4 * limit, f"peak {peak} bytes while reading a gzip bomb"


def test_decompressed_size_just_under_limit_is_accepted():
    body = b"y" * LIMIT
    assert read([gzip.compress(body)], "gzip") == body
    assert error_of(read, [gzip.compress(body + b"y")], "gzip").status == 413


@pytest.mark.parametrize(
    "payload",
    [b"definitely not gzip", gzip.compress(b'{"batch": []}')[:-6]],
    ids=["garbage", "truncated"],
)
def test_corrupt_gzip_is_400(payload):
    err = error_of(read, [payload], "gzip")
    assert err.status == 400
    assert err.message.startswith("invalid gzip body")


def test_unknown_content_encoding_is_415():
    assert error_of(read, [b"{}"], "br").status == 415


def test_non_numeric_content_length_is_400():
    assert error_of(read, [b"{}"], None, "ten").status == 400


# -- parse_events ------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b'{"batch": [1]}'])
def test_invalid_json_answers(body):
    err = error_of(ingest.parse_events, body, "batch")
    assert (err.status, err.message) == (400, "invalid json")


@pytest.mark.parametrize("body", [b"{}", b'{"batch": []}', b'{"batch": null}'])
def test_empty_batch_payload(body):
    err = error_of(ingest.parse_events, body, "batch")
    assert (err.status, err.message) == (400, "empty batch payload")


def test_one_anonymous_event_rejects_the_whole_batch():
    body = json.dumps(
        {
            "batch": [
                {"type": "track", "userId": "u1", "event": "a"},
                {"type": "track", "event": "b", "anonymousId": ""},
            ]
        }
    ).encode()
    err = error_of(ingest.parse_events, body, "batch")
    assert (err.status, err.message) == (400, "request neither has anonymousId nor userId")


def test_batch_items_with_unknown_or_missing_type_do_not_cost_the_batch():
    # rudder-server's gateway checks no item's type; tap-rudderstack quarantines the bad ones
    batch = [{"type": "purchase", "userId": "u"}, {"userId": "u"}, {"type": "track", "userId": "u"}]
    events = ingest.parse_events(json.dumps({"batch": batch}).encode(), "batch")
    assert events == batch


def test_single_event_endpoint_forces_type_from_path():
    events = ingest.parse_events(b'{"type": "track", "anonymousId": 7}', "identify")
    assert events == [{"type": "identify", "anonymousId": 7}]


# -- enrichment --------------------------------------------------------------------------------

RECEIVED = datetime(2026, 3, 1, 12, 0, 10, 500000, tzinfo=UTC)


def test_enrich_corrects_client_clock_skew():
    # client clock is 1 hour behind: event at 10:59:55, sent at 10:59:59 (client time)
    event = {"type": "track", "userId": "u1", "originalTimestamp": "2026-03-01T10:59:55+00:00",
             "sentAt": "2026-03-01T10:59:59.000Z"}  # fmt: skip
    ingest.enrich(event, ingest.RequestInfo(RECEIVED, "10.0.0.1"))
    assert event["originalTimestamp"] == "2026-03-01T10:59:55.000Z"
    assert event["sentAt"] == "2026-03-01T10:59:59.000Z"
    assert event["receivedAt"] == "2026-03-01T12:00:10.500Z"
    # timestamp = receivedAt - (sentAt - originalTimestamp) = 12:00:10.5 - 4 s
    assert event["timestamp"] == "2026-03-01T12:00:06.500Z"
    assert event["request_ip"] == "10.0.0.1"


def test_enrich_keeps_a_timestamp_the_client_sent():
    # rudder-server's enhanceWithTimeFields: a parseable `timestamp` is kept, only reformatted
    event = {"type": "track", "userId": "u1", "timestamp": "2026-03-01T11:59:55+01:00",
             "originalTimestamp": "2026-03-01T10:00:00Z"}  # fmt: skip
    ingest.enrich(event, ingest.RequestInfo(RECEIVED, "10.0.0.1"))
    assert event["timestamp"] == "2026-03-01T10:59:55.000Z"
    assert event["originalTimestamp"] == "2026-03-01T10:00:00.000Z"
    bad = {"type": "track", "userId": "u1", "timestamp": "yesterday"}
    ingest.enrich(bad, ingest.RequestInfo(RECEIVED, "10.0.0.1"))
    assert bad["timestamp"] == "2026-03-01T12:00:10.500Z"  # unparseable: skew formula, no skew


def test_enrich_fills_missing_fields_and_keeps_given_ids():
    event = {"type": "track", "anonymousId": 42, "messageId": 1234}
    ingest.enrich(event, ingest.RequestInfo(RECEIVED, "1.2.3.4"))
    assert event["messageId"] == "1234"
    assert event["anonymousId"] == "42"
    for key in ("originalTimestamp", "sentAt", "receivedAt", "timestamp"):
        assert event[key] == "2026-03-01T12:00:10.500Z"

    fresh = {"type": "track", "userId": "u"}
    ingest.enrich(fresh, ingest.RequestInfo(RECEIVED, "1.2.3.4"))
    assert uuid.UUID(fresh["messageId"]).version == 4


def test_enrich_takes_times_from_the_event_only_and_survives_garbage():
    event = {
        "type": "track",
        "userId": "u",
        "originalTimestamp": "2026-03-01T12:00:00+02:00",
        "timestamp": "not a time either",
        "sentAt": "not a time",
    }
    ingest.enrich(event, ingest.RequestInfo(RECEIVED, "ip"))
    assert event["originalTimestamp"] == "2026-03-01T10:00:00.000Z"
    assert event["sentAt"] == "2026-03-01T12:00:10.500Z"  # unparseable: receivedAt
    # receivedAt - (sentAt - originalTimestamp): the event's own time, read on our clock
    assert event["timestamp"] == "2026-03-01T10:00:00.000Z"


@pytest.mark.parametrize(
    ("original", "sent"),
    [("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"), ("9999-12-31T00:00:00Z", "0001-01-01")],
)
def test_skew_correction_beyond_the_calendar_falls_back_to_received_at(original, sent):
    event = {"type": "track", "userId": "u", "originalTimestamp": original, "sentAt": sent}
    ingest.enrich(event, ingest.RequestInfo(RECEIVED, "ip"))
    assert event["timestamp"] == ingest.format_ts(RECEIVED)
    assert event["originalTimestamp"].startswith(original[:10])  # the client's value is kept


@pytest.mark.parametrize(
    "stamp", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"], ids=["year1", "year9999"]
)
def test_times_whose_offset_leaves_the_calendar_count_as_unparseable(stamp):
    event = {"type": "track", "userId": "u", "originalTimestamp": stamp, "sentAt": stamp}
    ingest.enrich(event, ingest.RequestInfo(RECEIVED, "ip"))
    received = ingest.format_ts(RECEIVED)
    assert event["originalTimestamp"] == event["sentAt"] == event["timestamp"] == received


def test_rudder_id_matches_rudder_server_md5_uuid():
    # rudder-go-kit uuid.GetMD5UUID(userId + ":" + anonymousId): MD5 with version-4 bits
    digest = bytearray(hashlib.md5(b"user-1:anon-9").digest())
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    expected = str(uuid.UUID(bytes=bytes(digest)))
    assert ingest.rudder_id("user-1", "anon-9") == expected
    assert uuid.UUID(expected).version == 4
    assert ingest.rudder_id("", "anon_id_1") == "7eafceec-e82d-4327-94f0-6dab79429696"
    assert ingest.rudder_id(None, "a") != ingest.rudder_id("a", None)


def test_client_ip_takes_first_forwarded_for_entry_when_trusted():
    assert ingest.client_ip("203.0.113.9, 10.0.0.2", "127.0.0.1") == "203.0.113.9"
    assert ingest.client_ip("203.0.113.9", "127.0.0.1", trust_forwarded=False) == "127.0.0.1"
    assert ingest.client_ip(None, "127.0.0.1") == "127.0.0.1"
