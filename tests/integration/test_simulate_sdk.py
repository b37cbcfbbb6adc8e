"""`signalmail simulate` driving the real rudder-sdk-python client over HTTP.

A small recording data plane (this file) checks what the SDK puts on the wire (basic auth, gzip,
batches, sentAt) and plays the error answers rudder-server gives; the real collector then proves
the whole path lands in the spool with the simulated event times.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from signalmail.collector.readback import read_spool
from signalmail.services import running_collector
from signalmail.simulate import iter_events
from signalmail.simulate.cli import simulate
from signalmail.simulate.sinks import SdkSink, SinkError

from tests.helpers.servers import free_port, wait_until

WRITE_KEY = "test-write-key"
START = "2026-02-01T00:00:00Z"
START_DT = datetime(2026, 2, 1, tzinfo=UTC)


class Recorder(ThreadingHTTPServer):
    """Records decoded /v1/batch bodies; `answers` scripts the status of successive requests."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.bodies = []
        self.headers_seen = []
        self.answers = []  # (status, text) per request, then 200 OK
        self.lock = threading.Lock()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def events(self):
        return [event for body in self.bodies for event in body["batch"]]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        server = self.server
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length)
        with server.lock:
            server.headers_seen.append(dict(self.headers))
            status, text = server.answers.pop(0) if server.answers else (200, "OK")
        expected = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        if self.headers.get("Authorization") != expected:
            status, text = 401, "invalid write key"
        if status == 200:
            assert self.path == "/v1/batch"
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            with server.lock:
                server.bodies.append(json.loads(raw))
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def recorder():
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def invoke(args, env=None):
    return CliRunner().invoke(simulate, args, env=env or {}, catch_exceptions=False)


