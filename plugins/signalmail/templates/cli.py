"""`signalmail templates lint | sync | preview`: the marketer-facing side of the templates."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from signalmail.templates.source import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    TemplatesClient,
    TemplateSource,
    TemplateToolError,
)

_campaigns_dir = click.option(
    "--campaigns-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("templates/campaigns"),
    show_default=True,
    help="Campaign files <campaign>.yml.",
)
_blocks_dir = click.option(
    "--blocks-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("templates/blocks"),
    show_default=True,
    help="Jinja2 blocks the campaigns render into mc:edit regions.",
)
_api_key = click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    show_envvar=True,
    help="Mandrill API key (never printed).",
)
_base_url = click.option(
    "--base-url",
    envvar=BASE_URL_ENV,
    show_envvar=True,
    default=DEFAULT_BASE_URL,
    show_default=True,
    help="API root; `signalmail sandbox` serves http://127.0.0.1:<port>/api/1.3.",
)
_timeout = click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds per Mandrill call."
)


def _load_campaigns(campaigns_dir: Path, blocks_dir: Path | None) -> dict:
    """Campaign files validated by the target's own loader (blocks checked when a folder)."""
    from target_mailchimp_transactional import CampaignConfigError, load_campaigns

    try:
        return load_campaigns(
            campaigns_dir, blocks_dir if blocks_dir and blocks_dir.is_dir() else None
        )
    except CampaignConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _client(api_key: str | None, base_url: str, timeout: float) -> TemplatesClient:
    if not api_key:
        raise click.UsageError(f"give --api-key (or set {API_KEY_ENV})")
    return TemplatesClient(api_key, base_url, timeout=timeout)


@click.group()
def templates() -> None:
    """Check, push and preview the Mandrill templates the campaigns send with."""


@templates.command()
@_campaigns_dir
@_blocks_dir
@click.option(
    "--local",
    "local_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Lint <slug>.html (mc-<id>.html for Mailchimp templates) from this folder instead of "
    "fetching from Mandrill, e.g. templates/mandrill.",
)
@click.option("--draft", is_flag=True, help="Lint Mandrill's draft instead of the published code.")
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@_api_key
@_base_url
@_timeout
def lint(
    campaigns_dir: Path,
    blocks_dir: Path,
    local_dir: Path | None,
    draft: bool,
    strict: bool,
    api_key: str | None,
    base_url: str,
    timeout: float,
) -> None:
    """Check each campaign's template against what the campaign sends.

    Reports unknown merge tags and helpers, mc:edit regions the campaign fills but the template
    lacks, a missing unsubscribe link, and (templates and Jinja2 blocks alike) a field that can
    be null printed beside text outside a guard, as file:line: messages. Exit 1 on errors.
    """
    from signalmail.templates.lint import lint_campaigns, relative

    campaigns = _load_campaigns(campaigns_dir, blocks_dir)
    if local_dir is not None:
        source = TemplateSource(local_dir=local_dir)
    elif api_key:
        source = TemplateSource(client=_client(api_key, base_url, timeout), draft=draft)
    else:
        raise click.UsageError(
            f"give --api-key (or {API_KEY_ENV}) to lint what Mandrill has, or --local DIR"
        )
    try:
        findings = lint_campaigns(campaigns, source)
    except TemplateToolError as exc:
        raise click.ClickException(str(exc)) from None
    if blocks_dir.is_dir():
        from signalmail.templates.lint_blocks import lint_blocks

        findings = sorted({*findings, *lint_blocks(blocks_dir)})
    cwd = Path.cwd()
    for finding in findings:
        click.echo(
            f"{relative(finding.path, cwd)}:{finding.line}: {finding.severity}: {finding.message}"
        )
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    click.echo(
        f"{len(campaigns)} campaign(s) checked: {errors} error(s), {warnings} warning(s)",
        err=True,
    )
    if errors or (strict and warnings):
        sys.exit(1)


