"""tap-rudderstack end to end in-process: records, rejections, resume, late files, selection, maps,
BATCH, plus the singer-sdk standard tap test suite.
"""

from __future__ import annotations

import atexit
import datetime as dt
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from singer_sdk.testing import get_tap_test_class
from tap_rudderstack.records import COMMON_PROPERTIES, EXTRA_PROPERTIES
from tap_rudderstack.tap import TapRudderStack

from tests.helpers.spool import (
    KINDS,
    event,
    ids,
    last_state,
    records,
    run_tap,
    ts_of,
    write_segment,
)


@pytest.fixture
def spool(tmp_path) -> Path:
    root = tmp_path / "spool"
    good = [event(kind, n) for n in range(3) for kind in KINDS]
    bad = [
        b'{"type": "track", "messageId": "x0", "userId": "u", "event": "caf\xe9"}',  # Latin-1
        "{oops",
        "[1, 2]",
        '{"type": "purchase", "messageId": "x1", "userId": "u"}',
        '{"type": "track", "userId": "u"}',
        '{"type": "track", "messageId": "x2"}',
        "",
        "Z" * 5000,
    ]
    write_segment(root, ts_of(0), good[:9] + bad)
    write_segment(root, ts_of(60), good[9:], us_date=True)
    return root


def test_every_event_lands_in_its_stream_with_the_contract_columns(spool):
    messages = run_tap({"source": str(spool)})
    for kind, stream in zip(KINDS, EXTRA_PROPERTIES, strict=True):
        assert sorted(ids(messages, stream)) == [f"m-{kind}-{n}" for n in range(3)]
        expected = set(COMMON_PROPERTIES) | set(EXTRA_PROPERTIES[stream])
        for record in records(messages, stream):
            assert set(record) == expected
    track = next(r for r in records(messages, "tracks") if r["message_id"] == "m-track-1")
    assert track["event"] == "Product Viewed"
    assert track["properties"] == {"product_id": "p1", "price": 19.99, "currency": "EUR"}
    assert track["user_id"] == "user-1"
    assert track["context_library_name"] == "rudder-sdk-python"
    assert track["context_page_url"] == "https://shop.example/p/1"
    assert track["context"]["traits"]["email"] == "u1@example.com"
    assert track["original_timestamp"].startswith("2026-11-20T00:00:01")
    assert track["_spool_key"].startswith("rudder-logs/src1/2026-11-20/")
    assert track["_spool_line"] == len(KINDS) + 1  # after n=0 of every kind
    identify = records(messages, "identifies")[0]
    assert identify["traits"]["email_opt_in"] is True
    assert records(messages, "groups")[0]["group_id"].startswith("g")
    assert records(messages, "aliases")[0]["previous_id"].startswith("anon-")
    merge = records(messages, "merges")[0]
    assert merge["merge_property_1_type"] == "email"
    assert merge["merge_property_1_value"].endswith("@example.com")
    assert (merge["merge_property_2_type"], merge["merge_property_2_value"][:5]) == (
        "anonymousId",
        "anon-",
    )
    assert records(messages, "pages")[0]["name"] == "Home"


def test_every_unusable_line_is_a_rejected_event_with_reason_and_truncated_text(spool):
    messages = run_tap({"source": str(spool), "max_raw_text_chars": 100})
    rejected = {r["line_number"]: r for r in records(messages, "rejected_events")}
    assert {n: r["reason"] for n, r in rejected.items()} == {
        10: "invalid_json",
        11: "invalid_json",
        12: "not_an_object",
        13: "unknown_type",
        14: "missing_message_id",
        15: "missing_ids",
        17: "invalid_json",
    }
    assert rejected[10]["raw_text"].endswith('"event": "caf\ufffd"}')  # kept, made readable
    assert rejected[11]["raw_text"] == "{oops"
    assert rejected[17]["raw_text"] == "Z" * 100
    assert all(r["source_file"].endswith(".json.gz") for r in rejected.values())
    assert len({r["rejected_id"] for r in rejected.values()}) == 7


