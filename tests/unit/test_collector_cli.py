"""`signalmail collect` at start: what it warns about, and what the app it builds answers.

uvicorn's server is replaced by a stand-in that, instead of listening, posts one unsigned
Mandrill webhook to the app the command built (in process, over ASGI), so a test sees the
start-up log and that app's answer together, with no port and no subprocess.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from click.testing import CliRunner, Result
from signalmail.cli import main

#: an unsigned webhook of one open: what anyone who reaches the port could post
UNSIGNED_WEBHOOK = urlencode(
    {
        "mandrill_events": json.dumps(
            [{"event": "open", "ts": 1767225600, "_id": "m1", "msg": {"email": "j@example.com"}}]
        )
    }
).encode()


async def post(
    app: Any,
    body: bytes,
    path: str = "/webhooks/mandrill",
    headers: tuple[tuple[bytes, bytes], ...] = (
        (b"content-type", b"application/x-www-form-urlencoded"),
    ),
) -> tuple[int, bytes]:
    """POST `body` to `path` (a webhook by default) through the ASGI `app`: (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            *headers,
            (b"content-length", str(len(body)).encode()),
        ],
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, answer


def post_at_start(monkeypatch, body: bytes, *where: Any) -> list[tuple[int, bytes]]:
    """Replace uvicorn's server: `run` posts `body` (to `where`, see `post`) to the app the
    command built; each run's answer lands in the list returned."""
    answers: list[tuple[int, bytes]] = []

    class PostOnce:
        def __init__(self, config: uvicorn.Config) -> None:
            self.config = config
            self.started = False
            self.should_exit = False

        def run(self) -> None:
            answers.append(asyncio.run(post(self.config.app, body, *where)))
            self.started = True

    monkeypatch.setattr(uvicorn, "Server", PostOnce)
    return answers


@pytest.fixture
def webhook_answers(monkeypatch) -> list[tuple[int, bytes]]:
    """Replace uvicorn's server: `run` posts UNSIGNED_WEBHOOK; the answers land in the list."""
    return post_at_start(monkeypatch, UNSIGNED_WEBHOOK)


def collect(spool: Path, *options: str, env: dict[str, str] | None = None) -> Result:
    """Run `signalmail collect` with only the SIGNALMAIL_* settings given here."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SIGNALMAIL_")}
    return CliRunner(env={**clean, **(env or {})}).invoke(
        main,
        ["collect", "--spool", str(spool), "--write-key", "wk", *options],
        catch_exceptions=False,
    )


def published_events(spool: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((spool / "rudder-logs").rglob("*.json.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            out.extend(json.loads(line) for line in handle)
    return out


def insecure_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "--insecure-webhooks" in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("options", "env"),
    [(["--insecure-webhooks"], None), ([], {"SIGNALMAIL_INSECURE_WEBHOOKS": "1"})],
    ids=["flag", "environment"],
)
def test_insecure_webhooks_warn_at_start_and_unsigned_webhooks_are_accepted(
    tmp_path, webhook_answers, caplog, options, env
):
    result = collect(tmp_path, *options, env=env)
    assert result.exit_code == 0, result.output
    (warning,) = insecure_warnings(caplog)
    # it says what is open and what that lets anyone do
    assert "UNSIGNED" in warning
    assert "anyone who reaches this port can suppress any address" in warning
    assert webhook_answers == [(200, b"OK")]
    assert [e["event"] for e in published_events(tmp_path)] == ["Email Opened"]


def test_without_a_webhook_key_or_the_flag_webhooks_are_refused(tmp_path, webhook_answers, caplog):
    caplog.set_level(logging.INFO, logger="signalmail.collector")
    result = collect(tmp_path)
    assert result.exit_code == 0, result.output
    assert insecure_warnings(caplog) == []
    assert any("/webhooks/mandrill answers 403" in r.getMessage() for r in caplog.records)
    ((status, answer),) = webhook_answers
    assert status == 403
    assert b"--mandrill-webhook-key" in answer  # the refusal says how to fix it
    assert published_events(tmp_path) == []


def test_with_a_webhook_key_the_insecure_flag_changes_nothing(tmp_path, webhook_answers, caplog):
    result = collect(tmp_path, "--insecure-webhooks", "--mandrill-webhook-key", "hook-key")
    assert result.exit_code == 0, result.output
    assert insecure_warnings(caplog) == []  # signatures are checked: nothing to warn about
    assert webhook_answers == [(403, b"invalid webhook signature")]
    assert published_events(tmp_path) == []


def test_the_access_log_never_shows_a_write_key(caplog):
    """uvicorn logs each request's path with its query; the beacon and the pixel carry the key
    there."""
    import logging

    from signalmail.collector.cli import redact_access_log

    redact_access_log()
    redact_access_log()  # once is enough, and twice changes nothing
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        for path in (
            "/beacon/v1/batch?writeKey=s3cr3tKey",
            "/pixel/v1/track?anonymousId=a&WRITEKEY=s3cr3tKey&event=open",
        ):
            access.info('%s - "%s %s HTTP/%s" %d', "198.51.100.7:5123", "GET", path, "1.1", 200)
    assert "s3cr3tKey" not in caplog.text
    assert "/pixel/v1/track?anonymousId=a&WRITEKEY=<redacted>&event=open" in caplog.text
    assert len([f for f in access.filters if type(f).__name__ == "RedactWriteKey"]) == 1


def test_max_import_bytes_holds_a_compressed_import_to_the_limit(tmp_path, monkeypatch):
    """The write key is public: a 10 KB gzip body expands to megabytes of events. An operator
    who takes no bulk loads can hold /v1/import to the limit of the other routes."""
    import base64

    body = gzip.compress(json.dumps({"batch": [{"anonymousId": "a", "type": "track",
                                                "event": "x"}] * 60_000}).encode())  # fmt: skip
    assert len(body) < 64 * 1024
    auth = b"Basic " + base64.b64encode(b"wk:")
    headers = ((b"content-type", b"application/json"), (b"content-encoding", b"gzip"),
               (b"authorization", auth))  # fmt: skip
    answers = post_at_start(monkeypatch, body, "/v1/import", headers)
    assert collect(tmp_path, env={"SIGNALMAIL_MAX_IMPORT_BYTES": "1048576"}).exit_code == 0
    assert answers[0][0] == 413
    assert collect(tmp_path).exit_code == 0  # the default takes it (each user's part is small)
    assert answers[1][0] == 200, answers[1]
