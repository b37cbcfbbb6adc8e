"""The command-line options `signalmail watch` and `signalmail report` share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from signalmail.watch.settings import ENGINES


def project_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add `--project-root` (the Meltano project) and `--target` (the warehouse engine)."""
    command = click.option(
        "--target",
        "engine",
        type=click.Choice(ENGINES),
        envvar="SIGNALMAIL_DBT_TARGET",
        help="Warehouse engine [env SIGNALMAIL_DBT_TARGET; default duckdb].",
    )(command)
    return click.option(
        "--project-root",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="MELTANO_PROJECT_ROOT",
        default=".",
        show_default=True,
        help="The signalmail Meltano project (dbt_project/, templates/) "
        "[env MELTANO_PROJECT_ROOT].",
    )(command)
