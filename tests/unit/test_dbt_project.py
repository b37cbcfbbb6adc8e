"""Project hygiene of dbt_project/, checked offline in milliseconds.

What a reviewer of an analytics-engineering project checks by hand: one YAML per model with a
grain, the email_triggers contract equal to docs/contracts.md, every var documented, dialect
macros implemented for every adapter, no datediff, no hard-coded now.
"""

from __future__ import annotations

import re

import pytest
import yaml
from testkit import raw_events

from tests.helpers import REPO_ROOT

PROJECT = REPO_ROOT / "dbt_project"
MODELS = sorted((PROJECT / "models").rglob("*.sql"))


def _yaml(path):
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("sql", MODELS, ids=lambda p: p.stem)
def test_every_model_has_its_own_yaml_with_grain_and_described_columns(sql):
    spec = _yaml(sql.with_suffix(".yml"))
    (model,) = [m for m in spec["models"] if m["name"] == sql.stem]
    assert model["description"].strip().lower().startswith("grain:"), sql.stem
    assert model.get("columns"), sql.stem
    for column in model["columns"]:
        assert column.get("description"), f"{sql.stem}.{column['name']} lacks a description"


@pytest.mark.parametrize("sql", MODELS, ids=lambda p: p.stem)
def test_models_use_one_clock_and_no_datediff(sql):
    text = sql.read_text().lower()
    assert "datediff" not in text
    assert "current_timestamp" not in text
    assert "now()" not in text


def test_email_triggers_contract_matches_docs_contracts():
    contracts = (REPO_ROOT / "docs" / "contracts.md").read_text()
    section = contracts.split("## 4.")[1].split("## 5.")[0]
    documented = re.findall(r"^\| (\w+) \| (\w+)", section, flags=re.MULTILINE)
    documented = [(name, kind) for name, kind in documented if name != "column"]
    spec = _yaml(PROJECT / "models" / "marts" / "email_triggers.yml")
    model = spec["models"][0]
    assert model["config"]["contract"]["enforced"] is True
    columns = [(c["name"], c["data_type"]) for c in model["columns"]]
    assert [name for name, _ in columns[: len(documented)]] == [name for name, _ in documented]
    for (name, kind), (doc_name, doc_kind) in zip(columns, documented, strict=False):
        assert kind == doc_kind, f"{name}: {kind} in the model, {doc_kind} in contracts.md"
        assert name == doc_name


def test_every_var_is_documented_with_its_default():
    project = _yaml(PROJECT / "dbt_project.yml")
    guide = (REPO_ROOT / "docs" / "signals.md").read_text()
    for name in project["vars"]:
        assert f"`{name}`" in guide, f"var {name} is not documented in docs/signals.md"
    assert project["flags"]["send_anonymous_usage_stats"] is False


def test_campaign_settings_cover_every_campaign_file():
    campaigns = _yaml(PROJECT / "dbt_project.yml")["vars"]["campaigns"]
    files = {
        _yaml(path)["campaign"] for path in (REPO_ROOT / "templates" / "campaigns").glob("*.yml")
    }
    assert set(campaigns) == files
    assert {"cart_abandonment", "search_abandonment"} <= files
    required = {"priority", "holdout_share", "cooldown_hours", "send_window_hours"}
    # docs/signals.md, predicted intent: a campaign may add these two, and a user who does
    # must not find this test refusing what the guide told them to write
    optional = {"min_purchase_probability", "daily_limit"}
    for name, settings in campaigns.items():
        assert required <= set(settings) <= required | optional, name
        assert 0 <= settings["holdout_share"] < 1, name
        assert 0 <= settings.get("min_purchase_probability", 0) <= 1, name
        assert settings.get("daily_limit", 1) >= 1, name
    priorities = [settings["priority"] for settings in campaigns.values()]
    assert len(set(priorities)) == len(priorities), "priorities must break ties"


DISPATCHED = re.compile(r"adapter\.dispatch\('(\w+)', 'signalmail'\)")


MACRO = re.compile(r"{% macro (\w+)\(.*?{%-? endmacro", re.S)


