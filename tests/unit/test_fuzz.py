"""Hypothesis against every parser of outside input: each answers or refuses, none crashes.

- the collector's HTTP API (the real app under uvicorn on 127.0.0.1, a real spool): any body,
  encoding and path gets a 2xx or a 4xx/429, never a 5xx, and the writer stays healthy;
- tap-rudderstack's line parser: any bytes become an event or a named rejection reason;
- the replay importers (REES46, Retailrocket): any row becomes events or a RowError;
- the campaign loader: any YAML loads or raises CampaignConfigError naming the file;
- the template linter: any template text gives findings, never an exception.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signalmail.replay.rees46 import Rees46Converter
from signalmail.replay.retailrocket import RetailrocketConverter
from signalmail.replay.source import RowError
from tap_rudderstack.spool import parse_event
from target_mailchimp_transactional.campaigns import (
    CampaignConfigError,
    load_campaign,
    load_campaigns,
)

from tests.collector_support import WRITE_KEY, serve

REPO = Path(__file__).resolve().parents[2]
#: the collector fixture is shared by every example on purpose: one writer takes them all
FIXTURES = [HealthCheck.function_scoped_fixture]
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "identify", "page", "alias", "bogus"]) | JSON},
    optional={"anonymousId": JSON, "userId": JSON, "messageId": JSON, "event": JSON,
              "properties": JSON, "context": JSON, "timestamp": JSON, "sentAt": JSON},
)  # fmt: skip
BODIES = st.one_of(
    st.binary(max_size=400),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.lists(EVENTS, max_size=5).map(lambda b: json.dumps({"batch": b}).encode()),
    EVENTS.map(lambda e: json.dumps(e).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.just(b'{"batch":[{"type":"track","anonymousId":"\xff\xfe"}]}'),
)


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with (
        serve(tmp_path_factory.mktemp("spool"), mandrill_webhook_key="hook") as running,
        requests.Session() as session,
    ):
        yield running, session


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=BODIES,
    path=st.sampled_from(["batch", "track", "identify", "page", "screen", "group", "alias"]),
    gzipped=st.booleans(),
    authorised=st.booleans(),
)
def test_the_http_api_answers_every_body_with_a_2xx_or_4xx(
    collector, body, path, gzipped, authorised
):
    running, session = collector
    headers = dict(AUTH) if authorised else {}
    data = body
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        data = gzip.compress(body)
    answer = session.post(f"{running.url}/v1/{path}", data=data, headers=headers, timeout=30)
    assert answer.status_code < 500, (answer.status_code, answer.text)
    assert running.writer.healthy


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    form=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        JSON.map(lambda v: b"mandrill_events=" + json.dumps(v).encode()),
    )
)
def test_the_webhook_endpoint_answers_every_body_with_a_4xx_or_2xx(collector, form):
    running, session = collector
    answer = session.post(
        f"{running.url}/webhooks/mandrill", data=form, timeout=30,
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Mandrill-Signature": "forged"},
    )  # fmt: skip
    assert answer.status_code in (400, 403, 413), (answer.status_code, answer.text)
    assert running.writer.healthy


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=300), EVENTS.map(lambda e: json.dumps(e).encode())))
def test_the_taps_line_parser_gives_an_event_or_a_reason(line):
    parsed = parse_event(line)
    if isinstance(parsed, str):
        assert parsed in {"invalid_json", "not_an_object", "missing_type", "unknown_type",
                          "missing_message_id", "missing_ids"}  # fmt: skip
    else:
        stream, event = parsed
        assert isinstance(stream, str)
        assert isinstance(event, dict)


CELLS = st.one_of(st.text(max_size=30), st.from_regex(r"\A[0-9]{1,12}\Z"),
                  st.sampled_from(["", "view", "cart", "purchase", "2019-10-01 00:00:00 UTC",
                                   "1433221332117", "nan", "inf", "-1", "1e999"]))  # fmt: skip


@settings(max_examples=400)
@given(st.lists(CELLS, min_size=0, max_size=11))
def test_replay_converters_give_events_or_a_row_error(row):
    for converter in (Rees46Converter(), RetailrocketConverter()):
        try:
            events = converter.convert(1, row)
        except RowError:
            continue
        assert all(isinstance(e, dict) and e.get("type") for e in events)


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=15),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=15,
)
CAMPAIGN_KEYS = ["name", "merge_vars", "variants", "holdout", "required", "template",
                 "from_email", "subject", "tags", "blocks", "split", "weight"]  # fmt: skip


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(CAMPAIGN_KEYS), YAML_VALUES, max_size=6).map(json.dumps),
))  # fmt: skip
def test_the_campaign_loader_loads_or_names_the_problem(tmp_path, text):
    path = tmp_path / "fuzzed.yml"
    path.write_text(text, encoding="utf-8")
    problem = None
    try:
        load_campaign(path, REPO / "templates" / "blocks")
    except CampaignConfigError as exc:
        problem = str(exc)
    assert problem is None or "fuzzed.yml" in problem


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(["{{", "}}", "{{#each products}}", "{{/each}}", "{{#if x}}",
                              "{{else}}", "{{/if}}", "{{{", "}}}", "*|FNAME|*", "<body>",
                              "</body>", 'mc:edit="main"', "{{unsub \"https://x\"}}", "\\{{",
                              "{{> partial}}", "{{!-- c --}}", "text"]),
             max_size=25).map("".join),
))  # fmt: skip
def test_the_template_linter_reports_findings_for_any_text(code):
    from signalmail.templates.lint import lint_template

    campaigns = load_campaigns(REPO / "templates" / "campaigns", REPO / "templates" / "blocks")
    campaign = campaigns["cart_abandonment"]
    findings = lint_template(code, "fuzzed.html", campaign, campaign.variants[0])
    assert all(f.severity in ("error", "warning") for f in findings)
