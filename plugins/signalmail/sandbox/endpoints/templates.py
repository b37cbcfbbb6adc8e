"""templates/*: the account's handlebars or merge-tag templates, each a draft and a published copy.

Mandrill keeps two versions of a template: the draft that templates/update edits and the
published one messages/send-template uses. templates/add and templates/update publish as well
unless told `publish: false`, so a draft-only template cannot be sent until it is published.
Templates are found by slug (what templates/add derives from the name) or by their exact name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from signalmail.sandbox.checks import is_valid_email
from signalmail.sandbox.errors import MandrillError
from signalmail.sandbox.rendering import is_broken, render_code
from signalmail.sandbox.store import mandrill_time

if TYPE_CHECKING:
    from signalmail.sandbox.core import Sandbox


def find(sandbox: Sandbox, name: str) -> dict[str, Any] | None:
    """Return the template with slug or name `name`, or None."""
    return sandbox.store.get_template(name) or _by_name(sandbox, name)


def get(sandbox: Sandbox, name: str) -> dict[str, Any]:
    """templates/info, and the lookup every other call starts with: Unknown_Template if none."""
    template = find(sandbox, name)
    if template is None:
        raise MandrillError("Unknown_Template", f'No such template "{name}"', 5)
    return template


def add(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """templates/add: new template, published unless `publish` is false."""
    slug = _slugify(body["name"])
    if sandbox.store.get_template(slug) or _by_name(sandbox, body["name"]):
        raise MandrillError(
            "Invalid_Template", f'A template with name "{body["name"]}" already exists', 6
        )
    _check_from(body.get("from_email"))
    now = mandrill_time(micro=True)
    template = {
        "slug": slug,
        "name": body["name"],
        "labels": body.get("labels") or [],
        "code": body.get("code"),
        "subject": body.get("subject"),
        "from_email": body.get("from_email"),
        "from_name": body.get("from_name"),
        "text": body.get("text"),
        "publish_name": body["name"],
        "publish_code": None,
        "publish_subject": None,
        "publish_from_email": None,
        "publish_from_name": None,
        "publish_text": None,
        "published_at": None,
        "created_at": now,
        "updated_at": now,
        "draft_updated_at": now[:19],
        "is_broken_template": is_broken(body.get("code")),
    }
    if body.get("publish", True):
        template = _publish(template)
    sandbox.store.put_template(template)
    return template


def update(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """templates/update: change the draft; publish it too unless `publish` is false."""
    template = get(sandbox, body["name"])
    _check_from(body.get("from_email"))
    for name in ("code", "subject", "from_email", "from_name", "text", "labels"):
        if name in body and body[name] is not None:
            template[name] = body[name]
    now = mandrill_time(micro=True)
    template["updated_at"] = now
    template["draft_updated_at"] = now[:19]
    template["is_broken_template"] = is_broken(template["code"])
    if body.get("publish", True):
        template = _publish(template)
    sandbox.store.put_template(template)
    return template


def publish(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """templates/publish: the draft becomes what send-template uses."""
    template = _publish(get(sandbox, body["name"]))
    sandbox.store.put_template(template)
    return template


def delete(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """templates/delete: returns the template as it was."""
    template = get(sandbox, body["name"])
    sandbox.store.delete_template(template["slug"])
    return template


def list_(sandbox: Sandbox, body: dict[str, Any]) -> list[dict[str, Any]]:
    """templates/list, optionally by label."""
    label = body.get("label")
    return [t for t in sandbox.store.list_templates() if not label or label in t["labels"]]


def render(sandbox: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    """templates/render: published code (draft if never published) with content and vars.

    The request has no merge_language field; code containing `{{` renders as handlebars,
    anything else with Mailchimp merge tags.
    """
    template = get(sandbox, body["template_name"])
    code = template["publish_code"] if template["published_at"] else template["code"]
    contents = {c.get("name"): c.get("content") or "" for c in body["template_content"]}
    merged = {v.get("name"): v.get("content") for v in body.get("merge_vars") or []}
    return {"html": render_code(sandbox.config, code or "", contents, merged)}


def _by_name(sandbox: Sandbox, name: str) -> dict[str, Any] | None:
    """Clients may address a template by its display name, which the slug does not keep."""
    return next((t for t in sandbox.store.list_templates() if t["name"] == name), None)


def _slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "template"


def _publish(template: dict[str, Any]) -> dict[str, Any]:
    """Copy the draft over the published fields (a new dict: callers store what they get)."""
    published = dict(template)
    for name in ("name", "code", "subject", "from_email", "from_name", "text"):
        published["publish_" + name] = template[name]
    published["published_at"] = mandrill_time()
    return published


def _check_from(from_email: str | None) -> None:
    """Check a template's sender when it is saved, not first when a send uses it."""
    if from_email and not is_valid_email(from_email):
        raise MandrillError(
            "ValidationError",
            f'Validation error: {{"from_email":"{from_email} is not a valid email address"}}',
            -2,
        )


OPERATIONS: dict[str, Callable[[Sandbox, dict[str, Any]], Any]] = {
    "templates/add": add,
    "templates/update": update,
    "templates/info": lambda sandbox, body: get(sandbox, body["name"]),
    "templates/list": list_,
    "templates/publish": publish,
    "templates/delete": delete,
    "templates/render": render,
}