@templates.command()
@click.option(
    "--dir",
    "templates_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("templates/mandrill"),
    show_default=True,
    help="Starter templates <slug>.html.",
)
@click.option(
    "--record",
    "record_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Sync record (hashes of pushed versions). Default: <dir>/../.sync-state.json.",
)
@click.option("--force", is_flag=True, help="Replace drafts even where a marketer changed them.")
@click.option("--dry-run", is_flag=True, help="Say what would be pushed; change nothing.")
@click.option("--only", multiple=True, help="Sync only this slug (repeatable).")
@_campaigns_dir
@_api_key
@_base_url
@_timeout
def sync(
    templates_dir: Path,
    record_path: Path | None,
    force: bool,
    dry_run: bool,
    only: tuple[str, ...],
    campaigns_dir: Path,
    api_key: str | None,
    base_url: str,
    timeout: float,
) -> None:
    """Push the starter templates to Mandrill as drafts.

    New slugs are added unpublished; existing ones get their draft updated, never their
    published version. A template someone changed in Mandrill since the last sync is kept
    (exit 1) unless --force.
    """
    from target_mailchimp_transactional import MandrillError

    from signalmail.templates.sync import SyncRecord, sync_templates

    client = _client(api_key, base_url, timeout)
    try:
        record = SyncRecord(record_path or templates_dir.parent / ".sync-state.json")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    defaults: dict[str, dict[str, str]] = {}
    campaigns: dict = {}
    if campaigns_dir.is_dir():
        try:
            campaigns = _load_campaigns(campaigns_dir, None)
        except click.ClickException as exc:
            # Defaults for new templates are a nicety; a campaign typo must not block a push.
            click.echo(f"warning: no from/subject defaults for new templates: {exc}", err=True)
        for campaign in campaigns.values():
            for variant in campaign.variants:
                if variant.template and variant.template not in defaults:
                    defaults[variant.template] = {
                        "from_email": variant.from_email,
                        "from_name": variant.from_name or "",
                        "subject": variant.subject or "",
                    }
    try:
        results = sync_templates(
            client,
            templates_dir,
            record,
            force=force,
            dry_run=dry_run,
            only=set(only) or None,
            campaign_defaults=defaults,
        )
    except (TemplateToolError, MandrillError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    for result in results:
        click.echo(str(result))
    if not all(result.ok for result in results):
        sys.exit(1)


@templates.command()
@click.option(
    "--sqlalchemy-url",
    envvar="SIGNALMAIL_WAREHOUSE_URL",
    show_envvar=True,
    required=True,
    help="Warehouse holding the email_triggers mart, e.g. duckdb:///data/warehouse.duckdb "
    "(opened read-only).",
)
@click.option("--schema", default=None, help="Schema of the mart (default: the connection's).")
@click.option("--table", default="email_triggers", show_default=True, help="Mart to read.")
@click.option("-n", "--limit", default=10, show_default=True, help="Rows to render (newest).")
@click.option("--campaign", "campaign_names", multiple=True, help="Only these campaigns.")
@click.option("--trigger-id", "trigger_ids", multiple=True, help="Only these triggers.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("output/preview"),
    show_default=True,
    help="Folder for the HTML files and index.html.",
)
@click.option(
    "--templates-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("templates/mandrill"),
    show_default=True,
    help="Local templates, used unless --from-mandrill.",
)
@click.option(
    "--from-mandrill", is_flag=True, help="Render Mandrill's published templates instead."
)
# The target's content settings, read from the same variables Meltano gives the target, so a
# preview formats prices and drops links as the send would.
@click.option(
    "--default-currency",
    envvar="TARGET_MAILCHIMP_TRANSACTIONAL_DEFAULT_CURRENCY",
    show_envvar=True,
    default=None,
    help="Currency for payloads without one (the target's default_currency).",
)
@click.option(
    "--default-locale",
    envvar="TARGET_MAILCHIMP_TRANSACTIONAL_DEFAULT_LOCALE",
    show_envvar=True,
    default="en_US",
    show_default=True,
    help="Locale for amounts when the recipient has none (the target's default_locale).",
)
@click.option(
    "--link-domain",
    "link_domains",
    multiple=True,
    help="Keep only links to this domain or under it (repeatable; the target's link_domains).",
)
@_campaigns_dir
@_blocks_dir
@_api_key
@_base_url
@_timeout
def preview(
    sqlalchemy_url: str,
    schema: str | None,
    table: str,
    limit: int,
    campaign_names: tuple[str, ...],
    trigger_ids: tuple[str, ...],
    out: Path,
    templates_dir: Path,
    from_mandrill: bool,
    default_currency: str | None,
    default_locale: str,
    link_domains: tuple[str, ...],
    campaigns_dir: Path,
    blocks_dir: Path,
    api_key: str | None,
    base_url: str,
    timeout: float,
) -> None:
    """Render the personalised email for real email_triggers rows into HTML files.

    Writes <out>/<n>-<trigger_id>.html per row and <out>/index.html; exit 1 if a row cannot be
    rendered (each reason is in the index).
    """
    from singer_sdk.exceptions import ConfigValidationError
    from tap_warehouse import WarehouseConnectionError, WarehouseLockedError
    from target_mailchimp_transactional import BlockRenderer, ContentSettings

    from signalmail.templates.preview import read_rows, write_preview

    campaigns = _load_campaigns(campaigns_dir, blocks_dir)
    if from_mandrill:
        source = TemplateSource(client=_client(api_key, base_url, timeout))
    else:
        if not templates_dir.is_dir():
            raise click.UsageError(f"--templates-dir {templates_dir} is not a folder")
        source = TemplateSource(local_dir=templates_dir)
    try:
        rows = read_rows(
            sqlalchemy_url,
            schema=schema,
            table=table,
            limit=limit,
            campaigns=campaign_names,
            trigger_ids=trigger_ids,
        )
    except (
        ConfigValidationError,
        WarehouseConnectionError,
        WarehouseLockedError,
        LookupError,
    ) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        settings = ContentSettings(link_domains, default_currency, default_locale)
        items = write_preview(
            rows, campaigns, BlockRenderer(blocks_dir), source, out, settings=settings
        )
    except TemplateToolError as exc:
        raise click.ClickException(str(exc)) from None
    failed = [item for item in items if item.error]
    for item in failed:
        click.echo(f"{item.trigger_id} ({item.campaign}): {item.error}", err=True)
    click.echo(
        f"{len(items) - len(failed)} of {len(items)} trigger(s) rendered: "
        f"{(out / 'index.html').resolve()}"
    )
    if failed:
        sys.exit(1)