def test_corrupt_gzip_is_quarantined_after_its_good_lines_and_the_run_goes_on(tmp_path):
    root = tmp_path / "spool"
    many = [event("track", n) for n in range(400)]
    write_segment(root, ts_of(0), many, truncate_to=4000)
    write_segment(root, ts_of(60), [event("track", 1000)])
    messages = run_tap({"source": str(root)})
    emitted = ids(messages, "tracks")
    assert "m-track-1000" in emitted  # the next file was read
    good = [i for i in emitted if i != "m-track-1000"]
    assert good == [f"m-track-{n}" for n in range(len(good))]  # a clean prefix, in order
    assert 0 < len(good) < 400
    (quarantine,) = records(messages, "rejected_events")
    assert quarantine["reason"].startswith("truncated_gzip")
    assert quarantine["line_number"] == len(good) + 1
    assert quarantine["raw_text"] == json.dumps(many[len(good)])[: len(quarantine["raw_text"])]
    # The quarantined file counts as read: the next run does not emit it again.
    assert records(run_tap({"source": str(root)}, state=last_state(messages))) == []


def test_rerun_with_final_state_emits_nothing_and_new_files_only_once(spool):
    first = run_tap({"source": str(spool)})
    state = last_state(first)
    assert records(run_tap({"source": str(spool)}, state=state)) == []
    write_segment(spool, ts_of(120), [event("track", 77)])
    second = run_tap({"source": str(spool)}, state=state)
    assert ids(second) == ["m-track-77"]


def test_resume_from_a_mid_file_cursor_emits_exactly_the_remaining_lines(tmp_path):
    root = tmp_path / "spool"
    write_segment(root, ts_of(0), [event("track", n) for n in range(100)])
    write_segment(root, ts_of(60), [event("track", n) for n in range(100, 150)])
    config = {"source": str(root), "state_every_records": 30}
    messages = run_tap(config)
    states = [m["value"] for m in messages if m["type"] == "STATE"]
    cursors = [s["bookmarks"]["tracks"]["spool"].get("cursor") for s in states]
    assert {"file": cursors[0]["file"], "line": 30} == cursors[0]
    mid = states[1]  # cursor at line 60 of the first file
    assert mid["bookmarks"]["tracks"]["spool"]["cursor"]["line"] == 60
    resumed = run_tap(config, state=mid)
    assert ids(resumed, "tracks") == [f"m-track-{n}" for n in range(60, 150)]


def test_late_file_inside_the_window_is_read_once(tmp_path):
    root = tmp_path / "spool"
    write_segment(root, ts_of(3600), [event("track", 1)])
    config = {"source": str(root), "late_file_window_minutes": 120}
    state = last_state(run_tap(config))
    # A segment opened 50 minutes before the newest file read shows up only now.
    write_segment(root, ts_of(600), [event("track", 2)])
    late_run = run_tap(config, state=state)
    assert ids(late_run) == ["m-track-2"]
    assert records(run_tap(config, state=last_state(late_run))) == []


def test_file_older_than_the_window_is_taken_as_read(tmp_path):
    root = tmp_path / "spool"
    write_segment(root, ts_of(4 * 3600), [event("track", 1)])
    config = {"source": str(root), "late_file_window_minutes": 60}
    state = last_state(run_tap(config))
    write_segment(root, ts_of(0), [event("track", 2)])
    assert records(run_tap(config, state=state)) == []


def test_state_stays_bounded_by_the_window_as_the_spool_grows(tmp_path):
    root = tmp_path / "spool"
    config = {"source": str(root), "late_file_window_minutes": 10}
    state = None
    for minute in range(0, 120, 2):
        write_segment(root, ts_of(minute * 60), [event("track", minute)])
        messages = run_tap(config, state=state)
        assert ids(messages) == [f"m-track-{minute}"]
        state = last_state(messages)
    done = state["bookmarks"]["tracks"]["spool"]["done"]
    assert len(done) == 6  # the files of the last 10 minutes, not the 60 files of the spool
    assert len(json.dumps(state)) < 4000


def test_start_date_skips_older_segments(tmp_path):
    root = tmp_path / "spool"
    write_segment(root, ts_of(0), [event("track", 1)])
    write_segment(root, ts_of(2 * 86400), [event("track", 2)])
    messages = run_tap({"source": str(root), "start_date": "2026-11-21T00:00:00Z"})
    assert ids(messages) == ["m-track-2"]


