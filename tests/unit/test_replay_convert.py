"""Replay of REES46 and Retailrocket CSVs: mappings, order grouping, bad rows, formats, memory."""

from __future__ import annotations

import csv
import gzip
import inspect
import io
import tracemalloc

import pytest
from signalmail.replay import cli as replay_cli
from signalmail.replay.cli import ReplayResult, iter_events, replay_file
from signalmail.replay.source import Input, Rejects, ReplayError

REES46_HEADER = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
)
RR_HEADER = "timestamp,visitorid,event,itemid,transactionid"
SESSION = "9333dfbd-b87a-4708-9857-6336556b0fcc"


class ListSink:
    """Collects events in memory (tests only); counts close() calls."""

    def __init__(self):
        self.events = []
        self.sent = 0
        self.closed = 0

    def send(self, event):
        self.events.append(event)
        self.sent += 1

    def close(self):
        self.closed += 1


def write(tmp_path, name, lines, compress=False):
    path = tmp_path / name
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def rees(
    t,
    kind,
    product="3900821",
    price="33.20",
    user="554748717",
    session=SESSION,
    code="appliances.environment.water_heater",
    brand="aqua",
):
    category = f"2053013552326770905,{code}"
    return f"2019-10-01 {t} UTC,{kind},{product},{category},{brand},{price},{user},{session}"


def by_name(events, name):
    return [e for e in events if e["event"] == name]


def test_rees46_mapping_and_order_grouping(tmp_path):
    path = write(
        tmp_path,
        "oct.csv",
        [
            REES46_HEADER,
            rees("00:00:00", "view"),
            rees("00:00:01", "cart"),
            rees("00:00:02", "remove_from_cart"),
            rees(
                "00:00:03",
                "cart",
                product="1004237",
                price="1081.98",
                code="electronics.smartphone",
                brand="apple",
            ),
            rees("00:00:05", "purchase"),
            rees("00:00:05", "purchase"),
            rees(
                "00:00:06",
                "purchase",
                product="1004237",
                price="1081.98",
                code="electronics.smartphone",
                brand="apple",
            ),
            rees("00:00:07", "view", user="1", session="other-session"),
            rees("00:30:00", "view", user="1", session="other-session"),  # closes the order window
            rees("00:30:01", "purchase", user="1", session="other-session"),  # open at end of file
        ],
    )
    sink = ListSink()
    result = replay_file(path, sink)
    assert result.format == "rees46"
    assert result.rows == 10
    assert result.rejects.count == 0
    assert sink.closed == 1
    events = sink.events
    viewed = by_name(events, "Product Viewed")[0]
    assert viewed["type"] == "track"
    assert viewed["userId"] == "rees46-554748717"
    assert viewed["anonymousId"]
    assert viewed["context"]["sessionId"] == SESSION
    assert viewed["originalTimestamp"] == "2019-10-01T00:00:00.000Z"
    props = viewed["properties"]
    assert props["product_id"] == "3900821"
    assert props["price"] == pytest.approx(33.2)
    assert props["brand"] == "aqua"
    assert props["category"] == "appliances.environment.water_heater"
    assert props["name"] == "Aqua water heater"
    assert props["url"].endswith("/3900821")
    assert props["image_url"].endswith("3900821.jpg")
    assert props["currency"] == "USD"
    added = by_name(events, "Product Added")
    assert [a["properties"]["cart_id"] for a in added] == [SESSION, SESSION]
    assert by_name(events, "Product Removed")[0]["properties"]["quantity"] == 1
    orders = by_name(events, "Order Completed")
    assert len(orders) == 2
    first = orders[0]["properties"]
    assert first["cart_id"] == SESSION
    assert first["order_id"].startswith(f"rees46-{SESSION}-")
    lines = {line["product_id"]: line["quantity"] for line in first["products"]}
    assert lines == {"3900821": 2, "1004237": 1}
    assert first["total"] == pytest.approx(2 * 33.20 + 1081.98)
    assert orders[0]["originalTimestamp"] == "2019-10-01T00:00:06.000Z"
    # the first order is emitted once the window passed, before the later view
    names = [e["event"] for e in events]
    assert names.index("Order Completed") < len(names) - 2
    assert orders[1]["properties"]["cart_id"] == "other-session"
    assert len({e["messageId"] for e in events}) == len(events)


def test_message_ids_are_stable_across_replays(tmp_path):
    lines = [REES46_HEADER, rees("00:00:00", "view"), rees("00:00:05", "purchase")]
    first, second = ListSink(), ListSink()
    replay_file(write(tmp_path, "a.csv", lines), first)
    replay_file(write(tmp_path, "b.csv", lines), second)
    assert [e["messageId"] for e in first.events] == [e["messageId"] for e in second.events]


