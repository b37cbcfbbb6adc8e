"""Where template code comes from: Mandrill (templates/*, mctemplates/*) or a local folder.

Mandrill calls go through the target's `MandrillClient` (the official mailchimp-transactional
client with the package's quirks and Mandrill's error names handled once), extended with the
template calls the operator CLI needs. The operator CLI may import plugin code; never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from time import sleep
from typing import Any

from target_mailchimp_transactional import (
    AmbiguousError,
    Campaign,
    InvalidKeyError,
    MandrillClient,
    MandrillError,
    RetryableError,
    TemplateError,
    Variant,
)

#: Environment variables the `signalmail templates` options read.
API_KEY_ENV = "SIGNALMAIL_MANDRILL_API_KEY"
BASE_URL_ENV = "SIGNALMAIL_MANDRILL_BASE_URL"
DEFAULT_BASE_URL = "https://mandrillapp.com/api/1.3"


class TemplateToolError(Exception):
    """Stops the whole command (bad key, Mandrill unreachable); the message says what to do."""


class TemplatesClient(MandrillClient):
    """The target's Mandrill client plus templates/* and mctemplates/* calls.

    Reads are retried on transient errors (they are idempotent); writes are not, and `sync`
    re-reads the template before any write, so running it again is the recovery.
    """

    def _read(self, method: Any, body: dict[str, Any], what: str) -> Any:
        delay = 0.5
        for attempt in range(3):
            try:
                return self._call(method, body, what, expect_list=False)
            except InvalidKeyError:
                raise TemplateToolError(
                    f"{what}: Mandrill rejected the API key (Invalid_Key). Check --api-key / "
                    f"{API_KEY_ENV}."
                ) from None
            except (RetryableError, AmbiguousError):  # a read: asking again sends nothing
                if attempt == 2:
                    raise
                sleep(delay)
                delay *= 4
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, method: Any, body: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            result = self._call(method, body, what, expect_list=False)
        except InvalidKeyError:
            raise TemplateToolError(
                f"{what}: Mandrill rejected the API key (Invalid_Key). Check --api-key / "
                f"{API_KEY_ENV}."
            ) from None
        if not isinstance(result, dict):
            raise MandrillError(f"{what}: unexpected answer of type {type(result).__name__}")
        return result

    def template_info(self, slug: str) -> dict[str, Any] | None:
        """templates/info; None when Mandrill says Unknown_Template."""
        try:
            result = self._read(self._client.templates.info, {"name": slug}, "templates/info")
        except TemplateError as exc:
            if exc.name == "Unknown_Template":
                return None
            raise
        return result if isinstance(result, dict) else None

    def mc_template_info(self, template_id: str | int) -> dict[str, Any] | None:
        """mctemplates/info; None when the Mailchimp template does not exist."""
        try:
            result = self._read(
                self._client.mctemplates.mc_templates_info,
                {"mc_template_id": int(template_id)},
                "mctemplates/info",
            )
        except TemplateError as exc:
            if exc.name in {"Unknown_Template", "Unknown_MC_Template"}:
                return None
            raise
        return result if isinstance(result, dict) else None

    def add_template(self, body: dict[str, Any]) -> dict[str, Any]:
        """templates/add (callers pass `publish: false` to create a draft)."""
        return self._write(self._client.templates.add, body, "templates/add")

    def update_template(self, body: dict[str, Any]) -> dict[str, Any]:
        """templates/update (callers pass `publish: false` to change only the draft)."""
        return self._write(self._client.templates.update, body, "templates/update")


@dataclass(frozen=True)
class TemplateRef:
    """One template a campaign variant sends with: a Mandrill slug or a Mailchimp template id."""

    slug: str | None
    mc_template_id: str | None

    @classmethod
    def of(cls, variant: Variant) -> TemplateRef:
        """Return the template a variant names (campaign files set exactly one of the two)."""
        return cls(variant.template, variant.mc_template_id)

    @property
    def label(self) -> str:
        """How messages name it: the API path that serves it."""
        if self.slug:
            return f"mandrill:templates/{self.slug}"
        return f"mailchimp:mctemplates/{self.mc_template_id}"

    @property
    def local_name(self) -> str:
        """File name in a local templates folder: `<slug>.html`, or `mc-<id>.html`."""
        return f"{self.slug}.html" if self.slug else f"mc-{self.mc_template_id}.html"


@dataclass(frozen=True)
class FetchedTemplate:
    """Template code and where it came from (a file path or a Mandrill label)."""

    ref: TemplateRef
    origin: str
    code: str
    subject: str | None = None


class TemplateMissing(Exception):
    """The template does not exist (or has no code to check); the message says which and why."""


class TemplateSource:
    """Fetches template code from a local folder or from Mandrill (published or draft)."""

    def __init__(
        self,
        *,
        local_dir: Path | None = None,
        client: TemplatesClient | None = None,
        draft: bool = False,
    ) -> None:
        if (local_dir is None) == (client is None):
            raise ValueError("give exactly one of local_dir or client")
        self.local_dir = local_dir
        self.client = client
        self.draft = draft
        self._cache: dict[TemplateRef, FetchedTemplate] = {}

    def fetch(self, ref: TemplateRef) -> FetchedTemplate:
        """Return the code sends would use; TemplateMissing says why there is none."""
        if ref not in self._cache:
            self._cache[ref] = self._local(ref) if self.local_dir else self._remote(ref)
        return self._cache[ref]

    def _local(self, ref: TemplateRef) -> FetchedTemplate:
        assert self.local_dir is not None
        path = self.local_dir / ref.local_name
        if not path.is_file():
            raise TemplateMissing(f"{ref.label}: no file {path}")
        return FetchedTemplate(ref, str(path), path.read_text(encoding="utf-8"))

    def _remote(self, ref: TemplateRef) -> FetchedTemplate:
        assert self.client is not None
        if ref.slug:
            info = self.client.template_info(ref.slug)
            what = "templates/info"
        else:
            info = self.client.mc_template_info(str(ref.mc_template_id))
            what = "mctemplates/info"
        if info is None:
            raise TemplateMissing(f"{ref.label} does not exist in Mandrill ({what})")
        if self.draft:
            code, subject = info.get("code"), info.get("subject")
        else:
            code, subject = info.get("publish_code"), info.get("publish_subject")
            if not info.get("published_at") and not code:
                raise TemplateMissing(
                    f"{ref.label} has never been published, and sends use the published "
                    f"version (lint the draft with --draft)"
                )
        return FetchedTemplate(ref, ref.label, code or "", subject)


def template_refs(campaign: Campaign) -> list[tuple[Variant, TemplateRef]]:
    """Each variant with the template it sends with, in file order."""
    return [(variant, TemplateRef.of(variant)) for variant in campaign.variants]
