"""`signalmail report`: refresh the report's marts, read them, write output/report/index.html."""

from __future__ import annotations

from pathlib import Path

import click

from signalmail.watch.options import project_options
from signalmail.watch.settings import SettingsError, from_environment


@click.command()
@project_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default="output/report",
    show_default=True,
    help="Folder of index.html.",
)
@click.option(
    "--refresh/--no-refresh",
    default=True,
    show_default=True,
    help="Rebuild the marts the report reads with dbt first (needs the warehouse writable: "
    "stop the watch, or use its --report option).",
)
@click.option(
    "--emails/--no-emails",
    default=True,
    show_default=True,
    help="Fetch the newest messages of each campaign from Mandrill as it rendered them "
    "(SIGNALMAIL_MANDRILL_API_KEY, SIGNALMAIL_MANDRILL_BASE_URL).",
)
def report(project_root: Path, engine: str | None, out: Path, refresh: bool, emails: bool) -> None:
    """Write one HTML page of what the pipeline did: funnel, outcomes, latency, uplift, emails."""
    from signalmail.report.build import build_report, refresh_models
    from signalmail.watch.dbt import WarmDbt

    root = project_root.resolve()
    try:
        settings = from_environment(root, engine=engine)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if refresh:
        dbt = WarmDbt(settings.dbt_project_dir, settings.dbt_env())
        refresh_models(dbt)
        dbt.release()
    path = build_report(settings, settings.path(out), emails=emails)
    click.echo(f"report written to {path}")
