"""meltano.yml declares every setting of the project's Singer plugins, with the kind they read.

`meltano config` converts a value by its declared kind before the plugin sees it: a number
setting declared `integer` made Meltano fail on `SIGNALMAIL_MANDRILL_TIMEOUT=2.5`, and a setting
left undeclared is missing from `meltano config list` and Meltano's UI.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from singer_sdk.helpers import capabilities
from tap_rudderstack import TapRudderStack
from tap_warehouse import TapWarehouse
from target_duckdb_bulk import TargetDuckDBBulk
from target_mailchimp_transactional import TargetMailchimpTransactional
from target_postgres_bulk import TargetPostgresBulk

from tests.helpers import REPO_ROOT

PLUGINS = {
    "tap-rudderstack": TapRudderStack,
    "tap-warehouse": TapWarehouse,
    "target-mailchimp-transactional": TargetMailchimpTransactional,
    "target-duckdb-bulk": TargetDuckDBBulk,
    "target-postgres-bulk": TargetPostgresBulk,
}
#: JSON schema type -> the Meltano kinds that give the plugin a value of it
KINDS = {
    "integer": {"integer"},
    "number": {"decimal"},
    "boolean": {"boolean"},
    "array": {"array"},
    "object": {"object"},
    "string": {"string", "password", "options", "date_iso8601", "file"},
}


#: settings singer-sdk adds to every plugin with a capability (it appends them to the class's
#: schema once a plugin is built): Meltano's own plugin definitions leave most of them out too
SDK_SETTINGS = {
    name
    for value in vars(capabilities).values()
    if isinstance(value, dict) and isinstance(value.get("properties"), dict)
    for name in value["properties"]
}


def declared_settings(name: str) -> dict[str, dict[str, Any]]:
    project = yaml.safe_load((REPO_ROOT / "meltano.yml").read_text())
    plugins = [p for kind in project["plugins"].values() for p in kind if p["name"] == name]
    (plugin,) = plugins
    return {setting["name"]: setting for setting in plugin.get("settings", [])}


def schema_type(prop: dict[str, Any]) -> str:
    types = prop.get("type") or [t for option in prop.get("anyOf", []) for t in [option["type"]]]
    types = [types] if isinstance(types, str) else types
    (kind,) = [t for t in types if t != "null"] or ["string"]
    return str(kind)


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_every_setting_is_declared_with_a_kind_meltano_converts_to_its_type(name):
    properties = PLUGINS[name].config_jsonschema["properties"]
    declared = declared_settings(name)
    assert sorted(set(properties) - set(declared) - SDK_SETTINGS) == []
    for setting, prop in properties.items():
        if setting not in declared:
            continue
        kind = declared[setting].get("kind", "string")
        assert kind in KINDS[schema_type(prop)], (setting, kind, prop)
        assert declared[setting].get("sensitive", False) == prop.get("secret", False), setting
