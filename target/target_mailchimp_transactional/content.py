"""What one recipient's email is made of: a trigger row's payload and person fields, as sent.

A row from the `email_triggers` mart carries a JSON payload (products, amounts, links) and the
recipient's fields (name, locale, time zone). Before anything merges them into a template they
are made safe (`sanitize`: links checked, control characters gone, the name fit for a header)
and amounts are formatted for the recipient's locale (`money`: a `<field>_display` string next
to every amount). The merge variables are then the campaign's own (`Campaign.merge_vars_for`)
followed by the rendered Jinja blocks (`BlockRenderer.recipient_vars`).

The target's `Dispatcher` does this for every email it sends, and `signalmail templates
preview` for every preview it renders. One function for both keeps a preview what the
recipient would get: prices, dropped links and cleaned names included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from target_mailchimp_transactional import money, sanitize
from target_mailchimp_transactional.blocks import BlockRenderer
from target_mailchimp_transactional.campaigns import Campaign, Variant

#: The row's fields about the recipient that templates and blocks may merge.
PERSON_KEYS = ("first_name", "locale", "timezone", "user_id", "email")


@dataclass(frozen=True)
class ContentSettings:
    """The target settings that shape content (same names as its config)."""

    link_domains: tuple[str, ...] = ()
    default_currency: str | None = None
    default_locale: str = "en_US"


class PayloadError(ValueError):
    """A row whose payload cannot be read: not JSON, or JSON that is not an object."""


@dataclass(frozen=True)
class RecipientContent:
    """A row's payload and person fields, safe and formatted, ready to merge."""

    payload: dict[str, Any]
    person: dict[str, Any]

    def merge_vars(
        self, campaign: Campaign, variant: Variant, blocks: BlockRenderer
    ) -> list[dict[str, Any]]:
        """Mandrill's merge_vars for this recipient: the campaign's, then the rendered blocks.

        Raises KeyError for a merge var the campaign needs and the payload lacks, and
        BlockRenderError for a block that fails on this payload.
        """
        merge_vars = campaign.merge_vars_for(self.payload, self.person)
        return merge_vars + blocks.recipient_vars(campaign, variant, self.payload, self.person)


#: the largest payload one trigger may carry (its JSON text): an email's data is kilobytes
MAX_PAYLOAD_BYTES = 256 * 1024

#: what a value of a row may raise where the code expects another shape (a list where an
#: object goes, a text quantity compared, a nesting past the stack): that trigger is
#: `invalid`, in the target as in `signalmail templates preview`, and the run goes on
UNUSABLE_VALUE_ERRORS = (TypeError, ValueError, ArithmeticError, RecursionError)


def recipient_content(
    row: dict[str, Any], settings: ContentSettings, counts: dict[str, int] | None = None
) -> RecipientContent:
    """Read, clean and format one row's payload and person fields (see the module doc).

    `counts` collects what cleaning dropped (`links_dropped`), for the run's summary.
    Raises PayloadError when the payload is not a JSON object.
    """
    payload = row.get("payload")
    try:
        if payload is not None and not isinstance(payload, str):
            # an object as singer-sdk reads it: its numbers are Decimals, which neither the
            # money formatting nor the request's JSON takes
            payload = json.dumps(payload, default=_number, ensure_ascii=False)
        if isinstance(payload, str):
            size = len(payload.encode("utf-8", "surrogatepass"))
            if size > MAX_PAYLOAD_BYTES:
                # one row's 30 MB product name would make its whole call too large for
                # Mandrill, and every trigger in it would spend its tries
                msg = f"payload is {size:,} bytes, over the {MAX_PAYLOAD_BYTES:,} one email takes"
                raise PayloadError(msg)
            payload = json.loads(payload) if payload.strip() else {}
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            msg = "payload is not a JSON object"
            raise PayloadError(msg)
        payload = sanitize.payload(payload, settings.link_domains, counts)
    except json.JSONDecodeError as exc:
        msg = f"payload is not JSON: {exc}"
        raise PayloadError(msg) from exc
    except RecursionError:  # in json's decoder or encoder, or in the cleaning's walk
        raise PayloadError("payload is nested too deeply") from None
    person = {key: row.get(key) for key in PERSON_KEYS}
    person = {k: sanitize.text(v) if isinstance(v, str) else v for k, v in person.items()}
    payload = money.add_display_amounts(
        payload, text_or_none(person.get("locale")), settings.default_currency,
        settings.default_locale,
    )  # fmt: skip
    person["first_name"] = sanitize.header_text(text_or_none(person.get("first_name")))
    if isinstance(payload.get("first_name"), str):
        # the merge var reads the payload's copy first, and a subject may merge it: it is
        # cleaned as the To name is (one line, no control or direction characters, cut)
        payload["first_name"] = sanitize.header_text(payload["first_name"])
    return RecipientContent(payload=payload, person=person)


def _number(value: Any) -> Any:
    """Give a Decimal as the JSON number it was read from (json.dumps' `default`)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def text_or_none(value: Any) -> str | None:
    """Read a warehouse value as text; null and the empty string both mean absent."""
    return None if value is None or value == "" else str(value)
