"""Rendering shared by sending and the render endpoints: one place decides handlebars vs merge tags.

Mandrill renders `merge_language: handlebars` with handlebars and everything else with
Mailchimp's `*|TAG|*` merge tags; templates/render and mctemplates/render have no such field,
so there code containing `{{` is taken for handlebars.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from signalmail.sandbox import handlebars
from signalmail.sandbox.config import SandboxConfig
from signalmail.sandbox.errors import MandrillError


def render(
    language: str,
    parts: tuple[Any, Any, Any],
    merged: dict[str, Any],
    options: handlebars.RenderOptions,
) -> tuple[str, str, str]:
    """Render (html, subject, text); handlebars parts may be pre-parsed node lists."""
    html, subject, text = parts
    try:
        if language == "handlebars":
            return (
                handlebars.render(html, merged, options),
                handlebars.render(subject, merged, options),
                handlebars.render(text, merged, options),
            )
        # merge tags print scalars; anything structured is shown as its JSON
        flat = {
            k: v if isinstance(v, str | int | float) else json.dumps(v) for k, v in merged.items()
        }
        return (
            handlebars.render_mailchimp(html, flat, options),
            handlebars.render_mailchimp(subject, flat, options),
            handlebars.render_mailchimp(text, flat, options),
        )
    except handlebars.TemplateError as exc:
        raise MandrillError("Invalid_Template", f"cannot render: {exc}", 6) from exc


def unsub_link(config: SandboxConfig, message_id: str, email: str) -> Callable[[str], str]:
    """`*|UNSUB|*` / `{{unsub}}` target: the sandbox's own /sandbox/unsub, so a click counts."""

    def link(redirect: str) -> str:
        query = urllib.parse.urlencode({"md_id": message_id, "md_email": email, "md_url": redirect})
        return f"{config.public_url.rstrip('/')}/sandbox/unsub?{query}"

    return link


def render_code(
    config: SandboxConfig, code: str, contents: dict[str, str], merged: dict[str, Any]
) -> str:
    """templates/render and mctemplates/render: fill mc:edit regions, then merge the vars.

    The preview has no message, so its unsubscribe link names a placeholder message id.
    """
    options = handlebars.RenderOptions(unsub_link=unsub_link(config, "render-preview", ""))
    try:
        html = handlebars.apply_mc_edit(code, contents)
        language = "handlebars" if "{{" in html else "mailchimp"
        return render(language, (html, "", ""), merged, options)[0]
    except handlebars.TemplateError as exc:
        raise MandrillError("Invalid_Template", f"cannot render: {exc}", 6) from exc


def is_broken(code: str | None) -> bool:
    """Tell whether this code fails to render at all (the `is_broken_template` flag)."""
    if not code:
        return False
    try:
        if "{{" in code:
            handlebars.parse(code)
        else:
            handlebars.render_mailchimp(code, {})
        handlebars.apply_mc_edit(code, {name: "" for name in handlebars.mc_edit_regions(code)})
    except handlebars.TemplateError:
        return True
    return False
