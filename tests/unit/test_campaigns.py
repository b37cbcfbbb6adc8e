"""Campaign files: the shipped ones load; every kind of mistake is named by file and field."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from target_mailchimp_transactional.blocks import BlockRenderer, BlockRenderError
from target_mailchimp_transactional.campaigns import (
    CampaignConfigError,
    add_utm,
    load_campaign,
    load_campaigns,
)

REPO = Path(__file__).resolve().parents[2]
CAMPAIGNS = REPO / "templates" / "campaigns"
BLOCKS = REPO / "templates" / "blocks"

GOOD = """
campaign: {name}
template: slug-{name}
from_email: shop@example.com
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(text)
    return path


def test_shipped_campaigns_load_and_blocks_compile():
    campaigns = load_campaigns(CAMPAIGNS, BLOCKS)
    # one campaign file per campaign the dbt project decides for (var `campaigns`)
    dbt_vars = yaml.safe_load(
        (CAMPAIGNS.parents[1] / "dbt_project" / "dbt_project.yml").read_text()
    )
    assert set(campaigns) == set(dbt_vars["vars"]["campaigns"])
    assert "search_abandonment" in campaigns
    BlockRenderer(BLOCKS).check(campaigns)
    cart = campaigns["cart_abandonment"]
    assert [v.name for v in cart.variants] == ["control", "urgency"]
    assert cart.utm["utm_campaign"] == "cart_abandonment"
    assert all(v.template == "cart-abandonment" for v in cart.variants)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("campaign: c\nfrom_email: a@b.c\n", "template", "exactly one of"),
        ("campaign: c\ntemplate: t\nmc_template_id: 5\nfrom_email: a@b.c\n", "template",
         "exactly one of"),
        ("campaign: c\ntemplate: t\n", "(top level)", "'from_email' is a required property"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\nsubjet: Hi\n", "(top level)", "subjet"),
        ("campaign: c\ntemplate: t\nfrom_email: not-an-email\n", "from_email", "does not match"),
        ("campaign: c\ntemplate: t\nfrom_email: hello@shop\n", "from_email", "does not match"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\nholdout_share: 1.5\n", "holdout_share",
         "maximum"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\ntags: [_private]\n", "tags[0]", "match"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\nmerge_vars: [{field: x}]\n",
         "merge_vars[0]", "not valid"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\nmerge_vars: [ok, _secret]\n",
         "merge_vars[1]", "may not start with _"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\nvariants: [{name: a}, {name: a}]\n",
         "variants[1].name", "duplicate"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\nvariants: [{name: a, weight: 0}]\n",
         "variants[0].weight", "less than or equal"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\n"
         "blocks: [{region: r, template: nope.html.j2}]\n", "blocks[0].template", "not found"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\nblocks: [{region: r, template: x.txt}]\n",
         "blocks[0].template", "does not match"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\nblocks: [{region: cart-items, template: "
         "cart_items.html.j2}, {region: cart_items, template: cart_items.html.j2}]\n", "blocks",
         "share one merge var"),
        ("campaign: other\ntemplate: t\nfrom_email: a@b.c\n", "campaign", "file is named c.yml"),
        ("campaign: c\ntemplate: t\nfrom_email: a@b.c\nmc_template_version: latest\n",
         "mc_template_version", "is not one of"),
    ],
)  # fmt: skip
def test_invalid_campaign_names_file_and_field(tmp_path, text, field, words):
    path = write(tmp_path, "c", text)
    with pytest.raises(CampaignConfigError) as err:
        load_campaign(path, BLOCKS)
    message = str(err.value)
    assert str(path) in message
    assert f"field `{field}`" in message
    assert words in message


def test_yaml_syntax_and_non_mapping_are_named(tmp_path):
    bad = write(tmp_path, "broken", "campaign: [unclosed\n")
    with pytest.raises(CampaignConfigError, match=r"broken\.yml: not valid YAML"):
        load_campaign(bad)
    listy = write(tmp_path, "listy", "- a\n- b\n")
    with pytest.raises(CampaignConfigError, match=r"listy\.yml: must be a mapping"):
        load_campaign(listy)


def test_all_bad_files_reported_together_and_empty_dir_refused(tmp_path):
    write(tmp_path, "one", "campaign: one\nfrom_email: a@b.c\n")
    write(tmp_path, "two", "campaign: two\ntemplate: t\n")
    write(tmp_path, "ok", GOOD.format(name="ok"))
    with pytest.raises(CampaignConfigError) as err:
        load_campaigns(tmp_path)
    assert "one.yml" in str(err.value)
    assert "two.yml" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CampaignConfigError, match="no campaign files"):
        load_campaigns(empty)
    with pytest.raises(CampaignConfigError, match="does not exist"):
        load_campaigns(tmp_path / "missing")