def test_source_ids_restricts_the_sources_read(tmp_path):
    root = tmp_path / "spool"
    write_segment(root, ts_of(0), [event("track", 1)], source_id="web")
    write_segment(root, ts_of(0), [event("track", 2)], source_id="ios")
    assert ids(run_tap({"source": str(root), "source_ids": ["ios"]})) == ["m-track-2"]


def test_prefixed_date_folders_and_a_renamed_logs_folder_are_read(tmp_path, caplog):
    # RudderStack's object-storage destination can prefix the date folders and rename the top
    root = tmp_path / "spool"
    plain = write_segment(root, ts_of(0), [event("track", 1)])
    prefixed = plain.parent.with_name("dt=" + plain.parent.name)
    plain.parent.rename(prefixed)
    stray = prefixed.with_name("latest")  # a folder that holds no date: skipped, with a warning
    stray.mkdir()
    (stray / plain.name).write_bytes(next(prefixed.iterdir()).read_bytes())
    with caplog.at_level("WARNING", logger="tap_rudderstack.spool"):
        assert ids(run_tap({"source": str(root)})) == ["m-track-1"]
    assert any("latest: not a date folder" in r.getMessage() for r in caplog.records)
    (root / "rudder-logs").rename(root / "events")
    assert ids(run_tap({"source": str(root), "logs_folder": "events"})) == ["m-track-1"]
    with pytest.raises(Exception, match="no rudder-logs/ folder"):
        run_tap({"source": str(root)})


def test_duplicate_events_are_emitted_as_they_are_for_the_loader_to_upsert(tmp_path):
    root = tmp_path / "spool"
    write_segment(root, ts_of(0), [event("track", 1), event("track", 1)])
    write_segment(root, ts_of(60), [event("track", 1)])
    assert ids(run_tap({"source": str(root)})) == ["m-track-1"] * 3


def test_unparseable_timestamps_load_as_null_and_other_shapes_are_kept(tmp_path):
    root = tmp_path / "spool"
    odd = event("track", 1, sentAt="not a date", properties=["a"], userId=42, context="x")
    write_segment(root, ts_of(0), [odd])
    (record,) = records(run_tap({"source": str(root)}))
    assert record["sent_at"] is None
    assert record["original_timestamp"] is not None
    assert record["properties"] == {"_value": ["a"]}
    assert record["context"] == {"_value": "x"}
    assert record["user_id"] == "42"


def catalog_of(config: dict) -> dict:
    return TapRudderStack(config=config, parse_env_config=False).catalog_dict


def test_catalog_selection_drops_streams_and_properties(spool):
    config = {"source": str(spool)}
    catalog = catalog_of(config)
    for entry in catalog["streams"]:
        selected = entry["tap_stream_id"] == "tracks"
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = selected
            elif md["breadcrumb"] == ["properties", "context"]:
                md["metadata"]["selected"] = False
    messages = run_tap(config, catalog=catalog)
    assert {m["stream"] for m in messages if m["type"] in ("RECORD", "SCHEMA")} == {"tracks"}
    assert len(records(messages)) == 3
    assert all("context" not in r and "properties" in r for r in records(messages))


def test_newly_selected_stream_reads_the_whole_history_while_others_continue(spool):
    config = {"source": str(spool)}
    catalog = catalog_of(config)
    for entry in catalog["streams"]:
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = entry["tap_stream_id"] == "tracks"
    state = last_state(run_tap(config, catalog=catalog))
    write_segment(spool, ts_of(120), [event("track", 50), event("identify", 50)])
    messages = run_tap(config, state=state)  # default catalog: everything selected
    assert ids(messages, "tracks") == ["m-track-50"]
    assert sorted(ids(messages, "identifies")) == [f"m-identify-{n}" for n in (0, 1, 2, 50)]
    final = last_state(messages)["bookmarks"]
    assert final["tracks"]["spool"] == final["identifies"]["spool"]


def test_stream_maps_rename_and_filter_columns(spool):
    config = {
        "source": str(spool),
        "stream_maps": {
            "tracks": {"__alias__": "track_events", "context": "__NULL__", "ip": "context_ip"},
            "pages": None,
        },
    }
    messages = run_tap(config)
    assert ids(messages, "pages") == []
    mapped = records(messages, "track_events")
    assert len(mapped) == 3
    assert all("context" not in r and r["ip"] == "203.0.113.9" for r in mapped)