def test_compressed_run_sends_exactly_the_generated_stream(recorder):
    result = invoke(
        [
            "--data-plane-url",
            recorder.url,
            "--seed",
            "5",
            "--users",
            "25",
            "--days",
            "4",
            "--start",
            START,
            "--compress-time",
            "--batch-size",
            "100",
            "--json",
        ],
        env={"SIGNALMAIL_WRITE_KEY": WRITE_KEY},
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    expected = list(iter_events(seed=5, users=25, days=4, start=START_DT))
    got = recorder.events()
    assert summary["events"] == summary["accepted"] == len(expected) == len(got)
    assert [e["messageId"] for e in got] == [e["messageId"] for e in expected]
    by_id = {e["messageId"]: e for e in expected}
    for event in got:
        source = by_id[event["messageId"]]
        assert event["originalTimestamp"] == source["originalTimestamp"]
        assert event["type"] == source["type"]
        assert event.get("userId") == source.get("userId")
        if event["type"] == "identify":  # the SDK puts traits in context.traits
            assert event["context"]["traits"] == source["context"]["traits"]
            assert "traits" not in event
        if event["type"] == "track":
            assert event["event"] == source["event"]
            assert event["properties"] == source["properties"]
        assert "sentAt" not in event  # --sent-at wall: the batch carries the real send time
    assert all(h.get("Content-Encoding") == "gzip" for h in recorder.headers_seen)
    assert max(len(b["batch"]) for b in recorder.bodies) <= 100
    sent_at = datetime.fromisoformat(recorder.bodies[0]["sentAt"])
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 120
    assert summary["events_by_name"]["Product Viewed"] == sum(
        1 for e in expected if e.get("event") == "Product Viewed"
    )


def test_sent_at_event_stamps_each_event(recorder):
    result = invoke(
        [
            "--data-plane-url",
            recorder.url,
            "--write-key",
            WRITE_KEY,
            "--users",
            "5",
            "--days",
            "2",
            "--start",
            START,
            "--compress-time",
            "--sent-at",
            "event",
        ]
    )
    assert result.exit_code == 0, result.output
    events = recorder.events()
    assert events
    assert all(e["sentAt"] == e["originalTimestamp"] for e in events)


def test_live_mode_stamps_now_and_respects_limit(recorder):
    before = datetime.now(UTC)
    result = invoke(
        [
            "--data-plane-url",
            recorder.url,
            "--write-key",
            WRITE_KEY,
            "--users",
            "5",
            "--rate",
            "5000",
            "--limit",
            "40",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    events = recorder.events()
    assert len(events) == 40
    assert json.loads(result.output)["events"] == 40
    for event in events:
        stamp = datetime.fromisoformat(event["originalTimestamp"].replace("Z", "+00:00"))
        assert stamp >= before.replace(microsecond=0)


def test_sync_mode_closes_cleanly(recorder):
    # Client.shutdown() raises in sync mode; the sink must not call it
    result = invoke(
        [
            "--data-plane-url",
            recorder.url,
            "--write-key",
            WRITE_KEY,
            "--users",
            "3",
            "--days",
            "1",
            "--start",
            START,
            "--compress-time",
            "--sync",
            "--limit",
            "15",
        ]
    )
    assert result.exit_code == 0, result.output
    assert len(recorder.bodies) == 15
    assert all(len(b["batch"]) == 1 for b in recorder.bodies)


def test_wrong_write_key_fails_with_a_clear_error(recorder):
    result = invoke(
        [
            "--data-plane-url",
            recorder.url,
            "--write-key",
            "wrong",
            "--users",
            "30",
            "--days",
            "3",
            "--start",
            START,
            "--compress-time",
            "--max-retries",
            "0",
        ]
    )
    assert result.exit_code == 1
    assert "HTTP 401" in result.output
    assert "invalid write key" in result.output
    assert "wrong" not in result.output.replace("wrong write key", "")  # the key is never printed
    assert recorder.bodies == []


def test_server_errors_are_retried_and_nothing_is_lost(recorder):
    recorder.answers = [(503, "busy"), (429, "too many requests")]
    result = invoke(
        [
            "--data-plane-url",
            recorder.url,
            "--write-key",
            WRITE_KEY,
            "--users",
            "5",
            "--days",
            "2",
            "--start",
            START,
            "--compress-time",
            "--max-retries",
            "3",
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    ids = [e["messageId"] for e in recorder.events()]
    assert len(ids) == len(set(ids)) == json.loads(result.output)["events"]


def test_persistent_server_errors_are_reported_not_swallowed(recorder):
    recorder.answers = [(500, "boom")] * 50
    sink = SdkSink(recorder.url, WRITE_KEY, max_retries=1)
    for event in iter_events(seed=1, users=5, days=2, start=START_DT):
        sink.send(event)
    assert sink.sent > 0
    with pytest.raises(SinkError, match=r"HTTP 500: boom"):
        sink.close()
    assert sink.failed == sink.sent > 0


def test_usage_errors():
    assert "exactly one of" in invoke(["--users", "1"]).output
    assert "exactly one of" in invoke(["--data-plane-url", "http://x", "--spool", "/tmp/x"]).output
    out = invoke(["--data-plane-url", "http://127.0.0.1:9"]).output
    assert "--write-key" in out
    out = invoke(["--spool", "/tmp/x", "--start", "yesterday"]).output
    assert "is not a date" in out


def test_simulator_through_the_real_collector(tmp_path):
    spool = tmp_path / "spool"
    with running_collector(spool, WRITE_KEY, source_id="simtest") as collector:
        result = invoke(
            [
                "--data-plane-url",
                collector.url,
                "--write-key",
                WRITE_KEY,
                "--users",
                "20",
                "--days",
                "5",
                "--start",
                START,
                "--compress-time",
                "--json",
            ]
        )
        assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    spooled = read_spool(spool, "simtest")
    expected = {e["messageId"]: e for e in iter_events(seed=42, users=20, days=5, start=START_DT)}
    assert set(expected) == spooled.message_ids
    assert spooled.duplicates == 0
    assert summary["events"] == spooled.events
    # skew correction with a real sentAt gives back the simulated event time
    import gzip as gz

    for path in spooled.segments:
        with gz.open(path, "rt") as handle:
            for line in handle:
                event = json.loads(line)
                original = expected[event["messageId"]]["originalTimestamp"]
                simulated = datetime.fromisoformat(original.replace("Z", "+00:00"))
                stamped = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                assert abs((stamped - simulated).total_seconds()) < 60
                assert event["receivedAt"] > event["timestamp"]


def test_unreachable_data_plane_stops_at_the_first_event_with_the_reason():
    """Sync mode: the first refused event stops the run, and the summary accounts for it."""
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke(
        [
            "--data-plane-url",
            url,
            "--write-key",
            WRITE_KEY,
            "--users",
            "200",
            "--days",
            "14",
            "--start",
            START,
            "--compress-time",
            "--max-retries",
            "0",
            "--sync",
            "--json",
        ]
    )
    assert result.exit_code == 1
    assert "ConnectionError" in result.output
    assert "1 of 1 events were not accepted" in result.output
    summary = json.loads(result.output[result.output.index("{") : result.output.rindex("}") + 1])
    assert summary["events"] == 1  # handed over before the failure, not 0 and not the stream
    assert summary["accepted"] == 0


def test_async_sink_stops_within_its_queue_bound_when_the_data_plane_is_down():
    """The SDK queue bounds how far the simulator runs ahead of a failing data plane, whatever
    the timing: at most the queue plus the batch in flight, never the whole stream."""
    url = f"http://127.0.0.1:{free_port()}"
    sink = SdkSink(url, WRITE_KEY, batch_size=20, max_queue_size=50, max_retries=0)
    stream = list(iter_events(seed=3, users=60, days=7, start=START_DT))
    assert len(stream) > 500
    with pytest.raises(SinkError, match="ConnectionError"):  # noqa: PT012 (send raises mid-stream)
        for event in stream:
            sink.send(event)
        raise AssertionError("the whole stream was accepted by a dead data plane")
    assert 0 < sink.sent <= 50 + 20
    with pytest.raises(SinkError, match=rf"{sink.sent} of {sink.sent} events were not accepted"):
        sink.close()
    assert sink.failed == sink.sent


def test_every_queued_event_is_accounted_for_after_a_fatal_answer(recorder):
    sink = SdkSink(recorder.url, "wrong", batch_size=10, max_retries=0)
    with pytest.raises(SinkError, match="stopping"):  # noqa: PT012 (send raises mid-stream)
        for event in iter_events(seed=3, users=200, days=14, start=START_DT):
            sink.send(event)
        # the whole stream may be queued before the first answer: wait for it, then check
        wait_until(lambda: sink.fatal is not None, timeout=20, what="the 401 answer")
        sink._check()
    with pytest.raises(SinkError, match="HTTP 401: invalid write key") as failed:
        sink.close()
    assert (
        sink.failed == sink.sent > 0
    )  # failed batches plus discarded queue, nothing lost silently
    assert f"{sink.failed} of {sink.sent} events" in str(failed.value)
