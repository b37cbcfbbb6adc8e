"""`signalmail replay` end to end: CSV (plain and gzip) into the spool and through the collector."""

from __future__ import annotations

import csv
import gzip
import json

from click.testing import CliRunner
from signalmail.collector.readback import read_spool
from signalmail.replay.cli import replay
from signalmail.services import running_collector

WRITE_KEY = "replay-key"
WATER = "2053013552326770905,appliances.water_heater,aqua"
PHONE = "2053013555631882655,electronics.smartphone,apple"
REES46 = [
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session",
    "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde",
    f"2019-10-01 00:00:01 UTC,cart,3900821,{WATER},33.20,554748717,9333dfbd",
    f"2019-10-01 00:00:02 UTC,purchase,3900821,{WATER},33.20,554748717,9333dfbd",
    f"2019-10-01 00:00:02 UTC,purchase,1004237,{PHONE},1081.98,554748717,9333dfbd",
    f"2019-10-01 00:00:03 UTC,view,1004237,{PHONE},not-a-price,554748717,9333dfbd",
    f"2019-10-01 00:00:04 UTC,remove_from_cart,3900821,{WATER},33.20,1,abc",
    "2019-10-01 00:00:05 UTC,view,5100816,2053013553375346967,,xiaomi,29.51,1,abc",
]


def spooled_events(root, source):
    summary = read_spool(root, source)
    events = []
    for path in summary.segments:
        with gzip.open(path, "rt") as handle:
            events.extend(json.loads(line) for line in handle)
    return events


def test_gzip_rees46_into_the_spool_with_rejects_file(tmp_path):
    data = tmp_path / "2019-Oct.csv.gz"
    data.write_bytes(gzip.compress(("\n".join(REES46) + "\n").encode()))
    rejects = tmp_path / "rejects.csv"
    spool = tmp_path / "spool"
    result = CliRunner().invoke(
        replay,
        [
            str(data),
            "--spool",
            str(spool),
            "--rejects",
            str(rejects),
            "--shift-days",
            "2",
            "--json",
            "--no-progress",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["format"] == "rees46"
    assert summary["rows"] == 7
    assert summary["rejected_rows"] == 1
    assert summary["reject_examples"][0]["line"] == 6
    with rejects.open() as handle:
        assert [row["line"] for row in csv.DictReader(handle)] == ["6"]
    events = spooled_events(spool, "replay")
    assert len(events) == summary["events"] == summary["accepted"] == 5
    names = sorted(e["event"] for e in events)
    assert names == [
        "Order Completed",
        "Product Added",
        "Product Removed",
        "Product Viewed",
        "Product Viewed",
    ]
    order = next(e for e in events if e["event"] == "Order Completed")
    assert order["originalTimestamp"] == "2019-10-03T00:00:02.000Z"  # shifted two days
    assert order["timestamp"] == order["originalTimestamp"]
    assert len(order["properties"]["products"]) == 2


def test_retailrocket_through_the_sdk_and_the_real_collector(tmp_path):
    data = tmp_path / "events.csv"
    rows = ["timestamp,visitorid,event,itemid,transactionid"]
    for i in range(300):
        rows.append(f"{1433221332117 + i * 1000},{i % 17},view,{i % 40},")
        if i % 10 == 0:
            rows.append(f"{1433221332117 + i * 1000 + 1},{i % 17},addtocart,{i % 40},")
        if i % 30 == 0:
            rows.append(f"{1433221332117 + i * 1000 + 2},{i % 17},transaction,{i % 40},{i}")
    rows.append("garbage,row")
    data.write_text("\n".join(rows) + "\n")
    spool = tmp_path / "spool"
    with running_collector(spool, WRITE_KEY, source_id="rr") as collector:
        result = CliRunner().invoke(
            replay,
            [
                str(data),
                "--data-plane-url",
                collector.url,
                "--json",
                "--format",
                "retailrocket",
                "--batch-size",
                "50",
            ],
            env={"SIGNALMAIL_WRITE_KEY": WRITE_KEY},
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["events_by_name"] == {
        "Product Viewed": 300,
        "Product Added": 30,
        "Order Completed": 10,
    }
    assert summary["rejected_rows"] == 1
    events = spooled_events(spool, "rr")
    assert len(events) == 340
    assert len({e["messageId"] for e in events}) == 340
    assert all(e["timestamp"].startswith("2015-06-0") for e in events)  # historical times kept
    assert all(not e.get("userId") for e in events)  # the SDK sends userId: null


def test_wrong_write_key_and_usage_errors(tmp_path):
    data = tmp_path / "r.csv"
    data.write_text("\n".join(REES46) + "\n")
    spool = tmp_path / "spool"
    with running_collector(spool, WRITE_KEY, source_id="bad") as collector:
        result = CliRunner().invoke(
            replay,
            [
                str(data),
                "--data-plane-url",
                collector.url,
                "--write-key",
                "nope",
                "--max-retries",
                "0",
                "--no-progress",
            ],
        )
    assert result.exit_code == 1
    assert "HTTP 401" in result.output
    runner = CliRunner()
    assert "exactly one of" in runner.invoke(replay, [str(data)]).output
    assert (
        "no such file"
        in runner.invoke(replay, [str(tmp_path / "x.csv"), "--spool", str(spool)]).output
    )
    assert (
        "only {product_id}"
        in runner.invoke(
            replay, [str(data), "--spool", str(spool), "--url-template", "{nope}"]
        ).output
    )
    unknown = tmp_path / "u.csv"
    unknown.write_text("a,b\n1,2\n")
    assert (
        "cannot tell the format"
        in runner.invoke(replay, [str(unknown), "--spool", str(spool)]).output
    )
