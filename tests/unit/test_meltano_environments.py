"""The environments of meltano.yml send what their loaders read fastest, and clean up after it.

A loader that reads BATCH files parses no Singer message per row (docs/ingest.md); a tap left on
RECORD messages in one environment would quietly run that environment at a fraction of the
speed its bench promises, and a loader that keeps the files fills the disk.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.helpers import REPO_ROOT


def environment_plugin(environment: str, kind: str, name: str) -> dict[str, Any]:
    project = yaml.safe_load((REPO_ROOT / "meltano.yml").read_text())
    (env,) = [e for e in project["environments"] if e["name"] == environment]
    (plugin,) = [p for p in env["config"]["plugins"][kind] if p["name"] == name]
    return plugin["config"]


@pytest.mark.parametrize(
    ("environment", "loader"),
    [
        ("dev", "target-duckdb-bulk"),
        ("demo", "target-duckdb-bulk"),
        ("prod", "target-postgres-bulk"),
    ],
)
def test_the_tap_sends_batch_files_that_the_bulk_loader_deletes(environment, loader):
    tap = environment_plugin(environment, "extractors", "tap-rudderstack")
    assert tap["batch_config"]["encoding"] == {"format": "jsonl", "compression": "none"}
    assert tap["batch_config"]["storage"]["root"].startswith("file://${MELTANO_PROJECT_ROOT}/")
    assert environment_plugin(environment, "loaders", loader)["delete_batch_files"] is True


def test_dev_records_sends_records_for_the_loader_that_cannot_read_batch_files():
    assert "batch_config" not in environment_plugin("dev-records", "extractors", "tap-rudderstack")