def test_batch_mode_writes_batch_files_holding_every_record(spool, tmp_path):
    batches = tmp_path / "batches"
    batches.mkdir()
    config = {
        "source": str(spool),
        "batch_config": {
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {"root": f"file://{batches}", "prefix": "b-"},
            "batch_size": 4,
        },
    }
    messages = run_tap(config)
    assert records(messages) == []
    got: dict[str, list[str]] = {}
    for message in messages:
        if message["type"] == "BATCH":
            for url in message["manifest"]:
                with gzip.open(url.removeprefix("file://"), "rt") as handle:
                    for line in handle:
                        row = json.loads(line)
                        key = row.get("message_id") or row["rejected_id"]
                        got.setdefault(message["stream"], []).append(key)
    assert sorted(got["tracks"]) == [f"m-track-{n}" for n in range(3)]
    assert len(got["rejected_events"]) == 7
    assert sum(len(v) for v in got.values()) == 3 * len(KINDS) + 7
    # The final STATE follows the last BATCH message.
    kinds = [m["type"] for m in messages]
    last_batch = max(i for i, kind in enumerate(kinds) if kind == "BATCH")
    assert "STATE" in kinds[last_batch + 1 :]


def test_batch_mode_checkpoints_once_per_batch_not_every_state_every_records(tmp_path):
    """Each STATE closes a batch file per stream: were it every state_every_records, files of
    60 tracks would come out as files of 7 (and the loader would pay a commit for each)."""
    root = tmp_path / "spool"
    write_segment(root, ts_of(0), [event("track", n) for n in range(150)])
    config = {
        "source": str(root),
        "state_every_records": 7,
        "batch_config": _batches_at(tmp_path / "batches", 60),
    }
    messages = run_tap(config)
    sizes = [len(_batch_rows([m], open)["tracks"]) for m in messages if m["type"] == "BATCH"]
    assert sizes == [60, 60, 30]
    # a STATE after each batch, its cursor at the batch's last line, and one at the end
    cursors = [
        m["value"]["bookmarks"]["tracks"]["spool"].get("cursor", {}).get("line")
        for m in messages
        if m["type"] == "STATE"
    ]
    assert cursors[-3:] == [60, 120, None]


def _batches_at(folder: Path, batch_size: int, compression: str = "none") -> dict:
    """A batch_config writing JSON-lines files into `folder`."""
    return {
        "encoding": {"format": "jsonl", "compression": compression},
        "storage": {"root": f"file://{folder}"},
        "batch_size": batch_size,
    }


def _batch_rows(messages: list[dict], opener) -> dict[str, list[dict]]:
    got: dict[str, list[dict]] = {}
    for message in messages:
        if message["type"] == "BATCH":
            for url in message["manifest"]:
                with opener(url.removeprefix("file://"), "rt") as handle:
                    got.setdefault(message["stream"], []).extend(json.loads(x) for x in handle)
    return got


@pytest.mark.parametrize(("compression", "opener"), [("none", open), ("gzip", gzip.open)])
def test_batch_mode_files_equal_record_mode_when_written_in_many_chunks(
    spool, tmp_path, monkeypatch, compression, opener
):
    """Files are written a chunk at a time as records come: 3 records a chunk here, so each
    file of up to 5 records takes two writes into the open file (and its gzip layer)."""
    monkeypatch.setattr("tap_rudderstack.sync._Batches.CHUNK", 3)
    batches = tmp_path / "batches" / "not-yet-there"
    config = {
        "source": str(spool),
        "batch_config": {
            "encoding": {"format": "jsonl", "compression": compression},
            "storage": {"root": f"file://{batches}"},
            "batch_size": 5,
        },
    }
    messages = run_tap(config)
    suffix = ".jsonl" if compression == "none" else ".json.gz"
    assert all(
        url.endswith(suffix) for m in messages if m["type"] == "BATCH" for url in m["manifest"]
    )
    got = _batch_rows(messages, opener)
    assert (
        max(len(_batch_rows([m], opener)[m["stream"]]) for m in messages if m["type"] == "BATCH")
        == 5
    )
    in_records = run_tap({"source": str(spool)})
    for stream in ("tracks", "pages", "identifies"):
        assert sorted(got[stream], key=lambda r: r["message_id"]) == sorted(
            records(in_records, stream), key=lambda r: r["message_id"]
        )