def test_bad_rows_are_reported_with_line_numbers_not_fatal(tmp_path):
    path = write(
        tmp_path,
        "bad.csv",
        [
            REES46_HEADER,
            rees("00:00:00", "view"),  # 2 ok
            "bad time,view,1,2,,,1.0,2,s",  # 3
            rees("00:00:01", "view", price="abc"),  # 4
            rees("00:00:01", "view", price="-3"),  # 5
            rees("00:00:01", "teleport"),  # 6
            "2019-10-01 00:00:01 UTC,view,1,2",  # 7 too few columns
            rees("00:00:01", "cart", session=""),  # 8 cart without session
            rees("00:00:01", "view", user="u-1"),  # 9
            'a,"b"c,d',  # 10 broken quoting
            "",  # blank line: not a row
            rees("00:00:02", "view"),  # 12 ok after all that
        ],
    )
    rejects_file = tmp_path / "rejects.csv"
    sink = ListSink()
    result = replay_file(path, sink, rejects=Rejects(path=rejects_file))
    assert result.events == 2
    assert len(sink.events) == 2
    assert result.rows == 10
    assert result.rejects.count == 8
    with rejects_file.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["line"]) for r in rows] == [3, 4, 5, 6, 7, 8, 9, 10]
    reasons = [r["reason"] for r in rows]
    assert reasons[0].startswith("bad event_time")
    assert reasons[1].startswith("bad price")
    assert reasons[2].startswith("bad price")
    assert reasons[3].startswith("unknown event_type")
    assert reasons[4] == "expected 9 columns, got 4"
    assert "missing user_session" in reasons[5]
    assert reasons[6].startswith("bad user_id")
    assert reasons[7].startswith("unparseable CSV")
    assert rows[1]["raw"].endswith(SESSION)
    assert result.as_dict()["rejected_by_reason"]["bad price"] == 2