def test_dispatch_macros_run_on_duckdb_and_postgres_and_name_what_is_missing_elsewhere():
    macros = "\n".join(p.read_text() for p in (PROJECT / "macros").rglob("*.sql"))
    bodies = {match.group(1): match.group(0) for match in MACRO.finditer(macros)}
    for name in set(DISPATCHED.findall(macros)):
        if name.startswith("test_"):
            continue
        default = bodies.get(f"default__{name}")
        assert default is not None, f"{name}: another adapter must get a default__ variant"
        for adapter in ("duckdb", "postgres"):
            own = f"{adapter}__{name}" in bodies
            assert own or "unsupported_adapter" not in default, f"{name} has no {adapter} path"
    # variants that never ran are not shipped (docs/signals.md, "Other warehouses")
    assert not [name for name in bodies if name.startswith(("snowflake__", "bigquery__"))]


def test_selectors_exclude_nightly_models_from_the_tick():
    selectors = {s["name"]: s for s in _yaml(PROJECT / "selectors.yml")["selectors"]}
    definition = selectors["trigger_path"]["definition"]["union"]
    assert {"method": "fqn", "value": "email_triggers", "parents": True} in definition
    excluded = definition[1]["exclude"]
    assert {"method": "tag", "value": "nightly"} in excluded
    # Ephemeral models are compiled into the tables that read them, selected or not.
    assert {"method": "config.materialized", "value": "ephemeral"} in excluded


def test_no_model_is_a_view_and_compile_time_models_are_ephemeral(tmp_path):
    """The tick selects no view (it would never rebuild one), and on Postgres a view over a
    model is dropped with it by a full refresh (drop ... cascade): models in between are
    ephemeral instead, and staging is incremental by its folder's default."""
    from dbt.cli.main import dbtRunner

    paths = ["--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")]
    result = dbtRunner().invoke(
        ["parse", "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT), *paths]
    )
    assert result.success, result.exception
    models = [n for n in result.result.nodes.values() if n.resource_type == "model"]
    assert [n.name for n in models if n.config.materialized == "view"] == []
    staging = {n.name: n.config.materialized for n in models if n.fqn[1] == "staging"}
    assert {m for name, m in staging.items() if name.startswith("stg_rudderstack__")} == {
        "incremental"
    }
    ephemeral = {n.name for n in models if n.config.materialized == "ephemeral"}
    assert {"int_triggers__cart_abandonment", "int_email_sends", "int_searches"} <= ephemeral
    # decides at compile time whether the ledger exists yet: must be compiled on every tick
    assert "stg_signalmail__send_ledger" in ephemeral


def test_profiles_read_paths_and_credentials_from_environment():
    text = (PROJECT / "profiles.yml").read_text()
    for variable in (
        "SIGNALMAIL_DUCKDB_PATH",
        # one URL for the whole warehouse, the same variable every other plugin reads
        "SIGNALMAIL_PG_URL",
        "SIGNALMAIL_DBT_SCHEMA",
    ):
        assert variable in text
    for retired in ("SIGNALMAIL_PG_HOST", "SIGNALMAIL_PG_PASSWORD", "SIGNALMAIL_PG_DATABASE"):
        assert retired not in text


def test_fixture_rows_follow_the_loader_layout():
    factory = raw_events.EventFactory(seed="unit")
    from datetime import datetime

    event = factory.identify(
        datetime(2026, 1, 1, 12), "u1", {"email": "A@B.C", "email_opt_in": True}, anonymous_id="a1"
    )
    stream, row = raw_events.to_row(event, spool_key="k", spool_line=3)
    assert stream == "identifies"
    assert row["traits"] == {}  # rudder-sdk-python puts traits in context.traits
    assert row["context"]["traits"]["email_opt_in"] is True
    assert row["received_at"] > row["timestamp"]
    assert [name for name, _ in raw_events.columns("tracks")][-2:] == ["event", "properties"]
    assert (row["_spool_key"], row["_spool_line"]) == ("k", 3)
