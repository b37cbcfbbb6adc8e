"""`signalmail templates sync`: push the starter templates as drafts, never clobbering a marketer.

Each `templates/mandrill/<slug>.html` is pushed with templates/add (`publish: false`) when Mandrill
does not have the slug, or templates/update (`publish: false`) when it does: only the draft
changes, what sends use (the published version) stays until someone publishes in Mandrill.

Marketers edit templates in Mailchimp's editor. A template whose published or draft code is not
one this tool pushed was changed by someone, and is left alone (reported, exit 1) unless
`--force`. To know what it pushed, sync keeps a small record, `templates/.sync-state.json`:
per API host and slug, the SHA-256 of every version pushed. A lost record errs on the safe side:
any remote code that differs from the local file counts as a marketer's change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from target_mailchimp_transactional import MandrillError

from signalmail.sandbox import handlebars
from signalmail.templates.source import TemplatesClient

#: Versions remembered per slug: enough to recognise any recent push, small enough to read.
HISTORY = 50
#: Label put on templates this tool creates, so marketers can filter them in Mandrill.
LABEL = "signalmail"


def code_hash(code: str | None) -> str:
    """SHA-256 of template code, newline style normalised (editors and APIs change CRLF)."""
    text = (code or "").replace("\r\n", "\n")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SyncRecord:
    """What sync pushed, per API host and slug; written atomically after every push."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"version": 1, "hosts": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                msg = f"{path}: sync record is not JSON ({exc}); fix or delete it"
                raise ValueError(msg) from None
            if not isinstance(loaded, dict) or not isinstance(loaded.get("hosts"), dict):
                raise ValueError(f"{path}: sync record has no `hosts` mapping; fix or delete it")
            self.data = loaded

    def pushed(self, host: str, slug: str) -> list[str]:
        """Hashes of the versions pushed to `host` for `slug`, oldest first."""
        return list(self.data["hosts"].get(host, {}).get(slug, {}).get("pushed", []))

    def remember(self, host: str, slug: str, digest: str) -> None:
        """Record a pushed version and save the file (atomic rename: never half-written)."""
        entry = self.data["hosts"].setdefault(host, {}).setdefault(slug, {"pushed": []})
        if digest in entry["pushed"]:
            entry["pushed"].remove(digest)
        entry["pushed"] = [*entry["pushed"], digest][-HISTORY:]
        entry["last_pushed_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.save()

    def save(self) -> None:
        """Write to a temporary file beside the record and rename it over the record."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sync-state.", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        Path(tmp).replace(self.path)


@dataclass(frozen=True)
class SyncResult:
    """What happened to one template; `ok` is False for conflicts and errors."""

    slug: str
    action: str  # added | updated | unchanged | kept | error | would-add | would-update
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether this outcome leaves the command successful."""
        return self.action not in ("kept", "error")

    def __str__(self) -> str:
        return f"{self.action:<12} {self.slug}" + (f": {self.detail}" if self.detail else "")


def _defaults_for(slug: str, campaign_defaults: dict[str, dict[str, str]]) -> dict[str, str]:
    return {k: v for k, v in campaign_defaults.get(slug, {}).items() if v}


def sync_templates(
    client: TemplatesClient,
    templates_dir: Path,
    record: SyncRecord,
    *,
    force: bool = False,
    dry_run: bool = False,
    only: set[str] | None = None,
    campaign_defaults: dict[str, dict[str, str]] | None = None,
) -> list[SyncResult]:
    """Push every `<slug>.html` in `templates_dir` as a draft; one result per file.

    `campaign_defaults` (slug -> from_email/from_name/subject from the campaign files) fill a
    new template's defaults; an existing template's are the marketer's and are left alone.
    """
    files = sorted(templates_dir.glob("*.html"))
    if only:
        if missing := sorted(only - {f.stem for f in files}):
            raise ValueError(f"no template file(s) {missing} in {templates_dir}")
        files = [f for f in files if f.stem in only]
    results = []
    for path in files:
        try:
            results.append(_sync_one(client, path, record, force, dry_run, campaign_defaults or {}))
        except MandrillError as exc:
            # One template's API error does not stop the others; Invalid_Key
            # (TemplateToolError) does, since nothing else can succeed either.
            results.append(SyncResult(path.stem, "error", str(exc)))
    return results


def _sync_one(
    client: TemplatesClient,
    path: Path,
    record: SyncRecord,
    force: bool,
    dry_run: bool,
    campaign_defaults: dict[str, dict[str, str]],
) -> SyncResult:
    host = client.host
    slug = path.stem
    code = path.read_text(encoding="utf-8")
    try:
        handlebars.parse(code)
    except handlebars.TemplateError as exc:
        return SyncResult(slug, "error", f"{path}: not pushed, {exc}")
    local = code_hash(code)
    remote = client.template_info(slug)
    if remote is None:
        if dry_run:
            return SyncResult(slug, "would-add", "as a draft")
        body = {
            "name": slug,
            "code": code,
            "publish": False,
            "labels": [LABEL],
            **_defaults_for(slug, campaign_defaults),
        }
        client.add_template(body)
        record.remember(host, slug, local)
        return SyncResult(slug, "added", "draft; publish it in Mandrill to use it")

    history = set(record.pushed(host, slug)) | {local}
    draft, published = remote.get("code"), remote.get("publish_code")
    changed = []
    if published is not None and code_hash(published) not in history:
        changed.append(f"published version (published {remote.get('published_at')})")
    if code_hash(draft) not in history:
        changed.append(f"draft (updated {remote.get('draft_updated_at')})")
    if code_hash(draft) == local:
        if not dry_run:
            record.remember(host, slug, local)
        return SyncResult(slug, "unchanged", "Mandrill's draft is the local file")
    if changed and not force:
        return SyncResult(
            slug,
            "kept",
            f"someone changed the {' and the '.join(changed)} since the last sync; not "
            f"overwritten. Merge their changes into {path}, or rerun with --force",
        )
    if dry_run:
        return SyncResult(slug, "would-update", "draft only")
    client.update_template({"name": slug, "code": code, "publish": False})
    record.remember(host, slug, local)
    note = f" (--force: replaced despite changes to the {' and the '.join(changed)})"
    return SyncResult(
        slug, "updated", "draft only; published version untouched" + (note if changed else "")
    )