def test_block_that_does_not_compile_fails_at_start(tmp_path):
    blocks = tmp_path / "blocks"
    blocks.mkdir()
    (blocks / "bad.html.j2").write_text("{% for x in %}")
    write(tmp_path, "c", GOOD.format(name="c") + "blocks: [{region: r, template: bad.html.j2}]\n")
    campaigns = load_campaigns(tmp_path, blocks)
    with pytest.raises(BlockRenderError, match=r"c\.yml: block 'bad.html.j2' does not compile"):
        BlockRenderer(blocks).check(campaigns)


def test_shared_block_that_cannot_render_fails_at_start(tmp_path):
    """A shared block is rendered once per variant, with the same context every time: an error
    in it is found at start, not after a call's triggers were marked `sending`."""
    blocks = tmp_path / "blocks"
    blocks.mkdir()
    (blocks / "hero.html.j2").write_text("<h1>{{ product.name }}</h1>")
    (blocks / "ok.html.j2").write_text("<p>{{ campaign }} {{ utm.utm_source }}</p>")
    shared = "blocks: [{region: r, template: %s, mode: shared}]\n"
    write(tmp_path, "c", GOOD.format(name="c") + shared % "hero.html.j2")
    with pytest.raises(
        BlockRenderError, match=r"c\.yml: shared block 'hero.html.j2': 'product' is undefined"
    ):
        BlockRenderer(blocks).check(load_campaigns(tmp_path, blocks))
    write(tmp_path, "c", GOOD.format(name="c") + shared % "ok.html.j2")
    BlockRenderer(blocks).check(load_campaigns(tmp_path, blocks))


def test_variant_assignment_is_deterministic_and_weighted(tmp_path):
    text = GOOD.format(name="c") + "variants: [{name: a, weight: 3}, {name: b, weight: 1}]\n"
    first = load_campaign(write(tmp_path, "c", text))
    again = load_campaign(write(tmp_path, "c", text))
    picks = [first.variant_for(f"user-{i}", f"t{i}").name for i in range(8000)]
    assert picks == [again.variant_for(f"user-{i}", f"other-{i}").name for i in range(8000)]
    share = Counter(picks)["a"] / len(picks)
    assert 0.72 < share < 0.78  # 3:1 weights
    # Without a user the trigger id decides, still stably.
    assert first.variant_for(None, "t-1") == first.variant_for(None, "t-1")


def test_variant_overrides_template_kind_and_subject(tmp_path):
    text = GOOD.format(name="c") + (
        "subject: Base\nvariants:\n  - {name: a}\n  - {name: b, mc_template_id: '42', "
        "subject: Other}\n"
    )
    campaign = load_campaign(write(tmp_path, "c", text))
    a, b = campaign.variants
    assert (a.template, a.mc_template_id, a.subject) == ("slug-c", None, "Base")
    assert (b.template, b.mc_template_id, b.subject) == (None, "42", "Other")