def test_batch_mode_applies_stream_maps(spool, tmp_path):
    batches = tmp_path / "batches"
    batches.mkdir()
    config = {
        "source": str(spool),
        "stream_maps": {"tracks": {"__alias__": "track_events", "context": "__NULL__"}},
        "batch_config": _batches_at(batches, 100, "gzip"),
    }
    got = _batch_rows(run_tap(config), gzip.open)
    assert "tracks" not in got
    assert len(got["track_events"]) == 3
    assert all("context" not in row for row in got["track_events"])


def test_batch_mode_with_a_stream_map_that_copies_a_stream_closes_each_batch_once(tmp_path):
    """A copied stream makes two records of each event. The batch counts records, as its files
    do: it closes once it holds batch_size of them, one file per stream and then one STATE.
    Counting events for the STATE as well would close each batch twice between two STATEs,
    in files of half the size."""
    root = tmp_path / "spool"
    write_segment(root, ts_of(0), [event("track", n) for n in range(24)])
    config = {
        "source": str(root),
        "stream_maps": {"tracks_copy": {"__source__": "tracks"}},
        "batch_config": _batches_at(tmp_path / "batches", 8),
    }
    messages = run_tap(config)
    kinds = [(m["type"], m.get("stream")) for m in messages if m["type"] in ("BATCH", "STATE")]
    one_batch = [("BATCH", "tracks"), ("BATCH", "tracks_copy"), ("STATE", None)]
    assert kinds[: 3 * 6] == one_batch * 6  # 24 events, 4 a batch
    sizes = [len(_batch_rows([m], open)[m["stream"]]) for m in messages if m["type"] == "BATCH"]
    assert sizes == [4] * 12


def test_every_state_in_batch_mode_follows_the_batch_messages_of_the_records_it_covers(
    tmp_path,
):
    root = tmp_path / "spool"
    write_segment(root, ts_of(0), [event("track", n) for n in range(23)])
    config = {
        "source": str(root),
        "batch_config": _batches_at(tmp_path / "batches", 5),
    }
    messages = run_tap(config)
    loaded = 0
    for message in messages:
        if message["type"] == "BATCH":
            loaded += len(_batch_rows([message], open)["tracks"])
        elif message["type"] == "STATE":
            cursor = message["value"]["bookmarks"]["tracks"]["spool"].get("cursor")
            covered = cursor["line"] if cursor else 23  # no cursor: the file is done
            assert loaded >= covered, message
    assert loaded == 23


def test_a_sync_that_fails_mid_batch_leaves_no_batch_file_and_the_collector_on(
    spool, tmp_path, monkeypatch
):
    """Nothing would ever load or delete a file no BATCH message names: a failed sync discards
    its open batch files (written, like the SDK's, to a temporary file that is moved into
    place when complete). Python's cyclic garbage collector, paused for the sync, is on again
    after it, whether it ended well or not."""
    import gc

    from tap_rudderstack.records import EventBuilder

    unfinished = tmp_path / "tmp"  # where fsspec writes a local file until it is committed
    unfinished.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(unfinished))
    monkeypatch.setattr("tap_rudderstack.sync._Batches.CHUNK", 3)  # files open after 3 records
    batches = tmp_path / "batches"
    config = {
        "source": str(spool),
        "batch_config": _batches_at(batches, 1000, "gzip"),
    }
    assert gc.isenabled()
    run_tap(config)
    assert gc.isenabled()
    made = sorted(batches.iterdir())
    assert made  # the good run's files, named by its BATCH messages
    build = EventBuilder.build
    calls = {"n": 0}

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] == 10:
            raise RuntimeError("the builder broke")
        return build(self, *args)

    monkeypatch.setattr(EventBuilder, "build", failing)
    with pytest.raises(RuntimeError, match="the builder broke"):
        run_tap(config)
    assert sorted(batches.iterdir()) == made
    assert list(unfinished.iterdir()) == []
    assert gc.isenabled()


