"""spool.py: the layout (both date formats, what is ignored), gzip reading and line validation."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import fsspec
import pytest
from tap_rudderstack.spool import (
    CorruptFile,
    SpoolError,
    SpoolLister,
    iter_lines,
    open_filesystem,
    parse_date_folder,
    parse_event,
    parse_timestamp,
    rejected_id,
)

from tests.helpers.spool import event, segment_path, ts_of, write_segment

LOCAL = fsspec.filesystem("file")


def lines_of(path) -> list[tuple[int, bytes]]:
    return list(iter_lines(LOCAL, str(path)))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2026-11-20", dt.date(2026, 11, 20)),
        ("11-20-2026", dt.date(2026, 11, 20)),
        ("2026-13-01", None),
        ("02-30-2026", None),
        ("20261120", None),
        (".2026-11-20", None),
        ("dt=2026-11-20", dt.date(2026, 11, 20)),  # a destination's custom prefix
        ("day_2026-11-20", dt.date(2026, 11, 20)),
    ],
)
def test_date_folders_accept_both_rudderstack_formats(name, expected):
    assert parse_date_folder(name) == expected


def test_lines_are_numbered_from_one_and_crlf_and_last_line_without_newline_kept(tmp_path):
    path = tmp_path / "a.json.gz"
    path.write_bytes(gzip.compress(b'{"a":1}\r\n\n{"b":2}\n{"c":3}'))
    assert lines_of(path) == [(1, b'{"a":1}'), (2, b""), (3, b'{"b":2}'), (4, b'{"c":3}')]


def test_concatenated_gzip_members_are_all_read(tmp_path):
    path = tmp_path / "m.json.gz"
    path.write_bytes(gzip.compress(b"1\n2\n") + gzip.compress(b"3\n"))
    assert [n for n, _ in lines_of(path)] == [1, 2, 3]
    assert [line for _, line in lines_of(path)] == [b"1", b"2", b"3"]


def test_lines_spanning_read_chunks_are_reassembled(tmp_path, monkeypatch):
    import tap_rudderstack.spool as spool

    monkeypatch.setattr(spool, "_READ_CHUNK", 7)
    payload = [json.dumps({"i": i, "pad": "x" * (i * 13 % 50)}).encode() for i in range(200)]
    path = tmp_path / "c.json.gz"
    path.write_bytes(gzip.compress(b"\n".join(payload) + b"\n"))
    assert [line for _, line in lines_of(path)] == payload


def test_truncated_gzip_yields_good_lines_then_raises_with_the_cut_line(tmp_path):
    body = b"".join(json.dumps({"n": i, "pad": "y" * 40}).encode() + b"\n" for i in range(500))
    data = gzip.compress(body, compresslevel=1)
    path = tmp_path / "t.json.gz"
    path.write_bytes(data[: len(data) // 2])
    got: list[tuple[int, bytes]] = []
    reader = iter_lines(LOCAL, str(path))
    with pytest.raises(CorruptFile) as info:
        got.extend(reader)  # extend keeps what was yielded before the raise
    assert 0 < len(got) < 500
    assert all(json.loads(line)["n"] == n - 1 for n, line in got)  # every yielded line is whole
    assert info.value.reason.startswith("truncated_gzip")
    assert info.value.line_number == len(got) + 1
    assert body.split(b"\n")[len(got)].startswith(info.value.tail)


def test_corrupt_gzip_bytes_raise_corrupt_file(tmp_path):
    data = bytearray(gzip.compress(b'{"a":1}\n' * 2000, compresslevel=1))
    data[len(data) // 2 : len(data) // 2 + 40] = b"\xff" * 40
    path = tmp_path / "x.json.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFile) as info:
        list(iter_lines(LOCAL, str(path)))
    assert info.value.reason.split(":")[0] in {"corrupt_gzip", "truncated_gzip"}


def test_a_file_that_is_not_gzip_at_all_is_corrupt_at_line_one(tmp_path):
    path = tmp_path / "plain.json.gz"
    path.write_bytes(b'{"type":"track"}\n')
    with pytest.raises(CorruptFile) as info:
        list(iter_lines(LOCAL, str(path)))
    assert info.value.line_number == 1
    assert info.value.reason.startswith("corrupt_gzip")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        # not UTF-8 inside a string, a value's and a key's: msgspec raises UnicodeDecodeError
        (
            b'{"type":"track","messageId":"m","userId":"u","properties":{"x":"\xff"}}',
            "invalid_json",
        ),
        (b'{"type":"track","messageId":"m","userId":"u","\xc3\x28":1}', "invalid_json"),
        (b"[1,2]", "not_an_object"),
        (b'"track"', "not_an_object"),
        (b'{"messageId":"m","userId":"u"}', "missing_type"),
        (b'{"type":7,"messageId":"m","userId":"u"}', "missing_type"),
        (b'{"type":"purchase","messageId":"m","userId":"u"}', "unknown_type"),
        (b'{"type":"track","userId":"u"}', "missing_message_id"),
        (b'{"type":"track","messageId":"m"}', "missing_ids"),
        (b'{"type":"track","messageId":"m","userId":"","anonymousId":null}', "missing_ids"),
    ],
)
def test_unusable_lines_get_a_specific_reason(line, reason):
    assert parse_event(line) == reason


@pytest.mark.parametrize(
    ("kind", "stream"),
    [
        ("track", "tracks"),
        ("identify", "identifies"),
        ("page", "pages"),
        ("screen", "screens"),
        ("group", "groups"),
        ("alias", "aliases"),
        ("TRACK", "tracks"),
    ],
)
def test_each_event_type_routes_to_its_stream(kind, stream):
    parsed = parse_event(json.dumps(event(kind.lower(), 1, type=kind)).encode())
    assert parsed[0] == stream


def test_anonymous_only_and_user_only_events_are_both_valid():
    assert parse_event(b'{"type":"track","messageId":"m","anonymousId":"a"}')[0] == "tracks"
    assert parse_event(b'{"type":"track","messageId":"m","userId":42}')[0] == "tracks"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20T10:00:00.123Z", dt.datetime(2026, 11, 20, 10, 0, 0, 123000, tzinfo=dt.UTC)),
        ("2026-11-20T12:00:00+02:00", dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)),
        ("2026-11-20 10:00:00", dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)),
        ("yesterday", None),
        ("", None),
        (1732000000, None),
        (None, None),
    ],
)
def test_timestamps_normalise_to_aware_utc_or_none(value, expected):
    assert parse_timestamp(value) == expected


def test_rejected_id_is_deterministic_per_file_and_line():
    assert rejected_id("k", 3) == rejected_id("k", 3)
    assert rejected_id("k", 3) != rejected_id("k", 4)
    assert rejected_id("k", 3) != rejected_id("j", 3)


def test_lister_orders_files_and_ignores_everything_outside_the_layout(tmp_path):
    late_day = write_segment(tmp_path, ts_of(86400 + 5), [event()], us_date=True)
    early = write_segment(tmp_path, ts_of(10), [event()])
    earlier = write_segment(tmp_path, ts_of(5), [event()], source_id="src2")
    # Things a reader must skip: in-flight and hidden files, dot-folders, foreign names,
    # a file whose name carries another source id than its folder.
    folder = early.parent
    (folder / (early.name + ".partial")).write_bytes(b"x")
    (folder / ("." + early.name)).write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    (folder / f"{ts_of(1)}.other.abc.json.gz").write_bytes(b"x")
    hidden = tmp_path / "rudder-logs" / ".tmp" / "2026-11-20"
    hidden.mkdir(parents=True)
    (hidden / f"{ts_of(1)}..tmp.abc.json.gz").write_bytes(b"x")
    (tmp_path / "rudder-logs" / "src1" / "not-a-date").mkdir()

    fs, root = open_filesystem(str(tmp_path))
    files = list(SpoolLister(fs, root).iter_files())
    assert [f.name for f in files] == [earlier.name, early.name, late_day.name]
    assert files[2].folder_date == dt.date(2026, 11, 21)
    assert files[2].key == f"rudder-logs/src1/11-21-2026/{late_day.name}"
    assert files[0].source_id == "src2"

    only_src1 = SpoolLister(fs, root, ["src1"]).iter_files()
    assert [f.name for f in only_src1] == [early.name, late_day.name]
    from_day_two = SpoolLister(fs, root).iter_files(min_date=dt.date(2026, 11, 21))
    assert [f.name for f in from_day_two] == [late_day.name]


def test_missing_rudder_logs_folder_is_a_clear_error(tmp_path):
    fs, root = open_filesystem(str(tmp_path / "nowhere"))
    with pytest.raises(SpoolError, match="no rudder-logs/ folder"):
        list(SpoolLister(fs, root).iter_files())


def test_empty_source_is_a_clear_error():
    with pytest.raises(SpoolError, match="`source` setting is empty"):
        open_filesystem("  ")


def test_segment_helper_writes_the_contract_layout(tmp_path):
    path = segment_path(tmp_path, ts_of(0))
    assert path.relative_to(tmp_path).parts[:3] == ("rudder-logs", "src1", "2026-11-20")
