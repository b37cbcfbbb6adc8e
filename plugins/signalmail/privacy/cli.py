"""`signalmail forget` and `signalmail retention`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from signalmail.watch.options import project_options
from signalmail.watch.settings import SettingsError, from_environment

T = TypeVar("T")


def _settings(project_root: Path, engine: str | None) -> Any:
    try:
        return from_environment(project_root.resolve(), engine=engine)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def _storage_options(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None


def _locked(exc: Exception) -> click.ClickException:
    return click.ClickException(
        f"{exc}\nOn DuckDB one process at a time may write the warehouse: stop "
        "`signalmail watch` (or the Meltano job) and run this again."
    )


def _unless_locked(work: Callable[[], T]) -> T:
    """Run `work`; a DuckDB lock held by another writer becomes a clear usage error."""
    try:
        return work()
    except Exception as exc:
        if "lock" in str(exc).lower():
            raise _locked(exc) from None
        raise


storage_option = click.option(
    "--storage-options",
    callback=_storage_options,
    envvar="SIGNALMAIL_STORAGE_OPTIONS",
    help="fsspec options of an object-store spool, as JSON.",
)


@click.command()
@project_options
@click.option("--user-id", help="The person's user id.")
@click.option("--email", help="The person's email address.")
@storage_option
def forget(
    project_root: Path,
    engine: str | None,
    user_id: str | None,
    email: str | None,
    storage_options: Any,
) -> None:
    """Erase a person: spool, warehouse, send ledger; never mail them again.

    Finds every user id, device id and address of theirs in the events, adds one-way
    tombstones the email target honours, puts their addresses on Mandrill's rejects list
    (SIGNALMAIL_MANDRILL_API_KEY), deletes their rows from the raw and derived tables and the
    send ledger, and rewrites the spool segments without their events. Prints what it removed,
    never who.
    """
    from signalmail.privacy.forget import forget as run

    if not user_id and not email:
        raise click.UsageError("give --user-id, --email or both")
    settings = _settings(project_root, engine)
    report = _unless_locked(
        lambda: run(settings, user_id=user_id, email=email, storage_options=storage_options)
    )
    for line in report.lines():
        click.echo(line)
    if report.mandrill_error:
        raise click.ClickException(
            "erased here, but Mandrill's rejects list was not updated: "
            f"{report.mandrill_error}; run forget again when Mandrill answers"
        )


@click.command()
@project_options
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    envvar="SIGNALMAIL_RETENTION_DAYS",
    help="Keep this many days of raw events [env SIGNALMAIL_RETENTION_DAYS; unset: forever].",
)
@storage_option
def retention(
    project_root: Path, engine: str | None, days: float | None, storage_options: Any
) -> None:
    """Delete raw events older than --days from the spool and the warehouse's event tables.

    Without --days (and SIGNALMAIL_RETENTION_DAYS) nothing is deleted, so the nightly Meltano
    job can always run this task and a deployment turns retention on with one variable.
    """
    from signalmail.privacy.retention import apply_retention

    if days is None:
        click.echo("no retention set (--days, SIGNALMAIL_RETENTION_DAYS): nothing deleted")
        return
    settings = _settings(project_root, engine)
    report = _unless_locked(
        lambda: apply_retention(settings, days, storage_options=storage_options)
    )
    for line in report.lines():
        click.echo(line)
