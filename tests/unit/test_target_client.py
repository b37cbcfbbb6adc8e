"""Mandrill error translation and the mailchimp-transactional quirks, decided in one place."""

from __future__ import annotations

import io
import json

import pytest
import requests
from target_mailchimp_transactional.client import (
    AmbiguousError,
    InvalidKeyError,
    MandrillClient,
    PermanentError,
    RetryableError,
    TemplateError,
    ValidationFailed,
    redact,
)
from target_mailchimp_transactional.target import TargetMailchimpTransactional

KEY = "md-SECRET-KEY-123"


def response(status: int, body: bytes) -> requests.Response:
    res = requests.Response()
    res.status_code = status
    res._content = body
    return res


@pytest.mark.parametrize(
    ("name", "status", "cls"),
    [
        ("Invalid_Key", 500, InvalidKeyError),
        ("Unknown_Template", 500, TemplateError),
        ("Invalid_Template", 500, TemplateError),
        ("ValidationError", 500, ValidationFailed),
        ("GeneralError", 500, RetryableError),
        ("ServiceUnavailable", 500, RetryableError),
        ("RequestLimitExceeded", 429, RetryableError),
        ("PaymentRequired", 500, PermanentError),
        ("Unknown_Subaccount", 500, PermanentError),
        ("", 503, RetryableError),  # in front of Mandrill, nothing passed on
        ("", 429, RetryableError),
        ("", 502, AmbiguousError),  # a gateway: Mandrill may have the call
        ("", 504, AmbiguousError),
        ("", 522, AmbiguousError),
        ("", 400, PermanentError),
    ],
)
def test_errors_are_classified_by_name_not_status(name, status, cls):
    client = MandrillClient(KEY, "http://127.0.0.1:9")
    text = {"status": "error", "code": -1, "name": name, "message": f"bad {KEY}"} if name else "x"
    error = client._translate(text, status, "messages/send-template")
    assert type(error) is cls
    assert KEY not in str(error)


def test_invalid_key_message_is_clear_and_keyless():
    client = MandrillClient(KEY, "http://127.0.0.1:9")
    error = client._translate(
        {"name": "Invalid_Key", "message": "Invalid API key"}, 500, "users/ping"
    )
    assert "api_key" in str(error)
    assert KEY not in str(error)


def test_an_ambiguous_error_is_never_caught_as_retryable():
    """A handler for `RetryableError` resends the call: an answer that may have been accepted
    must not reach it (a second email)."""
    assert not issubclass(AmbiguousError, RetryableError)


def test_raw_response_quirk_is_never_success():
    client = MandrillClient(KEY, "http://127.0.0.1:9")
    with pytest.raises(AmbiguousError, match="empty list"):
        client._raw_response(response(200, b"[]"), "messages/send-template", expect_list=False)
    assert client._raw_response(response(200, b"[]"), "metadata/list", expect_list=True) == []
    with pytest.raises(RetryableError, match="HTTP 503 with an empty body") as caught:
        client._raw_response(response(503, b""), "messages/send-template", expect_list=False)
    assert type(caught.value) is RetryableError
    with pytest.raises(AmbiguousError, match="HTTP 504 with an empty body"):
        client._raw_response(response(504, b""), "messages/send-template", expect_list=False)
    with pytest.raises(AmbiguousError, match="without a JSON answer"):
        client._raw_response(response(200, b""), "messages/send-template", expect_list=False)


def test_connection_refused_is_retryable_and_caller_body_untouched():
    client = MandrillClient(KEY, "http://127.0.0.1:9", timeout=2)  # nothing listens on 9
    body = {"template_name": "t", "template_content": [], "message": {"to": []}}
    before = json.dumps(body)
    with pytest.raises(RetryableError, match="connection refused") as err:
        client.send_template(body)
    assert not isinstance(err.value, AmbiguousError)
    assert json.dumps(body) == before  # the package adds `key` to the dict it gets: a copy


def test_redact_removes_the_key():
    assert redact({"key": KEY, "a": {"b": 1}}) == {"key": "<redacted>", "a": {"b": 1}}


def test_settings_documented_and_secrets_marked():
    schema = TargetMailchimpTransactional.config_jsonschema["properties"]
    assert all(p.get("description") for p in schema.values())
    assert schema["api_key"].get("secret") is True
    assert schema["write_key"].get("secret") is True
    for name in ("base_url", "campaigns_dir", "ledger_url", "max_recipients_per_call",
                 "concurrency", "timeout", "max_retries", "dry_run", "outbox_dir",
                 "data_plane_url"):  # fmt: skip
        assert name in schema


def _lines(*messages):
    schema = {"type": "SCHEMA", "stream": "email_triggers", "key_properties": ["trigger_id"],
              "schema": {"type": "object", "properties": {
                  "trigger_id": {"type": "string"}, "campaign": {"type": "string"},
                  "email": {"type": "string"}}}}  # fmt: skip
    return io.StringIO("\n".join(json.dumps(m) for m in (schema, *messages)) + "\n")


def test_batch_messages_are_refused(tmp_path):
    target = TargetMailchimpTransactional(
        config={"dry_run": True, "outbox_dir": str(tmp_path)}, validate_config=True
    )
    batch = {"type": "BATCH", "stream": "email_triggers",
             "encoding": {"format": "jsonl", "compression": "gzip"},
             "manifest": ["file:///tmp/batch-1.jsonl.gz"]}  # fmt: skip
    with pytest.raises(ValueError, match="BATCH message for stream 'email_triggers' refused"):
        target.listen(_lines(batch))


def test_stream_without_trigger_columns_is_refused(tmp_path):
    target = TargetMailchimpTransactional(
        config={"dry_run": True, "outbox_dir": str(tmp_path)}, validate_config=True
    )
    other = {"type": "SCHEMA", "stream": "orders", "key_properties": ["id"],
             "schema": {"type": "object", "properties": {"id": {"type": "string"}}}}  # fmt: skip
    record = {"type": "RECORD", "stream": "orders", "record": {"id": "1"}}
    with pytest.raises(ValueError, match="'orders' is not an email_triggers stream"):
        target.listen(io.StringIO(json.dumps(other) + "\n" + json.dumps(record) + "\n"))


def test_a_run_that_cannot_start_lets_go_of_what_it_opened(tmp_path):
    """Mandrill unreachable at start: the run stops, and the emitter's thread and the ledger's
    database go with it, not with the process (a watch retries every 30 s)."""
    import threading

    import duckdb

    before = {t.ident for t in threading.enumerate()}
    ledger = tmp_path / "l.duckdb"
    target = TargetMailchimpTransactional(
        config={
            "api_key": "k", "base_url": "http://127.0.0.1:9", "max_retries": 0,
            "ledger_url": f"duckdb:///{ledger}", "data_plane_url": "http://127.0.0.1:9",
            "write_key": "w", "timeout": 2,
        },
        validate_config=True,
    )  # fmt: skip
    with pytest.raises(Exception, match="not usable"):
        target.listen(_lines())
    assert {t.ident for t in threading.enumerate() if t.is_alive()} <= before
    with duckdb.connect(str(ledger)) as conn:  # the file is free: another process could open it
        assert conn.execute("select 1").fetchone() == (1,)


def test_live_run_without_key_fails_clearly(tmp_path):
    target = TargetMailchimpTransactional(
        config={"ledger_url": f"duckdb:///{tmp_path / 'l.duckdb'}"}, validate_config=True
    )
    with pytest.raises(ValueError, match="api_key is required unless dry_run"):
        target.listen(_lines())
