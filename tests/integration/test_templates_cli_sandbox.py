"""`signalmail templates lint | sync` against the real sandbox, through mailchimp-transactional."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from signalmail.cli import main
from signalmail.sandbox.testing import run_sandbox
from signalmail.templates import source as source_module
from signalmail.templates.source import TemplatesClient
from signalmail.templates.sync import SyncRecord, code_hash, sync_templates

from tests.helpers.templates import BLOCK_J2, BROKEN, CAMPAIGN_YML, CLEAN
from tests.helpers.warehouse import T0, trigger_row, write_duckdb

KEY = "templates-test-key"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with run_sandbox(tmp_path_factory.mktemp("sandbox"), api_keys=[KEY]) as running:
        yield running


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "templates/campaigns").mkdir(parents=True)
    (tmp_path / "templates/blocks").mkdir()
    (tmp_path / "templates/mandrill").mkdir()
    (tmp_path / "templates/blocks/cart_items.html.j2").write_text(BLOCK_J2)
    return tmp_path


@pytest.fixture
def slug(request, sandbox, project: Path) -> str:
    """A template slug unique to this test (the sandbox is shared by the module)."""
    name = "cart-" + request.node.name.replace("_", "-")[:40]
    (project / "templates/campaigns/cart_abandonment.yml").write_text(
        CAMPAIGN_YML.replace("template: cart-abandonment", f"template: {name}")
    )
    yield name
    with contextlib.suppress(Exception):  # already gone is fine
        sandbox.client(KEY).templates.delete({"name": name})


def cli(project: Path, sandbox, *args: str, key: str = KEY):
    previous = os.getcwd()
    os.chdir(project)
    try:
        return CliRunner().invoke(
            main,
            ["templates", *args, "--api-key", key, "--base-url", sandbox.api_host],
            catch_exceptions=False,
        )
    finally:
        os.chdir(previous)


def test_lint_fetches_the_published_template(sandbox, project, slug):
    client = sandbox.client(KEY)
    client.templates.add({"name": slug, "code": BROKEN, "publish": True})
    result = cli(project, sandbox, "lint")
    assert result.exit_code == 1, result.output
    origin = f"mandrill:templates/{slug}"
    assert f"{origin}:3: error: unknown merge tag `fist_name` (did you mean `first_name`?)" in (
        result.output
    )
    assert f"{origin}:7: error: no unsubscribe link" in result.output
    assert f'{origin} has no mc:edit="cart_items"' in result.output
    # A marketer fixes it in Mandrill and publishes: lint is clean.
    client.templates.update({"name": slug, "code": CLEAN, "publish": True})
    result = cli(project, sandbox, "lint")
    assert result.exit_code == 0, result.output


def test_lint_checks_published_code_not_the_draft(sandbox, project, slug):
    client = sandbox.client(KEY)
    client.templates.add({"name": slug, "code": BROKEN, "publish": False})
    result = cli(project, sandbox, "lint")
    assert result.exit_code == 1
    assert "has never been published" in result.output
    result = cli(project, sandbox, "lint", "--draft")
    assert result.exit_code == 1
    assert "unknown merge tag `fist_name`" in result.output
    client.templates.publish({"name": slug})
    client.templates.update({"name": slug, "code": CLEAN, "publish": False})
    result = cli(project, sandbox, "lint")  # published is still BROKEN
    assert "unknown merge tag `fist_name`" in result.output
    assert cli(project, sandbox, "lint", "--draft").exit_code == 0


def test_lint_unknown_template_and_bad_key(sandbox, project, slug):
    result = cli(project, sandbox, "lint")
    assert result.exit_code == 1
    assert (
        f"templates/campaigns/cart_abandonment.yml:2: error: mandrill:templates/{slug} does not "
        "exist in Mandrill (templates/info)"
    ) in result.output
    result = cli(project, sandbox, "lint", key="wrong-key-123")
    assert result.exit_code == 1
    assert "Invalid_Key" in result.output
    assert "wrong-key-123" not in result.output


def test_lint_mailchimp_template_by_id(sandbox, project):
    [seeded] = sandbox.seed_mc_templates(
        [
            {
                "mc_template_name": "Cart MC",
                "code": CLEAN.replace("{{currency}}", "{{curency}}"),
                "publish_code": CLEAN.replace("{{currency}}", "{{curency}}"),
            }
        ]
    )
    template_id = seeded["mc_template_id"]
    (project / "templates/campaigns/cart_abandonment.yml").write_text(
        CAMPAIGN_YML.replace("template: cart-abandonment", f"mc_template_id: '{template_id}'")
    )
    result = cli(project, sandbox, "lint")
    assert result.exit_code == 1, result.output
    assert (
        f"mailchimp:mctemplates/{template_id}:6: error: unknown merge tag `curency` "
        "(did you mean `currency`?)"
    ) in result.output


def test_sync_adds_drafts_then_updates_only_drafts(sandbox, project, slug):
    local = project / f"templates/mandrill/{slug}.html"
    local.write_text(CLEAN)
    record_path = project / "templates/.sync-state.json"
    client = sandbox.client(KEY)

    result = cli(project, sandbox, "sync", "--only", slug)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"added        {slug}")
    info = client.templates.info({"name": slug})
    assert info["code"] == CLEAN
    assert info["publish_code"] is None  # a draft: nothing sends with it yet
    assert info["labels"] == ["signalmail"]
    assert info["from_email"] == "hello@shop.example.com"  # defaults from the campaign file
    record = json.loads(record_path.read_text())
    assert record["hosts"][sandbox.api_host][slug]["pushed"] == [code_hash(CLEAN)]

    result = cli(project, sandbox, "sync", "--only", slug)
    assert result.output.startswith(f"unchanged    {slug}")

    client.templates.publish({"name": slug})  # the marketer publishes our draft unchanged
    local.write_text(CLEAN.replace("Total", "Order total"))
    result = cli(project, sandbox, "sync", "--only", slug)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"updated      {slug}: draft only")
    info = client.templates.info({"name": slug})
    assert "Order total" in info["code"]
    assert info["publish_code"] == CLEAN  # published version untouched


def test_sync_never_overwrites_a_marketers_change_unless_forced(sandbox, project, slug):
    local = project / f"templates/mandrill/{slug}.html"
    local.write_text(CLEAN)
    client = sandbox.client(KEY)
    assert cli(project, sandbox, "sync", "--only", slug).exit_code == 0
    marketer = CLEAN.replace("Your cart", "Your lovely cart")
    client.templates.update({"name": slug, "code": marketer, "publish": True})
    local.write_text(CLEAN.replace("Total", "Order total"))

    result = cli(project, sandbox, "sync", "--only", slug, "--dry-run")
    assert result.exit_code == 1
    assert result.output.startswith(f"kept         {slug}: someone changed the published version")
    result = cli(project, sandbox, "sync", "--only", slug)
    assert result.exit_code == 1
    assert "rerun with --force" in result.output
    info = client.templates.info({"name": slug})
    assert info["code"] == marketer
    assert info["publish_code"] == marketer

    result = cli(project, sandbox, "sync", "--only", slug, "--force")
    assert result.exit_code == 0, result.output
    assert "--force: replaced despite changes to the published version" in result.output
    info = client.templates.info({"name": slug})
    assert "Order total" in info["code"]
    assert info["publish_code"] == marketer  # still what goes out until someone publishes


def test_sync_without_record_treats_differences_as_changes(sandbox, project, slug):
    client = sandbox.client(KEY)
    client.templates.add({"name": slug, "code": "<p>made in Mandrill</p>", "publish": False})
    (project / f"templates/mandrill/{slug}.html").write_text(CLEAN)
    result = cli(project, sandbox, "sync", "--only", slug)
    assert result.exit_code == 1
    assert result.output.startswith(f"kept         {slug}: someone changed the draft")
    assert client.templates.info({"name": slug})["code"] == "<p>made in Mandrill</p>"


def test_sync_refuses_broken_local_templates_and_reports_api_errors(sandbox, project, slug):
    (project / f"templates/mandrill/{slug}.html").write_text("{{#if first_name}}never closed")
    (project / "templates/mandrill/zz-other.html").write_text(CLEAN)
    record = SyncRecord(project / "templates/.sync-state.json")
    client = TemplatesClient(KEY, sandbox.api_host, timeout=5)
    sandbox.set_faults(errors={"PaymentRequired": 1.0}, only=["templates/add"])
    try:
        results = sync_templates(client, project / "templates/mandrill", record)
    finally:
        sandbox.set_faults()
    by_slug = {r.slug: r for r in results}
    assert by_slug[slug].action == "error"
    assert "#if is never closed" in by_slug[slug].detail
    assert by_slug["zz-other"].action == "error"
    assert "PaymentRequired" in by_slug["zz-other"].detail
    assert record.pushed(sandbox.api_host, "zz-other") == []  # nothing recorded on failure
    # The next run succeeds (the fault is gone) and pushes what failed.
    results = sync_templates(client, project / "templates/mandrill", record, only={"zz-other"})
    assert [r.action for r in results] == ["added"]
    client.update_template({"name": "zz-other", "code": CLEAN, "publish": False})  # tidy state
    sandbox.client(KEY).templates.delete({"name": "zz-other"})


def test_sync_retries_transient_read_errors(sandbox, project, slug, monkeypatch):
    waits = []
    monkeypatch.setattr(source_module, "sleep", waits.append)
    (project / f"templates/mandrill/{slug}.html").write_text(CLEAN)
    record = SyncRecord(project / "templates/.sync-state.json")
    client = TemplatesClient(KEY, sandbox.api_host, timeout=5)
    sandbox.set_faults(http_5xx=0.5, only=["templates/info"], seed=3)
    try:
        results = [
            sync_templates(client, project / "templates/mandrill", record, only={slug})[0]
            for _ in range(3)
        ]
    finally:
        sandbox.set_faults()
    assert results[0].action == "added"
    assert [r.action for r in results[1:]] == ["unchanged", "unchanged"]
    assert waits, "the 503s should have been retried"


def test_preview_renders_mandrills_published_template(sandbox, project, slug):
    sandbox.client(KEY).templates.add(
        {"name": slug, "code": CLEAN.replace("<h1>Hi", "<h1>Hello"), "publish": True}
    )
    warehouse = project / "w.duckdb"
    write_duckdb(warehouse, [trigger_row(1, T0)])
    result = cli(
        project,
        sandbox,
        "preview",
        "--from-mandrill",
        "--sqlalchemy-url",
        f"duckdb:///{warehouse}",
        "--schema",
        "marts",
        "--out",
        "out",
    )
    assert result.exit_code == 0, result.output
    body = (project / "out/001-t0001.html").read_text()
    assert "<h1>Hello Name1,</h1>" in body
    assert "<li>Shoe 1 x1</li>" in body
