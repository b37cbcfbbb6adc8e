"""The Meltano jobs a scheduler runs send nothing twice: `cycle`, the watch, then `nightly`.

The real `meltano run` of the project's own meltano.yml, in a copy of the project whose
MELTANO_PROJECT_ROOT is the test's folder: the `dev` environment's paths (data/spool, data/
warehouse.duckdb, data/ledger.duckdb) then land there. The plugin venvs are the checkout's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers.meltano import MELTANO, isolated_env
from tests.helpers.watch import (
    DAYS,
    HOURS,
    daytime_zone,
    services,
)

pytestmark = pytest.mark.slow


def project_copy(root: Path) -> Path:
    """meltano.yml and what it points at, under `root`; plugin venvs shared with the checkout."""
    project = root / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "meltano.yml", project / "meltano.yml")
    for name in ("templates", "pyproject.toml"):
        (project / name).symlink_to(REPO_ROOT / name)
    # dbt writes target/ and logs/ beside its project: a private copy keeps them here
    shutil.copytree(
        REPO_ROOT / "dbt_project",
        project / "dbt_project",
        ignore=shutil.ignore_patterns("target", "logs"),
    )
    return project


def run_job(project: Path, env: dict[str, str], job: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **isolated_env(project.parent), **env}
    for name in ("SIGNALMAIL_SPOOL", "SIGNALMAIL_DUCKDB_PATH", "SIGNALMAIL_LEDGER_PATH"):
        full.pop(name, None)  # the dev environment names them under the project
    return subprocess.run(
        [MELTANO, "--cwd", str(project), "run", job],
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_cycle_then_the_watch_as_a_meltano_utility_then_nightly_send_nothing_twice(tmp_path):
    if not (REPO_ROOT / ".meltano" / "utilities" / "dbt-duckdb").exists():
        pytest.skip("plugins not installed: run `meltano install` (make test does)")
    project = project_copy(tmp_path)
    with services(project / "data", {}) as svc:
        shop = svc.shop()
        shop.timezone = daytime_zone()
        shop.identify("ann", 3 * HOURS)
        shop.add("ann", "p-shoe", "cart-ann", 2 * HOURS)
        shop.identify("carl", 3 * HOURS)
        shop.add("carl", "p-sock", "cart-carl", 2 * HOURS)
        shop.order("carl", "o-carl", "cart-carl", ["p-sock"], 100 * HOURS / 60)
        shop.identify("olga", 3 * HOURS, opt_in=False)
        shop.add("olga", "p-cap", "cart-olga", 2 * HOURS)
        shop.identify("rita", 34 * DAYS)
        svc.wait_for_spool(shop.sent)
        env = {k: v for k, v in svc.env.items() if not k.startswith("SIGNALMAIL_DUCKDB")}

        first = run_job(project, env, "cycle")
        assert first.returncode == 0, first.stderr[-4000:]
        sent = Counter((m["email"], m["metadata"]["campaign"]) for m in svc.messages())
        assert sent == Counter({("ann@example.com", "cart_abandonment"): 1}), first.stderr[-3000:]

        # the watch, as Meltano's utility, on the same project: the same plugins, the same
        # ledger; it loads the Email Sent events and sends nothing the job sent (the nightly
        # job below captures, builds and sends again through the job's own plugins)
        watch = subprocess.run(
            [
                MELTANO, "--cwd", str(project), "invoke", "signalmail:watch",
                "--exit-when-idle", "--fail-fast", "--metrics-port", "0", "--view", "lines",
                "--nightly-at", "never",
            ],
            env={**os.environ, **isolated_env(project.parent), **env},
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert watch.returncode == 0, watch.stdout[-3000:] + watch.stderr[-3000:]
        assert "watch starting: engine=duckdb" in watch.stdout
        assert str(project / "data" / "warehouse.duckdb") in watch.stdout
        final = Counter((m["email"], m["metadata"]["campaign"]) for m in svc.messages())
        assert final == sent
        assert (project / "data" / "warehouse.duckdb").exists()
        assert not (REPO_ROOT / "data" / "spool" / "rudder-logs" / "shop").exists()

        # the nightly job: every model and test, then predicted intent (five shoppers are
        # too few to train on: said, not failed), then activation, which sends nothing again
        nightly = run_job(project, env, "nightly")
        assert nightly.returncode == 0, nightly.stderr[-4000:]
        assert "no model trained: " in nightly.stderr, nightly.stderr[-4000:]
        # retention is off until SIGNALMAIL_RETENTION_DAYS is set: the task says so
        assert "no retention set" in nightly.stdout + nightly.stderr, nightly.stderr[-4000:]
        assert Counter((m["email"], m["metadata"]["campaign"]) for m in svc.messages()) == sent

    # what a scheduler reads: `cycle` every minute and `nightly` at 03:00, each its job
    listed = subprocess.run(
        [MELTANO, "--cwd", str(project), "schedule", "list", "--format=json"],
        env={**os.environ, **isolated_env(project.parent)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-3000:]
    schedules = {s["name"]: s for s in json.loads(listed.stdout)["schedules"]["job"]}
    assert schedules["cycle"]["interval"] == "* * * * *"
    assert schedules["cycle"]["job"]["tasks"][-1] == "tap-warehouse target-mailchimp-transactional"
    assert schedules["nightly"]["interval"] == "0 3 * * *"
    assert "dbt-duckdb:build" in schedules["nightly"]["job"]["tasks"]
    assert {"cycle-postgres", "nightly-postgres"} <= set(schedules)


@pytest.mark.postgres
def test_cycle_postgres_through_meltano_with_psycopg_urls_sends_once(tmp_path, pg_database):
    """`meltano --environment prod run cycle-postgres` in the plugin venvs `meltano install`
    built: the loader, dbt, the warehouse tap and the send ledger all take the one
    SIGNALMAIL_PG_URL, written as the docs write it (postgresql+psycopg://)."""
    if not (REPO_ROOT / ".meltano" / "utilities" / "dbt-postgres").exists():
        pytest.skip("plugins not installed: run `meltano install` (make test does)")
    project = project_copy(tmp_path)
    with services(project / "data", {}) as svc:
        shop = svc.shop()
        shop.timezone = daytime_zone()
        shop.identify("ann", 3 * HOURS)
        shop.add("ann", "p-shoe", "cart-ann", 2 * HOURS)
        shop.identify("olga", 3 * HOURS, opt_in=False)
        shop.add("olga", "p-cap", "cart-olga", 2 * HOURS)
        svc.wait_for_spool(shop.sent)
        url = pg_database.replace("postgresql://", "postgresql+psycopg://")
        env = {
            **{k: v for k, v in svc.env.items() if not k.startswith("SIGNALMAIL_DUCKDB")},
            "SIGNALMAIL_PG_URL": url,
            "SIGNALMAIL_DBT_TARGET": "postgres",
            "MELTANO_ENVIRONMENT": "prod",
        }

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [MELTANO, "--cwd", str(project), "--environment", "prod", "run", "cycle-postgres"],
                env={**os.environ, **isolated_env(project.parent), **env},
                capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip

        first = run()
        assert first.returncode == 0, first.stderr[-4000:]
        sent = Counter((m["email"], m["metadata"]["campaign"]) for m in svc.messages())
        assert sent == Counter({("ann@example.com", "cart_abandonment"): 1}), first.stderr[-3000:]
        second = run()
        assert second.returncode == 0, second.stderr[-4000:]
        assert Counter((m["email"], m["metadata"]["campaign"]) for m in svc.messages()) == sent
        import psycopg

        with psycopg.connect(pg_database) as conn:
            (ledger,) = conn.execute(
                "select count(*) from signalmail_ledger.send_ledger where state = 'sent'"
            ).fetchone()
            (raw,) = conn.execute("select count(*) from rudderstack_raw.tracks").fetchone()
        assert ledger == 1
        assert raw >= 2
