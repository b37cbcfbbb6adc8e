"""The real `meltano run`, from tests, isolated from every other run in the same checkout.

Each run gets a private Meltano system directory (its own system database and `run/` folder,
which Meltano rewrites on every invocation) that shares the plugin venvs `meltano install` made,
and keeps its state under the test's own folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tap_rudderstack.sync import CRASH_ENV

from tests.helpers import REPO_ROOT

MELTANO = str(Path(sys.executable).parent / "meltano")


def isolated_env(work: Path) -> dict[str, str]:
    """Environment entries that give a `meltano run` its own system dir and state under `work`."""
    sys_dir = work / "meltano-sys"
    if not sys_dir.exists():
        sys_dir.mkdir(parents=True)
        for kind in ("extractors", "loaders", "utilities"):
            (sys_dir / kind).symlink_to(REPO_ROOT / ".meltano" / kind)
    return {
        "MELTANO_SYS_DIR_ROOT": str(sys_dir),
        "MELTANO_STATE_BACKEND_URI": f"file://{work}/state",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        "MELTANO_DISABLE_TRACKING": "true",
    }


def meltano_run(
    work: Path,
    env: dict[str, str],
    *plugins: str,
    environment: str = "dev-records",
    options: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """`meltano --environment E run [options] plugins...` in the project; output captured.

    `dev-records` (RECORD messages) by default: target-duckdb 0.8.0 cannot read BATCH files.
    """
    # tap-rudderstack's test hook (SIGKILL after N records): only a test that asks gets it
    inherited = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    full_env = {**inherited, **isolated_env(work), **env}
    return subprocess.run(
        [MELTANO, "--environment", environment, "run", *options, *plugins],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
