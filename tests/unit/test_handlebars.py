"""The Mandrill handlebars renderer, construct by construct, with exact expected output."""

from __future__ import annotations

import datetime as dt

import pytest
from signalmail.sandbox.handlebars import (
    RenderOptions,
    TemplateError,
    analyze,
    apply_mc_edit,
    mc_edit_regions,
    render,
    render_mailchimp,
)

FIXED = RenderOptions(now=lambda: dt.datetime(2026, 3, 5, 14, 7, 9, tzinfo=dt.UTC))


def r(template: str, **context) -> str:
    return render(template, context, FIXED)


def test_variables_are_escaped_and_triple_braces_are_raw():
    value = "<b>Tom & \"Jerry\"</b> 'x' `y` a=b"
    assert r("{{v}}", v=value) == (
        "&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt; &#x27;x&#x27; &#x60;y&#x60; a&#x3D;b"
    )
    assert r("{{{v}}}|{{&v}}", v="<i>") == "<i>|<i>"


def test_missing_values_render_empty_and_names_are_case_insensitive():
    assert r("[{{nope}}][{{a.b.c}}][{{{nope}}}]", a={"b": None}) == "[][][]"
    assert r("{{first_name}}", FIRST_NAME="Ann") == "Ann"


def test_dotted_paths_indexes_and_scalars():
    context = {"order": {"lines": [{"sku": "A1"}, {"sku": "B2"}], "total": 12.0, "paid": True}}
    assert render("{{order.lines.1.sku}} {{order.total}} {{order.paid}}", context) == "B2 12 true"
    assert render("{{order.lines.length}}", context) == "2"


def test_each_with_this_index_first_last_and_parent_access():
    template = (
        "{{#each items}}{{@index}}={{this}}{{#if @first}}(first){{/if}}"
        "{{#if @last}}(last){{/if}}{{../sep}}{{/each}}"
    )
    assert r(template, items=["a", "b", "c"], sep=";") == "0=a(first);1=b;2=c(last);"


def test_each_over_objects_exposes_key_and_else_renders_when_empty():
    assert r("{{#each m}}{{@key}}:{{this}} {{/each}}", m={"x": 1, "y": 2}) == "x:1 y:2 "
    assert r("{{#each items}}x{{else}}none{{/each}}", items=[]) == "none"
    assert r("{{#each items}}x{{else}}none{{/each}}") == "none"


def test_nested_each_and_root_access():
    context = {
        "cur": "EUR",
        "groups": [{"name": "g1", "items": [{"n": "a"}, {"n": "b"}]}, {"name": "g2", "items": []}],
    }
    template = (
        "{{#each groups}}[{{name}}:{{#each items}}{{n}}{{@index}}{{@root.cur}}"
        "{{else}}empty{{/each}}]{{/each}}"
    )
    assert render(template, context) == "[g1:a0EURb1EUR][g2:empty]"


def test_each_item_names_do_not_fall_back_to_outer_scope():
    # Handlebars.js semantics: inside #each a bare name is the item's field only
    assert r("{{#each items}}{{cur}}|{{../cur}}{{/each}}", items=[{"n": 1}], cur="EUR") == "|EUR"


@pytest.mark.parametrize(
    ("price", "expected"), [(20, "big"), (10, "mid"), (7, "mid"), (5, "small"), ("12", "big")]
)
@pytest.mark.parametrize("keyword", ["elseif", "else if"])
def test_elseif_and_else_if_chain_identically(keyword, price, expected):
    template = (
        f"{{{{#if `price > 10`}}}}big{{{{{keyword} `price >= 6`}}}}mid{{{{else}}}}small{{{{/if}}}}"
    )
    assert r(template, price=price) == expected


def test_else_if_is_not_a_plain_else():
    # pybars3 renders the second branch whenever the first is false, ignoring its condition
    template = "{{#if a}}A{{else if b}}B{{/if}}"
    assert r(template, a=False, b=False) == ""
    assert r(template, a=False, b=True) == "B"