def test_invalid_utf8_is_rejected_not_crashing(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(
        (REES46_HEADER + "\n").encode()
        + rees("00:00:00", "view", brand="caf\xe9").encode("latin-1")
        + b"\n"
    )
    sink = ListSink()
    result = replay_file(path, sink)
    assert result.rejects.examples[0].reason == "invalid UTF-8 in row"
    assert result.rejects.examples[0].line == 2


def test_gzip_input_bom_and_limit(tmp_path):
    lines = [REES46_HEADER] + [
        rees(f"00:00:{i:02d}", "view", product=str(100 + i)) for i in range(20)
    ]
    lines[0] = "\ufeff" + lines[0].upper()  # BOM and upper-case header still sniff as rees46
    path = write(tmp_path, "oct.csv.gz", lines, compress=True)
    sink = ListSink()
    result = replay_file(path, sink, limit=7)
    assert result.rows == 7
    assert [e["properties"]["product_id"] for e in sink.events] == [str(100 + i) for i in range(7)]
    # gzip detection is by content, not by name
    renamed = path.rename(tmp_path / "oct.data")
    assert replay_file(renamed, ListSink(), limit=3).events == 3


def test_retailrocket_mapping(tmp_path):
    path = write(
        tmp_path,
        "events.csv",
        [
            RR_HEADER,
            "1433221332117,257597,view,355908,",
            "1433221332200,257597,addtocart,355908,",
            "1433221340000,257597,transaction,355908,4000",
            "1433221340500,257597,transaction,248676,4000",
            "1433221340500,257597,transaction,248676,4000",
            "1433224214164,992329,view,248676,",
            "1433224214164,992329,view,248676,9",  # 8 transactionid on a view
            "1433224214,992329,view,248676,",  # 9 seconds, not ms
            "1433224214164,992329,transaction,248676,",  # 10 transaction without id
            "1433224214164,abc,view,248676,",  # 11
            "1433224214164,992329,purchase,248676,",  # 12
        ],
    )
    sink = ListSink()
    result = replay_file(path, sink, wanted_format="auto")
    assert result.format == "retailrocket"
    assert [r.line for r in result.rejects.examples] == [8, 9, 10, 11, 12]
    events = sink.events
    viewed = by_name(events, "Product Viewed")[0]
    assert "userId" not in viewed
    assert viewed["anonymousId"]
    assert viewed["originalTimestamp"] == "2015-06-02T05:02:12.117Z"
    assert viewed["properties"]["product_id"] == "355908"
    added = by_name(events, "Product Added")[0]
    assert added["properties"]["cart_id"] == "rr-257597"
    assert added["anonymousId"] == viewed["anonymousId"]
    (order,) = by_name(events, "Order Completed")
    props = order["properties"]
    assert props["order_id"] == "rr-4000"
    assert props["cart_id"] == "rr-257597"
    assert {p["product_id"]: p["quantity"] for p in props["products"]} == {"355908": 1, "248676": 2}
    assert "_cart_id" not in order


def test_format_sniffing_and_header_errors(tmp_path):
    unknown = write(tmp_path, "x.csv", ["a,b,c", "1,2,3"])
    with pytest.raises(ReplayError, match="cannot tell the format"):
        replay_file(unknown, ListSink())
    rr = write(tmp_path, "rr.csv", [RR_HEADER, "1433221332117,1,view,2,"])
    with pytest.raises(ReplayError, match="header is retailrocket"):
        replay_file(rr, ListSink(), wanted_format="rees46")
    empty = write(tmp_path, "empty.csv", [])
    empty.write_bytes(b"")
    with pytest.raises(ReplayError, match="empty"):
        replay_file(empty, ListSink())
    with pytest.raises(ReplayError, match="cannot open"):
        Input(tmp_path / "missing.csv")
    # a file without a header is fine when the format is given: its first row is data
    headerless = write(
        tmp_path, "part-0001.csv", ["1433221332117,1,view,2,", "1433221332118,1,view,3,"]
    )
    sink = ListSink()
    assert replay_file(headerless, sink, wanted_format="retailrocket").events == 2


def test_sink_closed_even_when_the_input_is_unreadable(tmp_path):
    sink = ListSink()
    with pytest.raises(ReplayError):
        replay_file(write(tmp_path, "x.csv", ["nope"]), sink)
    assert sink.closed == 1


def test_progress_bar_draws_on_a_terminal_and_nothing_elsewhere():
    from rich.console import Console
    from signalmail.progress import progress_bar

    shown = io.StringIO()
    terminal = Console(file=shown, force_terminal=True, width=120)
    with progress_bar(
        "replaying x.csv", total=1000, unit="bytes", console=terminal,
        extra="{task.fields[rows]:,} rows  {task.fields[rejects]:,} rejected", rows=0, rejects=0,
    ) as bar:  # fmt: skip
        bar.update(1000, rows=20, rejects=2)
    text = shown.getvalue()
    assert "replaying x.csv" in text
    assert "100%" in text
    assert "20 rows  2 rejected" in text
    log = io.StringIO()
    with progress_bar("simulating", console=Console(file=log)) as bar:  # not a terminal
        bar.update(5000)
    assert log.getvalue() == ""


def test_streaming_uses_generators_and_constant_memory(tmp_path):
    assert inspect.isgeneratorfunction(iter_events)
    assert inspect.isgeneratorfunction(replay_cli.iter_rows)

    def make(rows, name):
        lines = [REES46_HEADER]
        for i in range(rows):
            kind = ("view", "view", "cart", "purchase")[i % 4]
            # wide rows (long category codes) give megabytes with few rows: tracemalloc is slow
            lines.append(
                rees(
                    f"{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}",
                    kind,
                    product=str(1000 + i % 500),
                    user=str(i % 997),
                    session=f"s-{i // 8}",
                    code=f"cat{i % 50}." + "x" * 180,
                )
            )
        return write(tmp_path, name, lines)

    class CountingSink(ListSink):
        def send(self, event):
            self.sent += 1

    def peak(path):
        sink = CountingSink()
        tracemalloc.start()
        result = replay_file(path, sink)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top, result

    small_peak, _small = peak(make(1_250, "small.csv"))
    big_path = make(10_000, "big.csv")
    assert big_path.stat().st_size > 2_500_000
    big_peak, big = peak(big_path)
    assert big.rows == 10_000
    assert big.rejects.count == 0
    assert big.events > 8_000
    assert big_peak < 1_500_000  # well below the file's size
    assert big_peak < 2 * small_peak + 300_000  # 8x the rows, not 8x the memory


def test_iter_events_is_lazy(tmp_path):
    path = write(tmp_path, "lazy.csv", [REES46_HEADER] + [rees("00:00:00", "view")] * 50)
    source = Input(path)
    result = ReplayResult()
    events = iter_events(source, "auto", result)
    next(events)
    assert result.rows == 1  # one row read for one event: nothing was read ahead into a list
    source.close()


def test_order_grouper_caps_open_orders_and_keeps_time_monotonic():
    from signalmail.replay.orders import OrderGrouper

    built = []

    def build(order):
        built.append(order)
        return {"order": order.key, "lines": dict(order.lines)}

    grouper = OrderGrouper(build, window_s=60, max_open=2)
    line = {"product_id": "p", "quantity": 1}
    assert grouper.add("a", 1, 100.0, dict(line), {}) == []
    assert grouper.add("b", 2, 101.0, dict(line), {}) == []
    closed = grouper.add("c", 3, 102.0, dict(line), {})  # over the cap: the oldest goes early
    assert [c["order"] for c in closed] == ["a"]
    assert grouper.split_orders == 1
    assert grouper.add("b", 4, 50.0, dict(line), {}) == []  # late row: watermark stays at 102
    assert grouper.watermark == 102.0
    assert grouper.open["b"].lines["p"]["quantity"] == 2
    assert [c["order"] for c in grouper.advance(170.0)] == ["c", "b"]  # both idle > 60 s
    assert grouper.drain() == []


def test_cli_progress_bar_goes_to_stderr(tmp_path):
    from click.testing import CliRunner

    path = write(tmp_path, "p.csv", [REES46_HEADER] + [rees("00:00:01", "view")] * 30)
    result = CliRunner().invoke(
        replay_cli.replay, [str(path), "--spool", str(tmp_path / "s"), "--progress"]
    )
    assert result.exit_code == 0, result.output
    assert "100%" in result.stderr
    assert "30 rows" in result.stderr
    assert "100%" not in result.stdout
    assert "replayed 30 rees46 rows as 30 events" in result.stdout


def test_order_grouper_keeps_an_order_whole_when_its_rows_come_out_of_order():
    """Retailrocket's file is not time-sorted: a row behind the watermark must not close it."""
    from signalmail.replay.orders import OrderGrouper

    grouper = OrderGrouper(lambda order: {"order": order.key, "lines": dict(order.lines)},
                           window_s=300)  # fmt: skip
    assert grouper.advance(1433224214.0) == []  # a view row moves the watermark
    for n, item in enumerate(("a", "b", "c")):  # 48 minutes behind the watermark
        assert grouper.add("t1", 2 + n, 1433221999.0, {"product_id": item, "quantity": 1}, {}) == []
    (order,) = grouper.drain()
    assert sorted(order["lines"]) == ["a", "b", "c"]
    assert grouper.late_split_orders == 0


def test_order_grouper_counts_a_row_that_comes_after_its_order_closed():
    from signalmail.replay.orders import OrderGrouper

    grouper = OrderGrouper(lambda order: {"order": order.key}, window_s=60)
    grouper.add("t1", 1, 100.0, {"product_id": "a", "quantity": 1}, {})
    assert [
        o["order"] for o in grouper.add("t2", 2, 200.0, {"product_id": "a", "quantity": 1}, {})
    ] == ["t1"]
    grouper.add("t1", 3, 201.0, {"product_id": "b", "quantity": 1}, {})
    assert grouper.late_split_orders == 1


def test_a_stray_quote_rejects_its_own_line_only(tmp_path):
    """A reader that let the quote open a field swallowed the next ~10,000 rows into one."""
    lines = [REES46_HEADER, '"oops' + rees("00:00:00", "view")]
    lines += [rees(f"00:{n // 60:02d}:{n % 60:02d}", "view") for n in range(2000)]
    path = write(tmp_path, "quote.csv", lines)
    sink = ListSink()
    result = replay_file(path, sink)
    assert result.rows == 2001
    assert result.rejects.count == 1
    assert [r.line for r in result.rejects.examples] == [2]
    assert len(sink.events) == 2000


def test_a_gzip_file_cut_short_is_replayed_up_to_the_cut_and_fails_saying_where(tmp_path):
    from click.testing import CliRunner

    lines = [REES46_HEADER] + [rees(f"00:{n // 60:02d}:{n % 60:02d}", "view") for n in range(3000)]
    whole = write(tmp_path, "whole.csv.gz", lines, compress=True)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    sink = ListSink()
    result = replay_file(cut, sink)
    assert 0 < len(sink.events) < 3000
    assert result.rejects.count == 0
    assert result.rows == len(sink.events)  # every line before the cut was replayed
    assert result.unreadable == (
        f"the input is unreadable after line {result.rows + 1}: "
        "Compressed file ended before the end-of-stream marker was reached"
    )
    spool = tmp_path / "spool"
    run = CliRunner().invoke(replay_cli.replay, [str(cut), "--spool", str(spool)])
    assert run.exit_code == 1, run.output  # a half-replayed download is no success
    assert f"unreadable after line {result.rows + 1}" in run.output
    assert "the rows before it were replayed" in run.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shift-days", "1e7"], "--shift-days"),
        (["--shift-days", "nan"], "not nan"),
        (["--rejects", "no-such-folder/rejects.csv"], "cannot write"),
    ],
)
def test_replay_options_that_cannot_work_are_refused_before_anything_is_sent(
    tmp_path, args, message
):
    from click.testing import CliRunner

    path = write(tmp_path, "one.csv", [REES46_HEADER, rees("00:00:00", "view")])
    spool = tmp_path / "spool"
    result = CliRunner().invoke(
        replay_cli.replay, [str(path), "--spool", str(spool), *args], catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not list(spool.rglob("*.json.gz"))