def test_batch_mode_refuses_parquet(spool, tmp_path):
    config = {
        "source": str(spool),
        "batch_config": {
            "encoding": {"format": "parquet", "compression": "none"},
            "storage": {"root": f"file://{tmp_path}"},
        },
    }
    with pytest.raises(ValueError, match="parquet"):
        run_tap(config)


def test_missing_source_is_a_clear_config_error():
    from singer_sdk.exceptions import ConfigValidationError

    with pytest.raises(ConfigValidationError) as info:
        TapRudderStack(config={}, parse_env_config=False)
    assert any("source" in error for error in info.value.errors)


def test_about_lists_every_setting_with_a_description():
    schema = TapRudderStack.config_jsonschema["properties"]
    own = [
        "source",
        "source_ids",
        "start_date",
        "late_file_window_minutes",
        "state_every_records",
        "max_raw_text_chars",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "endpoint_url",
        "region",
    ]
    for name in own:
        assert schema[name].get("description"), name
    assert schema["aws_secret_access_key"].get("secret") is True


# --- singer-sdk standard tap tests, on a spool written at collection time ----------------------

_STANDARD_ROOT = Path(tempfile.mkdtemp(prefix="tap-rudderstack-std-"))
atexit.register(shutil.rmtree, _STANDARD_ROOT, True)
for _offset, _kinds in ((0, KINDS[:3]), (60, KINDS[3:])):
    write_segment(
        _STANDARD_ROOT,
        ts_of(_offset),
        [event(kind, n) for n in range(4) for kind in _kinds] + ["{broken"],
    )

TestTapRudderStackStandard = get_tap_test_class(
    TapRudderStack, config={"source": str(_STANDARD_ROOT)}
)


def test_a_segment_named_in_the_future_does_not_push_real_files_out_of_the_window(tmp_path):
    import time

    root = tmp_path / "spool"
    now = int(time.time())
    write_segment(root, now + 30 * 86400, [event("track", 1)])  # a writer with a broken clock
    config = {"source": str(root), "late_file_window_minutes": 60}
    state = last_state(run_tap(config))
    assert state["bookmarks"]["tracks"]["spool"]["high_ts"] <= now + 3600
    write_segment(root, now - 600, [event("track", 2)])
    assert ids(run_tap(config, state=state)) == ["m-track-2"]


def test_utc_text_timestamps_pass_through_and_others_are_normalised():
    from tap_rudderstack.records import EventBuilder
    from tap_rudderstack.spool import parse_event

    builder = EventBuilder()

    def build(event: dict, line: int) -> dict:
        stream, parsed = parse_event(json.dumps(event).encode())
        return builder.build(stream, parsed, "key", line)

    event = {
        "type": "track",
        "messageId": "m1",
        "userId": "u1",
        "originalTimestamp": "2026-11-28T10:00:00.123Z",  # canonical UTC: kept as the same text
        "sentAt": "2026-11-28T11:00:00+01:00",  # an offset: parsed, moved to UTC
        "receivedAt": "2026-02-30T10:00:00.000Z",  # the right shape, not a real day: null
        "timestamp": "2026-11-28 10:00:00",  # no zone: taken as UTC
    }
    record = build(event, 1)
    assert record["original_timestamp"] == "2026-11-28T10:00:00.123Z"
    assert record["sent_at"] == dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
    assert record["received_at"] is None
    assert record["timestamp"] == dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
    assert builder.bad_timestamps == 1
    # Python parses these but DuckDB's TIMESTAMPTZ does not: normalised, never passed as text
    for odd in (
        "2026-11-28T10:00:00,123Z",
        "2026-11-28T10:00:00 Z",
        "2026-11-28T10:00:00.1234567Z",
    ):
        value = build({**event, "originalTimestamp": odd}, 2)["original_timestamp"]
        assert isinstance(value, dt.datetime), odd
    assert build({**event, "originalTimestamp": "2026-11-28T10:00:00Z"}, 3)[
        "original_timestamp"
    ] == ("2026-11-28T10:00:00Z")


