"""`signalmail templates lint --local` and `preview`, offline, against files the tests write."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from signalmail.cli import main
from signalmail.templates.lint import lint_template
from target_mailchimp_transactional.campaigns import load_campaign

from tests.helpers import REPO_ROOT
from tests.helpers.templates import BLOCK_J2, BROKEN, CAMPAIGN_YML, CLEAN
from tests.helpers.warehouse import T0, trigger_row, write_duckdb


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder laid out like the repository's templates/."""
    (tmp_path / "templates/campaigns").mkdir(parents=True)
    (tmp_path / "templates/blocks").mkdir()
    (tmp_path / "templates/mandrill").mkdir()
    (tmp_path / "templates/campaigns/cart_abandonment.yml").write_text(CAMPAIGN_YML)
    (tmp_path / "templates/blocks/cart_items.html.j2").write_text(BLOCK_J2)
    (tmp_path / "templates/mandrill/cart-abandonment.html").write_text(CLEAN)
    return tmp_path


def run(cwd: Path, *args: str):
    """Invoke `signalmail templates ...` from `cwd`, as an operator in the project folder."""
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, ["templates", *args], catch_exceptions=False)
    finally:
        os.chdir(previous)


def test_lint_clean_template_passes(project):
    result = run(project, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 0, result.output
    assert "0 error(s), 0 warning(s)" in result.output


def test_lint_broken_template_reports_each_problem_with_its_line(project):
    (project / "templates/mandrill/cart-abandonment.html").write_text(BROKEN)
    result = run(project, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 1
    lines = [
        line for line in result.output.splitlines() if ": error: " in line or ": warning: " in line
    ]
    template = "templates/mandrill/cart-abandonment.html"
    expected = [
        (f"{template}:3: error: unknown merge tag `fist_name` (did you mean `first_name`?)"),
        f"{template}:5: error: unknown helper `shout`",
        f"{template}:5: error: `nmae` is not a product field inside #each products "
        "(did you mean `name`?)",
        f"{template}:6: error: merge tag `email`: `email` is a trigger field, but campaign "
        "cart_abandonment does not send it",
        f"{template}:6: warning: Mailchimp merge tag `*|FNAME|*` is not merged",
        f"{template}:7: error: no unsubscribe link",
        "templates/campaigns/cart_abandonment.yml:12: error: block cart_items.html.j2 fills "
        "mc:edit region `cart_items`, but templates/mandrill/cart-abandonment.html has no "
        'mc:edit="cart_items" (it has: cart_item)',
    ]
    for want in expected:
        assert any(line.startswith(want) for line in lines), (
            f"missing {want!r} in:\n{result.output}"
        )
    assert len(lines) == len(expected), result.output
    assert "6 error(s), 1 warning(s)" in result.output


def test_lint_syntax_error_and_unknown_block_helper_name_the_line(project):
    template = project / "templates/mandrill/cart-abandonment.html"
    template.write_text(
        CLEAN.replace("{{#each products}}", "{{#loop products}}").replace("{{/each}}", "{{/loop}}")
    )
    result = run(project, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 1
    assert (
        "templates/mandrill/cart-abandonment.html:5: error: handlebars syntax: "
        "unknown block helper #loop"
    ) in result.output
    template.write_text(CLEAN.replace("{{/if}},</h1>", ",</h1>"))
    result = run(project, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 1
    assert re.search(r"cart-abandonment\.html:\d+: error: handlebars syntax: .*#if", result.output)


def test_lint_missing_local_template_points_at_the_campaign_line(project):
    (project / "templates/mandrill/cart-abandonment.html").unlink()
    result = run(project, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 1
    assert re.search(
        r"templates/campaigns/cart_abandonment\.yml:2: error: mandrill:templates/cart-abandonment:"
        r" no file .*cart-abandonment\.html",
        result.output,
    )


def test_lint_invalid_campaign_file_is_named(project):
    (project / "templates/campaigns/cart_abandonment.yml").write_text(
        CAMPAIGN_YML.replace("from_email: hello@shop.example.com\n", "")
    )
    result = run(project, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 1
    assert "cart_abandonment.yml" in result.output
    assert "from_email" in result.output


def test_lint_without_key_or_local_is_a_usage_error(project, monkeypatch):
    monkeypatch.delenv("SIGNALMAIL_MANDRILL_API_KEY", raising=False)
    result = run(project, "lint")
    assert result.exit_code == 2
    assert "--api-key" in result.output


def test_lint_escaped_block_var_and_outer_scope_warnings(project):
    campaign = load_campaign(project / "templates/campaigns/cart_abandonment.yml")
    variant = campaign.variants[0]
    code = CLEAN.replace(
        "<p>Total", "{{block_cart_items}} {{#each products}}{{../../currency}}{{/each}}<p>Total"
    )
    findings = [str(f) for f in lint_template(code, "t.html", campaign, variant)]
    assert any("t.html:6: warning: `{{block_cart_items}}` holds HTML" in f for f in findings)
    assert any(
        "t.html:6: error: `../../currency` climbs above the top level" in f for f in findings
    )


@pytest.mark.skipif(
    not (REPO_ROOT / "templates/mandrill").is_dir(), reason="no starter templates in the repo yet"
)
def test_repository_starter_templates_lint_clean():
    result = run(REPO_ROOT, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 0, result.output


def test_lint_field_shadowed_by_a_helper(project):
    campaign = load_campaign(project / "templates/campaigns/cart_abandonment.yml")
    code = CLEAN.replace("<b>{{upper name}}</b>", '<a href="{{url}}">{{name}}</a>')
    findings = [str(f) for f in lint_template(code, "t.html", campaign, campaign.variants[0])]
    assert findings == [
        "t.html:5: error: `{{url}}` calls Mandrill's `url` helper (helpers win over fields of "
        "the same name), so the `url` value never shows; write `{{this.url}}`"
    ]
    for spelling in ("{{this.url}}", "{{./url}}", "{{this/url}}", "{{{this.url}}}"):
        fixed = CLEAN.replace("<b>{{upper name}}</b>", f'<a href="{spelling}">{{{{name}}}}</a>')
        assert lint_template(fixed, "t.html", campaign, campaign.variants[0]) == [], spelling


def test_lint_wants_a_guard_where_a_null_would_leave_a_stray_label(project):
    campaign = load_campaign(project / "templates/campaigns/cart_abandonment.yml")
    variant = campaign.variants[0]
    code = CLEAN.replace(
        "{{#if cart_total}}<p>Total {{cart_total}} {{currency}}</p>{{/if}}",
        "<p>Total: {{cart_total}}</p>",
    ).replace("<b>{{upper name}}</b> {{price}}", "<b>{{upper name}}</b> Price {{price}}")
    findings = [str(f) for f in lint_template(code, "t.html", campaign, variant)]
    assert [f.split(": error: ")[0] for f in findings] == ["t.html:5", "t.html:6"]
    assert "`{{price}}` can be null" in findings[0]
    assert "wrap both in {{#if cart_total}}" in findings[1]
    guarded = code.replace(
        "<p>Total: {{cart_total}}</p>", "{{#if cart_total}}Total: {{cart_total}}{{/if}}"
    )
    guarded = guarded.replace("Price {{price}}", "{{#if `price > 0`}}Price {{price}}{{/if}}")
    assert lint_template(guarded, "t.html", campaign, variant) == []


def test_lint_reads_the_blocks_too_and_wants_the_same_guards(project):
    block = project / "templates/blocks/cart_items.html.j2"
    block.write_text(
        "{% for p in products | default([]) %}\n"
        "<li>{{ p.name }} x{{ p.quantity }}</li>\n"  # a null quantity leaves "x"
        "{% endfor %}\n"
        "<p>Total: {{ cart_total }}</p>\n"  # and "Total:" alone
        '<a href="{{ p_url }}">{{ first_name | default("there") }}</a>\n'  # fine: filtered
    )
    result = run(project, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if "cart_items.html.j2:" in line]
    assert [line.split(": error: ")[0].rsplit(":", 1)[1] for line in lines] == ["2", "4"]
    assert "`{{ p.quantity }}` can be null" in lines[0]
    assert "{% if cart_total %}" in lines[1]

    block.write_text(
        "{% for p in products | default([]) %}\n"
        "<li>{{ p.name }}{% if p.quantity and p.quantity > 1 %} x{{ p.quantity }}{% endif %}</li>\n"
        "{% endfor %}\n"
        "{% if cart_total %}<p>Total: {{ cart_total }}</p>{% endif %}\n"
    )
    result = run(project, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 0, result.output


def test_lint_scoped_typo_inside_each_is_still_a_product_field_error(project):
    # `this/` must resolve against the product, exactly as the renderer does.
    campaign = load_campaign(project / "templates/campaigns/cart_abandonment.yml")
    code = CLEAN.replace("<b>{{upper name}}</b>", '<a href="{{this/ulr}}">{{name}}</a>')
    findings = [str(f) for f in lint_template(code, "t.html", campaign, campaign.variants[0])]
    assert len(findings) == 1
    assert findings[0].startswith("t.html:5: error: `this/ulr` is not a product field")
    assert "did you mean `url`?" in findings[0]


# ------------------------------------------------------------------------------ preview


@pytest.fixture
def warehouse(project: Path) -> Path:
    path = project / "warehouse.duckdb"
    rows = [trigger_row(n, T0 + dt.timedelta(minutes=n)) for n in range(1, 4)]
    rows.append(trigger_row(4, T0 + dt.timedelta(minutes=4), campaign="post_purchase"))
    rows.append(trigger_row(5, T0 + dt.timedelta(minutes=5), payload="[1, 2]"))
    write_duckdb(path, rows)
    return path


def test_preview_writes_each_rendered_email_and_an_index(project, warehouse):
    out = project / "output/preview"
    result = run(
        project,
        "preview",
        "--sqlalchemy-url",
        f"duckdb:///{warehouse}",
        "--schema",
        "marts",
        "--campaign",
        "cart_abandonment",
        "-n",
        "3",
    )
    assert result.exit_code == 1, result.output  # t0005's payload is not an object
    # Newest first: t0005 (bad payload: listed, no file), t0003, t0002.
    assert sorted(p.name for p in out.glob("0*.html")) == ["002-t0003.html", "003-t0002.html"]
    body = (out / "003-t0002.html").read_text()
    assert "<h1>Hi Name2,</h1>" in body  # {{title first_name}} from the row
    assert "<b>SHOE 2</b> 10.5 EUR" in body  # {{upper name}}, {{../currency}} in #each
    assert '<div mc:edit="cart_items"><ul class="cart"><li>Shoe 2 x1</li></ul>' in body
    assert "<p>Your cart</p>" not in body  # the region's default content was replaced
    assert "Total 21 EUR" in body  # numbers print as Handlebars.js prints them
    assert "Free shipping" not in body
    assert "Almost!" not in body  # 21 <= 50
    assert 'href="https://shop.example.com/unsubscribe"' in body
    assert "<h1>Hi there,</h1>" in (out / "002-t0003.html").read_text()  # no first_name
    index = (out / "index.html").read_text()
    assert "href='003-t0002.html'>Name2, your cart misses you</a>" in index
    assert "t0005" in index
    assert "payload is not a JSON object" in index
    assert "t0005 (cart_abandonment): payload is not a JSON object" in result.output
    assert "2 of 3 trigger(s) rendered" in result.output


PRICED = """\
<!doctype html>
<html><body>
<h1>Hi {{#if first_name}}{{first_name}}{{else}}there{{/if}},</h1>
<div mc:edit="cart_items"><p>Your cart</p></div>
{{#each products}}<b>{{name}}</b> <i>{{price_display}}</i>
{{#if this.url}}<a href="{{this.url}}">see</a>{{/if}}{{/each}}
<p><a href="{{unsub 'https://shop.example.com/unsubscribe'}}">Unsubscribe</a></p>
</body></html>
"""


def test_preview_prepares_the_payload_as_the_target_sends_it(project):
    """Prices in the recipient's locale, unsafe links dropped, a one-line name: as sent."""
    (project / "templates/mandrill/cart-abandonment.html").write_text(PRICED)
    payload = {
        "cart_total": 21.0,
        "currency": "EUR",
        "products": [
            {"product_id": "p1", "name": "Shoe", "price": 10.5, "quantity": 1,
             "url": "javascript:alert(1)"},
            {"product_id": "p2", "name": "Sock", "price": 1234.5, "quantity": 1,
             "url": "https://evil.example.net/p2"},
        ],
    }  # fmt: skip
    row = trigger_row(
        1, T0, locale="de-DE", first_name="Ann\r\nBcc: x@evil.example", payload=json.dumps(payload)
    )
    path = project / "priced.duckdb"
    write_duckdb(path, [row])
    out = project / "p"
    args = ["--sqlalchemy-url", f"duckdb:///{path}", "--schema", "marts", "--out", str(out)]
    result = run(project, "preview", *args, "--link-domain", "shop.example.com")
    assert result.exit_code == 0, result.output
    body = (out / "001-t0001.html").read_text()
    assert "<b>Shoe</b> <i>10,50\xa0€</i>\n" in body  # de-DE, from the target's money module
    assert "<b>Sock</b> <i>1.234,50\xa0€</i>\n" in body
    assert body.count("href=") == 1  # only the unsubscribe link: both product links dropped
    assert "<h1>Hi Ann Bcc: x@evil.example,</h1>" in body  # the name on one line

    # Without --link-domain, an https link to any host is kept; javascript: never is.
    result = run(project, "preview", *args)
    assert result.exit_code == 0, result.output
    body = (out / "001-t0001.html").read_text()
    assert '<a href="https://evil.example.net/p2">see</a>' in body
    assert "javascript:" not in body


def test_preview_lists_rows_without_a_campaign_file(project, warehouse):
    out = project / "p"
    result = run(
        project,
        "preview",
        "--sqlalchemy-url",
        f"duckdb:///{warehouse}",
        "--schema",
        "marts",
        "--trigger-id",
        "t0004",
        "--trigger-id",
        "t0001",
        "--out",
        str(out),
    )
    assert result.exit_code == 1
    assert sorted(p.name for p in out.glob("0*.html")) == ["002-t0001.html"]
    assert "no campaign file post_purchase.yml" in (out / "index.html").read_text()
    assert "1 of 2 trigger(s) rendered" in result.output


def test_preview_missing_table_and_locked_free_read(project, warehouse):
    result = run(
        project, "preview", "--sqlalchemy-url", f"duckdb:///{warehouse}", "--schema", "nope"
    )
    assert result.exit_code == 1
    assert "table 'email_triggers' not found in nope" in result.output
    result = run(project, "preview", "--sqlalchemy-url", f"duckdb:///{project / 'none.duckdb'}")
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_preview_uses_payload_values_verbatim_and_escapes_them(project):
    path = project / "w.duckdb"
    payload = {
        "cart_total": 12,
        "currency": "EUR",
        "products": [
            {
                "name": "<b>Bold</b> & co",
                "price": 12,
                "quantity": 2,
                "url": "https://shop.example.com/p/1",
            }
        ],
    }
    write_duckdb(path, [trigger_row(1, T0, first_name="Zoë", payload=json.dumps(payload))])
    out = project / "out"
    result = run(
        project,
        "preview",
        "--sqlalchemy-url",
        f"duckdb:///{path}",
        "--schema",
        "marts",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    body = (out / "001-t0001.html").read_text()
    assert "Zoë" in body
    assert "&lt;B&gt;BOLD&lt;/B&gt; &amp; CO" in body  # handlebars escapes merge values
    assert "<li>&lt;b&gt;Bold&lt;/b&gt; &amp; co x2</li>" in body  # Jinja2 autoescapes too
    assert "Free shipping" not in body
    assert "Almost!" not in body


def test_lint_checks_the_campaign_subject_line(project):
    path = project / "templates/campaigns/cart_abandonment.yml"
    path.write_text(CAMPAIGN_YML.replace("{{first_name}}, your", "{{firstname}}, your"))
    result = run(project, "lint", "--local", "templates/mandrill")
    assert result.exit_code == 1
    assert (
        "templates/campaigns/cart_abandonment.yml:5: error: subject: unknown merge tag "
        "`firstname` (did you mean `first_name`?)"
    ) in result.output
