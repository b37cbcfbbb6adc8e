"""`signalmail templates preview`: the personalised email for real `email_triggers` rows.

For each row, exactly what the target would send is assembled with the target's own code
(variant assignment, merge vars, Jinja2 blocks into `mc:edit` regions) and rendered with the
sandbox's Mandrill-compatible handlebars renderer, into `<out>/<n>-<trigger_id>.html` plus an
`index.html` to open in a browser. Rows that would fail (no campaign file, a required merge var
missing, a block that does not render) are listed in the index with the reason.

Rows are read through tap-warehouse's connector: read-only, short-lived, any SQLAlchemy warehouse.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from tap_warehouse import WarehouseConnector
from target_mailchimp_transactional import (
    UNUSABLE_VALUE_ERRORS,
    BlockRenderer,
    BlockRenderError,
    Campaign,
    ContentSettings,
    PayloadError,
    recipient_content,
)

from signalmail.sandbox import handlebars
from signalmail.templates.source import TemplateMissing, TemplateRef, TemplateSource


@dataclass
class PreviewItem:
    """One row's outcome: a rendered file, or the reason there is none."""

    trigger_id: str
    campaign: str
    email: str
    variant: str = ""
    template: str = ""
    subject: str = ""
    holdout: bool = False
    file: str | None = None
    error: str | None = None


def read_rows(
    sqlalchemy_url: str,
    *,
    schema: str | None,
    table: str = "email_triggers",
    limit: int = 10,
    campaigns: tuple[str, ...] = (),
    trigger_ids: tuple[str, ...] = (),
    lock_timeout_seconds: float = 30,
) -> list[dict[str, Any]]:
    """Read the newest `limit` rows (by computed_at), optionally of some campaigns/triggers."""
    connector = WarehouseConnector(
        config={"sqlalchemy_url": sqlalchemy_url, "lock_timeout_seconds": lock_timeout_seconds}
    )
    columns = connector.get_table_columns(connector.get_fully_qualified_name(table, schema))
    if not columns:
        where = schema or "the default schema"
        msg = f"table {table!r} not found in {where}; has dbt built the marts?"
        raise LookupError(msg)
    sa_table = sa.Table(table, sa.MetaData(), *columns.values(), schema=schema)
    query = sa.select(sa_table)
    if campaigns:
        query = query.where(sa_table.c.campaign.in_(campaigns))
    if trigger_ids:
        query = query.where(sa_table.c.trigger_id.in_(trigger_ids))
    order = [sa_table.c.computed_at.desc()] if "computed_at" in columns else []
    query = query.order_by(*order, sa_table.c.trigger_id).limit(limit)
    with connector.open_connection() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def render_row(
    row: dict[str, Any],
    campaigns: dict[str, Campaign],
    blocks: BlockRenderer,
    source: TemplateSource,
    now: dt.datetime | None = None,
    settings: ContentSettings | None = None,
) -> tuple[PreviewItem, str | None]:
    """Assemble and render one row as the target and Mandrill would; (item, html or None).

    The row's payload goes through the target's own `recipient_content` (links checked, names
    cleaned, amounts formatted with `settings`), so the preview shows what would be sent.
    """
    trigger_id = str(row.get("trigger_id"))
    item = PreviewItem(trigger_id, str(row.get("campaign")), str(row.get("email") or ""))
    item.holdout = bool(row.get("holdout"))
    campaign = campaigns.get(item.campaign)
    if campaign is None:
        item.error = f"no campaign file {item.campaign}.yml"
        return item, None
    user_id = row.get("user_id")
    variant = campaign.variant_for(None if user_id is None else str(user_id), trigger_id)
    ref = TemplateRef.of(variant)
    item.variant, item.template = variant.name, ref.label
    try:
        content = recipient_content(row, settings or ContentSettings())
    except PayloadError as exc:
        item.error = str(exc)
        return item, None
    except UNUSABLE_VALUE_ERRORS as exc:
        # the target makes such a trigger invalid (and goes on): listed, not a crash
        item.error = f"payload not usable: {type(exc).__name__}: {exc}"
        return item, None
    try:
        merge_vars = content.merge_vars(campaign, variant, blocks)
        contents = {c["name"]: c["content"] for c in blocks.template_content(campaign, variant)}
        fetched = source.fetch(ref)
    except KeyError as exc:
        item.error = str(exc.args[0])
        return item, None
    except (BlockRenderError, TemplateMissing) as exc:
        item.error = str(exc)
        return item, None
    context = {var["name"]: var["content"] for var in merge_vars}
    options = handlebars.RenderOptions(
        now=lambda: now or dt.datetime.now(dt.UTC),
        unsub_link=lambda url: url or "#unsubscribe",
    )
    try:
        body = handlebars.render(handlebars.apply_mc_edit(fetched.code, contents), context, options)
        item.subject = handlebars.render(variant.subject or fetched.subject or "", context, options)
    except handlebars.TemplateError as exc:
        item.error = f"{fetched.origin}: {exc}"
        return item, None
    return item, body


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120]


def write_preview(
    rows: list[dict[str, Any]],
    campaigns: dict[str, Campaign],
    blocks: BlockRenderer,
    source: TemplateSource,
    out: Path,
    now: dt.datetime | None = None,
    settings: ContentSettings | None = None,
) -> list[PreviewItem]:
    """Render every row into `out` and write `out/index.html`; returns the outcomes."""
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for number, row in enumerate(rows, start=1):
        item, body = render_row(row, campaigns, blocks, source, now, settings)
        if body is not None:
            name = f"{number:03d}-{_safe(item.trigger_id)}.html"
            (out / name).write_text(body, encoding="utf-8")
            item.file = name
        items.append(item)
    (out / "index.html").write_text(index_html(items), encoding="utf-8")
    return items


def index_html(items: list[PreviewItem]) -> str:
    """Build a plain table linking every rendered email, problems shown in red."""
    esc = html.escape
    rows = []
    for item in items:
        link = (
            f"<a href='{esc(item.file)}'>{esc(item.subject or '(no subject)')}</a>"
            if item.file
            else f"<span class='err'>{esc(item.error or '')}</span>"
        )
        rows.append(
            "<tr>"
            f"<td>{esc(item.trigger_id)}</td><td>{esc(item.campaign)}</td>"
            f"<td>{esc(item.variant)}</td><td>{esc(item.email)}</td>"
            f"<td>{esc(item.template)}</td><td>{'held out' if item.holdout else ''}</td>"
            f"<td>{link}</td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>signalmail preview</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border-bottom:1px solid #ddd;padding:6px 10px;text-align:left}"
        ".err{color:#b00020}</style></head><body>"
        f"<h1>signalmail preview: {len(items)} trigger(s)</h1>"
        "<p>Held-out triggers are rendered but would not be sent.</p>"
        "<table><tr><th>trigger</th><th>campaign</th><th>variant</th><th>to</th>"
        "<th>template</th><th>holdout</th><th>email</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