def test_a_merge_loads_as_rudder_server_takes_it_and_a_broken_one_is_rejected(tmp_path):
    """mergeProperties as rudder-server's warehouse transformer judges them (idresolution.go)."""
    root = tmp_path / "spool"
    two = [{"type": "email", "value": "ann@example.com"}, {"type": "user_id", "value": "u-ann"}]
    lines = [
        event("merge", 1, mergeProperties=two),
        event("merge", 2, mergeProperties=None),  # missing
        event("merge", 3, mergeProperties=two[:1]),  # one identifier is not two
        event("merge", 4, mergeProperties="email"),  # not a list
        event("merge", 5, mergeProperties=[two[0], "u-ann"]),  # not an object
        event("merge", 6, mergeProperties=[two[0], {"type": "user_id", "value": " "}]),  # empty
        event("track", 7),  # the rest of the file flows on
    ]
    write_segment(root, ts_of(0), lines)
    messages = run_tap({"source": str(root)})
    (merge,) = records(messages, "merges")
    assert (merge["merge_property_1_type"], merge["merge_property_1_value"]) == (
        "email",
        "ann@example.com",
    )
    assert (merge["merge_property_2_type"], merge["merge_property_2_value"]) == ("user_id", "u-ann")
    assert ids(messages, "tracks") == ["m-track-7"]
    reasons = {r["line_number"]: r["reason"] for r in records(messages, "rejected_events")}
    assert reasons == {
        2: "merge_properties_missing",
        3: "merge_properties_missing",
        4: "merge_property_invalid",
        5: "merge_property_invalid",
        6: "merge_property_invalid",
    }


def test_a_line_nested_past_the_stack_is_rejected_not_a_crash():
    """msgspec raises RecursionError, not DecodeError, past about 1,000 levels: one such line
    in a spool file must be a rejection like any broken line, and the journal recovery must
    not take it for a whole event."""
    from signalmail.collector.spool import is_complete_event_line
    from tap_rudderstack.spool import parse_event

    deep = b'{"type":"track","messageId":"m1","anonymousId":"a","properties":'
    deep += b"[" * 5000 + b"]" * 5000 + b"}\n"
    assert parse_event(deep) == "invalid_json"
    assert is_complete_event_line(deep) is False
    shallow = b'{"type":"track","messageId":"m2","anonymousId":"a","event":"Product Viewed"}\n'
    assert parse_event(shallow)[0] == "tracks"


@pytest.mark.parametrize("batched", [False, True], ids=["records", "batch"])
def test_max_records_per_sync_stops_at_a_bookmark_and_the_next_sync_goes_on(tmp_path, batched):
    """A process that loads and acts between syncs (the watch catching up) takes the spool in
    steps: each sync stops at the first bookmark past the limit, the next resumes there, and
    together they emit every event once."""
    root = tmp_path / "spool"
    write_segment(root, ts_of(0), [event("track", n) for n in range(25)])
    write_segment(root, ts_of(60), [event("track", n) for n in range(25, 40)])
    config: dict = {"source": str(root), "state_every_records": 10, "max_records_per_sync": 15}
    if batched:
        config["batch_config"] = _batches_at(tmp_path / "batches", 10)
    seen: list[str] = []
    state = None
    steps = []
    for _ in range(5):
        messages = run_tap(config, state=state)
        got = (
            [r["message_id"] for r in _batch_rows(messages, open).get("tracks", [])]
            if batched
            else ids(messages, "tracks")
        )
        steps.append(len(got))
        seen += got
        state = last_state(messages)
    assert steps == [20, 20, 0, 0, 0]  # stopped at the bookmark after 20, 20 (each >= 15)
    assert seen == [f"m-track-{n}" for n in range(40)]


def test_a_sync_says_whether_it_stopped_at_its_limit(tmp_path):
    """The watch holds its tick while a capture stopped at the limit: the spool may hold more."""
    import contextlib
    import io

    root = tmp_path / "spool"
    write_segment(root, ts_of(0), [event("track", n) for n in range(25)])
    config = {"source": str(root), "state_every_records": 10, "max_records_per_sync": 15}

    def sync(state: dict | None) -> tuple[TapRudderStack, dict]:
        tap = TapRudderStack(config=config, state=state, parse_env_config=False)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            tap.sync_all()
        lines = [json.loads(line) for line in out.getvalue().splitlines() if line]
        return tap, last_state(lines)

    tap, state = sync(None)
    assert tap.last_sync_limited
    tap, _ = sync(state)
    assert not tap.last_sync_limited  # the last five: a short capture