@pytest.mark.parametrize(
    ("expression", "context", "expected"),
    [
        ("qty == 2", {"qty": 2}, True),
        ("qty == '2'", {"qty": 2}, True),
        ("qty === '2'", {"qty": 2}, False),
        ("qty != 3", {"qty": 2}, True),
        ("qty !== 2", {"qty": 2}, False),
        ("qty < 3 && qty > 1", {"qty": 2}, True),
        ("qty <= 1 || tier == 'gold'", {"qty": 2, "tier": "gold"}, True),
        ("!(qty >= 2)", {"qty": 2}, False),
        ("missing > 1", {}, False),
        ('name == "Ann"', {"name": "Ann"}, True),
        ("total >= 99.5", {"total": "100.25"}, True),
        ("user.vip", {"user": {"vip": True}}, True),
    ],
)
def test_backtick_comparisons(expression, context, expected):
    assert render(f"{{{{#if `{expression}`}}}}yes{{{{else}}}}no{{{{/if}}}}", context) == (
        "yes" if expected else "no"
    )


def test_truthiness_follows_handlebars():
    template = "{{#if v}}T{{else}}F{{/if}}"
    for value, expected in [
        (0, "F"),
        ("", "F"),
        ([], "F"),
        (None, "F"),
        (False, "F"),
        ({}, "T"),
        ("0", "T"),
        ([0], "T"),
        (1, "T"),
    ]:
        assert r(template, v=value) == expected, value


def test_unless_and_with():
    assert r("{{#unless vip}}regular{{else}}vip{{/unless}}", vip=False) == "regular"
    assert r("{{#unless vip}}regular{{else}}vip{{/unless}}", vip=True) == "vip"
    assert (
        r("{{#with user}}{{first}} {{../shop}}{{/with}}", user={"first": "Al"}, shop="S") == "Al S"
    )
    assert r("{{#with user}}x{{else}}no user{{/with}}") == "no user"


def test_helpers():
    assert r("{{upper n}} {{lower n}} {{title t}}", n="MiXed", t="hello wORLD-wide web") == (
        "MIXED mixed Hello World-wide Web"
    )
    assert r("{{url q}}", q="red shoes & socks/x?y") == "red%20shoes%20%26%20socks%2Fx%3Fy"
    assert r("{{striptags h}}", h="<p>Hi <b>there</b></p>") == "Hi there"
    assert r("{{date}}|{{date \"Y-m-d H:i:s\"}}|{{date 'D, jS F y'}}") == (
        "05/03/2026|2026-03-05 14:07:09|Thu, 5th March 26"
    )
    assert r('{{date "Y-m-d" when}}', when="2025-12-31T23:00:00Z") == "2025-12-31"


def test_unsub_helper_uses_the_link_builder_unescaped():
    options = RenderOptions(unsub_link=lambda url: f"https://sb/unsub?id=1&to={url}")
    out = render('<a href="{{unsub "https://shop/u"}}">x</a>', {}, options)
    assert out == '<a href="https://sb/unsub?id=1&to=https://shop/u">x</a>'


def test_comments_and_whitespace_control():
    assert r("a {{! note }}b{{!-- {{x}} --}}c") == "a bc"
    assert r("<p>\n  {{~v~}}  \n</p>", v="x") == "<p>x</p>"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{#if a}}x", "#if is never closed"),
        ("{{#if a}}x{{/each}}", "closes #if"),
        ("{{/if}}", "closes nothing"),
        ("{{#each a}}{{elseif b}}{{/each}}", "elseif inside #each"),
        ("{{#if a}}1{{else}}2{{else}}3{{/if}}", "second {{else}}"),
        ("{{#loop a}}{{/loop}}", "unknown block helper #loop"),
        ("{{#if `a >`}}{{/if}}", "ends too early"),
        ("x\n{{{a}}", "line 2"),
    ],
)
def test_syntax_errors_name_the_problem(template, message):
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        render(template, {})


def test_helpers_win_over_fields_unless_the_lookup_is_explicit():
    product = {"url": "https://shop/p?a=1", "title": "red hat"}
    assert r("{{#each items}}{{this.url}}|{{./title}}{{/each}}", items=[product]) == (
        "https://shop/p?a&#x3D;1|red hat"
    )
    with pytest.raises(TemplateError, match="helper url needs 1 argument"):
        r("{{#each items}}{{url}}{{/each}}", items=[product])


