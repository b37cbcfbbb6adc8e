"""Jinja2 blocks from `templates/blocks/` rendered into a template's `mc:edit` regions.

`template_content` (what fills an mc:edit region) is one value per API call, while a batch
carries many recipients. So a block has two modes:

- `recipient` (default): rendered per recipient with that trigger's payload, handed to Mandrill
  as the merge var `block_<region>`, and the region is filled with `{{{block_<region>}}}` (raw
  handlebars), so each recipient gets their own HTML and the batch stays one call.
- `shared`: rendered once per campaign/variant (context: campaign, variant, utm) and sent as the
  region's content as is; it may itself contain handlebars for Mandrill to merge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from target_mailchimp_transactional.campaigns import (
    Block,
    Campaign,
    Variant,
    add_utm,
    block_var_name,
)


class BlockRenderError(ValueError):
    """A block failed to render for one trigger (missing data, template error)."""


def blank_none(value: Any) -> Any:
    """Print a null value as nothing, never as `None`."""
    return "" if value is None else value


class BlockRenderer:
    """Loads blocks once (autoescaped HTML) and renders them.

    A product without `image_url` or `price` must not cost the shopper their email, so a missing
    field renders empty (Jinja2's default Undefined), and so does a null one: `finalize` prints
    None as nothing, the rule Mandrill's handlebars follow for null merge values. Syntax errors
    still fail at start (`check`) and a block that raises while rendering makes that one
    trigger `invalid`.
    """

    def __init__(self, blocks_dir: Path) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(blocks_dir)),
            autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=blank_none,
        )
        self.env.filters["utm"] = lambda url, params: add_utm(url, params or {})
        self._compiled: dict[str, jinja2.Template] = {}

    def check(self, campaigns: dict[str, Campaign]) -> None:
        """Compile every referenced block, and render the shared ones, before any send.

        A shared block's context is the same for every email of its variant, so rendering it
        here finds every error it can ever have (`{{ product.name }}` with no product, say).
        Found while sending, the error would come after the call's triggers were marked
        `sending`, with no request made, and every run would stop at the same call.
        """
        for campaign in campaigns.values():
            for variant in campaign.variants:
                for block in variant.blocks:
                    try:
                        self.env.get_template(block.template)
                    except jinja2.TemplateError as exc:
                        raise BlockRenderError(
                            f"{campaign.path}: block {block.template!r} does not compile: {exc}"
                        ) from None
                    if block.mode == "shared":
                        try:
                            self._render(block, self._shared_context(campaign, variant))
                        except BlockRenderError as exc:
                            raise BlockRenderError(
                                f"{campaign.path}: shared {exc} (a shared block sees only"
                                " campaign, variant and utm)"
                            ) from None

    def template_content(self, campaign: Campaign, variant: Variant) -> list[dict[str, str]]:
        """Build the call-level `template_content` for a campaign/variant."""
        content = []
        for block in variant.blocks:
            if block.mode == "shared":
                html = self._render(block, self._shared_context(campaign, variant))
            else:
                html = "{{{" + block_var_name(block.region) + "}}}"
            content.append({"name": block.region, "content": html})
        return content

    def recipient_vars(
        self, campaign: Campaign, variant: Variant, payload: dict[str, Any], row: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Per-recipient block HTML as merge vars (raises BlockRenderError)."""
        out = []
        context = {
            **row,
            **payload,
            "payload": payload,
            "campaign": campaign.name,
            "variant": variant.name,
            "utm": campaign.utm,
        }
        for block in variant.blocks:
            if block.mode != "recipient":
                continue
            out.append(
                {"name": block_var_name(block.region), "content": self._render(block, context)}
            )
        return out

    @staticmethod
    def _shared_context(campaign: Campaign, variant: Variant) -> dict[str, Any]:
        """Return what a shared block is rendered with: the same for every email of the variant."""
        return {"campaign": campaign.name, "variant": variant.name, "utm": campaign.utm}

    def _render(self, block: Block, context: dict[str, Any]) -> str:
        try:
            template = self._compiled.get(block.template)
            if template is None:
                template = self._compiled[block.template] = self.env.get_template(block.template)
            return template.render(context)
        except jinja2.TemplateError as exc:
            raise BlockRenderError(f"block {block.template!r}: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
            # the block's own expressions on this payload: `p.price > 50` with a null price,
            # a loop over a number. This trigger's block fails, not the run
            raise BlockRenderError(
                f"block {block.template!r}: {type(exc).__name__}: {exc}"
            ) from None
