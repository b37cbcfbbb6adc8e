"""The watch configures its in-process plugins as meltano.yml configures them for `meltano run`.

`signalmail watch` and `meltano run cycle` must load, model and send alike; this compares the
configuration the watch builds from the documented variables with what Meltano resolves for
the same plugins in the `dev` environment (`meltano config print`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from signalmail.watch.settings import SPOOL_ACCESS_SETTINGS, from_environment

from tests.helpers import REPO_ROOT
from tests.helpers.meltano import MELTANO

pytestmark = pytest.mark.slow


def meltano_config(plugin: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALMAIL_")}
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env.update(extra)
    done = subprocess.run(
        [MELTANO, "--environment", "dev", "config", "--unsafe", "print", plugin],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def settings():
    saved = {k: v for k, v in os.environ.items() if k.startswith("SIGNALMAIL_")}
    for key in saved:
        del os.environ[key]
    try:
        yield from_environment(REPO_ROOT, mandrill_api_key="k")
    finally:
        os.environ.update(saved)


def test_the_watch_reads_the_spool_as_meltano_configures_the_tap(settings):
    meltano = meltano_config("tap-rudderstack")
    watch = settings.tap_rudderstack_config()
    assert Path(watch["source"]) == Path(meltano["source"])
    assert watch["batch_config"]["encoding"] == meltano["batch_config"]["encoding"]


def test_the_watch_loads_where_meltano_loads(settings):
    meltano = meltano_config("target-duckdb")
    watch = settings.loader_config()
    assert Path(watch["filepath"]) == Path(meltano["filepath"])
    assert watch["default_target_schema"] == meltano["default_target_schema"]
    assert watch["delete_batch_files"] == meltano["delete_batch_files"]


def test_the_watch_reads_triggers_and_keeps_its_ledger_where_meltano_does(settings):
    tap = meltano_config("tap-warehouse")
    watch_tap = settings.tap_warehouse_config()
    assert watch_tap["sqlalchemy_url"] == tap["sqlalchemy_url"]
    assert watch_tap["schema"] == tap["schema"]
    assert watch_tap["tables"] == tap["tables"]
    target = meltano_config("target-mailchimp-transactional")
    watch_target = settings.target_config()
    for key in ("campaigns_dir", "blocks_dir", "ledger_url"):
        assert watch_target[key] == target[key], key


def test_the_watch_reads_the_spool_access_and_link_domains_meltano_reads(monkeypatch):
    """An S3-compatible spool (MinIO, R2) and the link check reach the watch as `meltano run`."""
    variables = {
        "TAP_RUDDERSTACK_ENDPOINT_URL": "http://127.0.0.1:9000",
        "TAP_RUDDERSTACK_REGION": "eu-west-1",
        "TAP_RUDDERSTACK_AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "TAP_RUDDERSTACK_AWS_SECRET_ACCESS_KEY": "s3cret-example",
        "TARGET_MAILCHIMP_TRANSACTIONAL_LINK_DOMAINS": '["shop.example.com", "cdn.example.net"]',
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    watch = from_environment(REPO_ROOT, mandrill_api_key="k")
    tap = meltano_config("tap-rudderstack", **variables)
    watched = watch.tap_rudderstack_config()
    assert {k: watched.get(k) for k in SPOOL_ACCESS_SETTINGS} == {
        k: tap.get(k) for k in SPOOL_ACCESS_SETTINGS
    }
    assert watched["endpoint_url"] == "http://127.0.0.1:9000"
    target = meltano_config("target-mailchimp-transactional", **variables)
    assert watch.target_config()["link_domains"] == target["link_domains"]
    assert target["link_domains"] == ["shop.example.com", "cdn.example.net"]
    assert "s3cret-example" not in repr(watch)