def test_merge_vars_keep_arrays_rename_fields_and_require(tmp_path):
    text = GOOD.format(name="c") + (
        "merge_vars:\n  - products\n  - first_name\n  - {name: TOTAL, field: cart.total}\n"
        "  - {name: order_id, field: order_id, required: true}\n"
        "  - {name: coupon, field: coupon, default: WELCOME}\n"
        "utm: {source: sm, medium: email}\n"
    )
    campaign = load_campaign(write(tmp_path, "c", text))
    payload = {
        "products": [{"name": "Shoe", "url": "https://s.example/p?color=red&utm_source=old"}],
        "cart": {"total": 12.5},
        "order_id": "o1",
    }
    got = {v["name"]: v["content"] for v in campaign.merge_vars_for(payload, {"first_name": "Ann"})}
    assert got["first_name"] == "Ann"
    assert got["TOTAL"] == 12.5
    assert got["coupon"] == "WELCOME"
    assert isinstance(got["products"], list)
    assert got["products"][0]["url"] == (
        "https://s.example/p?color=red&utm_source=sm&utm_medium=email&utm_campaign=c"
    )
    assert payload["products"][0]["url"].endswith("utm_source=old")  # input untouched
    with pytest.raises(KeyError, match="order_id"):
        campaign.merge_vars_for({"products": []}, {})


def test_add_utm_edge_cases():
    params = {"utm_source": "s"}
    assert add_utm("mailto:a@b.c", params) == "mailto:a@b.c"
    assert add_utm("https://x.example/#top", params) == "https://x.example/?utm_source=s#top"


def test_holdout_fallback_is_deterministic_and_near_share(tmp_path):
    campaign = load_campaign(write(tmp_path, "c", GOOD.format(name="c") + "holdout_share: 0.2\n"))
    held = [campaign.holdout_fallback(f"u{i}", f"t{i}") for i in range(5000)]
    assert held == [campaign.holdout_fallback(f"u{i}", "x") for i in range(5000)]
    assert 0.17 < sum(held) / len(held) < 0.23
    none = load_campaign(write(tmp_path, "c", GOOD.format(name="c")))
    assert not any(none.holdout_fallback(f"u{i}", "t") for i in range(200))


def test_holdout_fallback_puts_each_user_in_the_arm_the_dbt_model_does(tmp_path):
    """The dbt rule (int_trigger_decisions, hash_fraction in macros/casting.sql, its DuckDB
    variant) computed by DuckDB itself, against the target's fallback, user by user."""
    import duckdb

    campaign = load_campaign(write(tmp_path, "c", GOOD.format(name="c") + "holdout_share: 0.1\n"))
    users = [f"user-{i}" for i in range(3000)] + ["Zoë", "o'brien", "u|c"]
    dbt_arm = duckdb.execute(
        "select user_id, cast(('0x' || substr(md5(user_id || '|' || 'c'), 1, 8)) as bigint)"
        " / 4294967296.0 < 0.1 from unnest(?) as t(user_id)",
        [users],
    ).fetchall()
    assert [campaign.holdout_fallback(user, "t") for user, _ in dbt_arm] == [
        held for _, held in dbt_arm
    ]
    assert 200 < sum(held for _, held in dbt_arm) < 400


@pytest.mark.parametrize(
    ("block", "context"),
    [
        ("cart_items.html.j2", {"products": [{"name": "Boot", "quantity": 2}]}),
        (
            "product_grid.html.j2",
            {"recommendations": [{"name": "Boot", "image_url": "https://c/i.png"}]},
        ),
        ("viewed_products.html.j2", {"products": [{"name": "Boot"}]}),
    ],
)
def test_a_product_without_url_or_price_shows_no_dead_link_or_stray_separator(block, context):
    """A URL dropped as unsafe, or never sent, must not become an empty href."""
    html = BlockRenderer(BLOCKS).env.get_template(block).render(utm={}, **context)
    assert "Boot" in html
    assert "href" not in html
    assert "&middot;" not in html
