"""mctemplates/*: Mailchimp (campaign) templates, which Mandrill can read and send but not edit.

Mailchimp templates are made in Mailchimp's editor, not through this API, so the sandbox
takes them from `--mc-templates` or the `/sandbox/mctemplates` admin endpoint (`seed`). Like
Mandrill, an unknown or unpublished one is answered with Unknown_Message (code 11).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from signalmail.sandbox.errors import MandrillError
from signalmail.sandbox.rendering import is_broken, render_code
from signalmail.sandbox.store import mandrill_time

if TYPE_CHECKING:
    from signalmail.sandbox.core import Sandbox


def seed(sandbox: Sandbox, templates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create or replace Mailchimp templates (they are made in Mailchimp, not via the API)."""
    stored = []
    existing = {t["mc_template_id"] for t in sandbox.store.list_mctemplates()}
    for item in templates:
        if "mc_template_name" not in item or "code" not in item:
            raise ValueError("each Mailchimp template needs mc_template_name and code")
        template_id = int(item.get("mc_template_id") or (max(existing, default=10000) + 1))
        existing.add(template_id)
        now = mandrill_time(micro=True)
        published = item.get("publish", True)
        template = {
            "mc_template_id": template_id,
            "mc_template_name": item["mc_template_name"],
            "labels": item.get("labels", []),
            "code": item["code"],
            "subject": item.get("subject", ""),
            "from_email": item.get("from_email", ""),
            "from_name": item.get("from_name", ""),
            "text": item.get("text", ""),
            "publish_code": item["code"] if published else "",
            "publish_text": item.get("text", "") if published else "",
            "published_at": now[:19] if published else "",
            "created_at": now,
            "updated_at": now,
            "draft_updated_at": now[:19],
            "is_broken_template": is_broken(item["code"]),
        }
        sandbox.store.put_mctemplate(template)
        stored.append(template)
    return stored


def get(sandbox: Sandbox, template_id: int) -> dict[str, Any]:
    """mctemplates/info, and the lookup send-mc-template and render start with."""
    template = sandbox.store.get_mctemplate(template_id)
    if template is None:
        raise MandrillError(
            "Unknown_Message", f"No Mailchimp template found with id {template_id}", 11
        )
    return template


def list_(sandbox: Sandbox, body: dict[str, Any]) -> list[dict[str, Any]]:
    """mctemplates/list, optionally filtered by a name substring."""
    query = (body.get("search_query") or "").lower()
    return [t for t in sandbox.store.list_mctemplates() if query in t["mc_template_name"].lower()]


def render(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """mctemplates/render."""
    template = get(sandbox, body["mc_template_id"])
    version = body.get("mc_template_version") or "published"
    if version == "published" and not template["published_at"]:
        raise MandrillError(
            "Unknown_Message",
            f"Mailchimp template {template['mc_template_id']} is not published",
            11,
        )
    code = template["publish_code" if version == "published" else "code"]
    merged = {v.get("name"): v.get("content") for v in body.get("merge_vars") or []}
    return {"html": render_code(sandbox.config, code, {}, merged)}


OPERATIONS: dict[str, Callable[[Sandbox, dict[str, Any]], Any]] = {
    "mctemplates/list": list_,
    "mctemplates/info": lambda sandbox, body: get(sandbox, body["mc_template_id"]),
    "mctemplates/render": render,
}