@pytest.mark.parametrize(
    "template",
    [
        "{{this.url}}",
        "{{./url}}",
        "{{this/url}}",
        "{{{this.url}}}",
        "{{#if this.url}}{{this.url}}{{/if}}",
    ],
)
def test_every_scoped_spelling_is_a_lookup_not_the_url_helper(template):
    # Handlebars.js: a path that starts with `.` or `this` is never a helper call.
    assert r(
        f"{{{{#each items}}}}{template};{{{{/each}}}}", items=[{"url": "a/b"}, {"url": "c"}]
    ) == ("a/b;c;")


def test_helper_calls_and_lookups_around_helper_names():
    ctx = {"item": {"url": "x y"}, "url": "top", "title": "ignored"}
    assert r("{{item.url}}", **ctx) == "x y"  # dotted path: a lookup
    assert r("{{#each list}}{{../url}}{{/each}}", list=[1], **ctx) == "top"  # parent: a lookup
    assert r("{{#with item}}{{url this.url}}{{/with}}", **ctx) == "x%20y"  # helper on a field
    assert r("{{#with item}}{{url url}}{{/with}}", **ctx) == "x%20y"  # argument: a lookup
    with pytest.raises(TemplateError, match="helper title needs 1 argument"):
        r("{{title}}", **ctx)  # bare helper name: the helper wins over the merge var


def test_analyze_counts_scoped_helper_names_as_variables():
    found = analyze("{{this/url}}{{./title}}{{upper name}}")
    assert found.helpers == {"upper"}
    assert {"url", "title", "name"} <= found.variables


def test_unknown_helper_with_arguments_is_an_error():
    with pytest.raises(TemplateError, match="missing helper 'uper'"):
        r("{{uper name}}", name="x")


def test_analyze_reports_top_level_names_helpers_and_unsub():
    template = (
        "{{first_name}}{{#each products}}{{name}}{{upper ../currency}}{{/each}}"
        "{{#if `cart_total > 10`}}{{title search_term}}{{/if}}{{@root.order_id}}"
        '{{unsub "https://x"}}'
    )
    analysis = analyze(template)
    assert analysis.variables == {
        "first_name",
        "products",
        "currency",
        "cart_total",
        "search_term",
        "order_id",
    }
    assert analysis.helpers == {"upper", "title", "unsub"}
    assert analysis.has_unsub
    assert not analyze("{{a}}").has_unsub


def test_mailchimp_merge_language():
    source = (
        "Hi *|FNAME|*, *|IF:VIP|*gold*|ELSEIF:TIER=silver|*silver*|ELSE:|*basic*|END:IF|*"
        " *|missing|*"
    )
    assert render_mailchimp(source, {"fname": "Ann", "VIP": "", "tier": "silver"}) == (
        "Hi Ann, silver *|missing|*"
    )
    assert render_mailchimp("*|IFNOT:VIP|*no*|END:IF|*", {"vip": "yes"}) == ""
    with pytest.raises(TemplateError, match="never closed"):
        render_mailchimp("*|IF:A|*x", {})


def test_mc_edit_regions_are_replaced_by_depth():
    html = (
        '<div mc:edit="hero"><div>old <div>nested</div></div></div>'
        "<td mc:edit='footer'>keep</td><img mc:edit=\"logo\" src=x>"
    )
    assert mc_edit_regions(html) == ["hero", "footer", "logo"]
    out = apply_mc_edit(html, {"hero": "<p>new</p>", "unknown": "ignored"})
    assert (
        out
        == '<div mc:edit="hero"><p>new</p></div>'
        + "<td mc:edit='footer'>keep</td><img mc:edit=\"logo\" src=x>"
    )
    with pytest.raises(TemplateError, match="never closed"):
        apply_mc_edit('<div mc:edit="a">x', {"a": "y"})


def test_a_backslash_escapes_a_mustache_as_in_handlebars_js():
    assert render(r"a \{{x}} b {{x}}", {"x": "X"}) == "a {{x}} b X"
    assert render(r"c \\{{x}}", {"x": "X"}) == "c \\X"  # an escaped backslash: the tag is live
    assert render(r"\{{{raw}}} {{{raw}}}", {"raw": "<b>"}) == "{{{raw}}} <b>"
    with pytest.raises(TemplateError, match="closes nothing"):  # the opening tag is text now
        render(r"\{{#if x}}y{{/if}}", {"x": 1})
