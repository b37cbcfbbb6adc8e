"""Campaign configuration: `templates/campaigns/<campaign>.yml`, loaded and validated at start.

A campaign file says which Mandrill template a trigger of that campaign is sent with and how the
trigger's payload becomes the message. Everything is validated with jsonschema before the first
record is read, so a marketer's typo stops the run with the file and field named instead of
sending a half-personalised email. The reference for every key is docs/activation.md.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jsonschema
import yaml

_NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}
_TEMPLATE_KEYS = {
    "template": {
        "type": "string",
        "minLength": 1,
        "description": "Mandrill template slug (messages/send-template).",
    },
    "mc_template_id": {
        "type": ["string", "integer"],
        "pattern": "^[0-9]+$",
        "description": "Mailchimp template id (messages/send-mc-template).",
    },
    "mc_template_version": {"enum": ["draft", "published"]},
    "subject": {"type": "string", "minLength": 1, "maxLength": 998},
    # a domain with a dot, as Mandrill checks it: it refuses the whole call otherwise, and the
    # target would split it down to each recipient and record every one `invalid`
    "from_email": {
        "type": "string",
        "format": "email",
        "pattern": "^[^@\\s]+@[^@\\s.]+(\\.[^@\\s.]+)+$",
    },
    "from_name": {"type": "string"},
    "tags": {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": 50, "pattern": "^[^_]"},
        "uniqueItems": True,
    },
    "blocks": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["region", "template"],
            "properties": {
                "region": {"type": "string", "minLength": 1},
                "template": {"type": "string", "pattern": "\\.j2$"},
                "mode": {"enum": ["recipient", "shared"]},
            },
        },
    },
}

CAMPAIGN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["campaign", "from_email"],
    "properties": {
        "campaign": _NAME,
        "description": {"type": "string"},
        **_TEMPLATE_KEYS,
        "merge_vars": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "field": {"type": "string", "minLength": 1},
                            "required": {"type": "boolean"},
                            "default": {},
                        },
                    },
                ]
            },
        },
        "utm": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "source": {"type": "string"},
                "medium": {"type": "string"},
                "campaign": {"type": "string"},
                "content": {"type": "string"},
                "term": {"type": "string"},
                "paths": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
        },
        "holdout_share": {"type": "number", "minimum": 0, "maximum": 1},
        "variants": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
                    "weight": {"type": "number", "exclusiveMinimum": 0},
                    **_TEMPLATE_KEYS,
                },
            },
        },
    },
}

DEFAULT_UTM_PATHS = ("products[].url", "recommendations[].url", "product_url", "cart_url")
RECIPIENT_FIELDS = ("first_name", "locale", "timezone", "user_id", "email")


class CampaignConfigError(ValueError):
    """A campaign file is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Block:
    """A Jinja2 block rendered into an `mc:edit` region."""

    region: str
    template: str
    mode: str = "recipient"


@dataclass(frozen=True)
class MergeVar:
    """One payload field exposed to the template as a handlebars merge var."""

    name: str
    field: str
    required: bool = False
    default: Any = None


@dataclass(frozen=True)
class Variant:
    """One resolved arm of a campaign: everything a send needs, overrides applied."""

    name: str
    weight: float
    template: str | None
    mc_template_id: str | None
    mc_template_version: str | None
    subject: str | None
    from_email: str
    from_name: str | None
    tags: tuple[str, ...]
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Campaign:
    """A validated campaign file."""

    name: str
    path: Path
    merge_vars: tuple[MergeVar, ...]
    utm: dict[str, str]
    utm_paths: tuple[str, ...]
    holdout_share: float
    variants: tuple[Variant, ...]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def variant_for(self, user_id: str | None, trigger_id: str) -> Variant:
        """Deterministic A/B assignment: the same user always lands in the same arm.

        Hash of campaign and user (trigger id when the user is unknown) mapped to [0, 1) and
        placed on the cumulative weights, so reruns and retries never switch arms.
        """
        if len(self.variants) == 1:
            return self.variants[0]
        point = unit_hash(f"variant:{self.name}:{user_id or trigger_id}")
        total = sum(v.weight for v in self.variants)
        upto = 0.0
        for variant in self.variants:
            upto += variant.weight / total
            if point < upto:
                return variant
        return self.variants[-1]

    def holdout_fallback(self, user_id: str | None, trigger_id: str) -> bool:
        """Holdout when the mart gave none, by the dbt model's own rule.

        int_trigger_decisions holds a user out when `hash_fraction(user_id || '|' || campaign)`
        (macros/casting.sql: the first 8 hex digits of the md5, over 2**32) is below the share:
        the same arithmetic here puts a user in the same arm as `trigger_decisions` reports,
        which the uplift in campaign_performance relies on. A row without a user (the model
        always has one) falls back to its trigger id.
        """
        if self.holdout_share <= 0:
            return False
        key = f"{user_id}|{self.name}" if user_id else f"{trigger_id}|{self.name}"
        digest = hashlib.md5(key.encode("utf-8"), usedforsecurity=False).hexdigest()
        return int(digest[:8], 16) / 2**32 < self.holdout_share

    def merge_vars_for(self, payload: dict[str, Any], row: dict[str, Any]) -> list[dict[str, Any]]:
        """Build the recipient's merge vars; raises KeyError naming a missing required field."""
        out: list[dict[str, Any]] = []
        for var in self.merge_vars:
            value = lookup(payload, var.field)
            if value is None and var.field in RECIPIENT_FIELDS:
                value = row.get(var.field)
            if value is None:
                if var.required:
                    raise KeyError(f"payload has no `{var.field}` (required merge var)")
                value = var.default
            if value is None:
                continue
            out.append({"name": var.name, "content": self.with_utm(value, var.field)})
        return out

    def with_utm(self, value: Any, path: str) -> Any:
        """Append the campaign's UTM parameters to the configured URL paths inside `value`."""
        if not self.utm:
            return value
        for utm_path in self.utm_paths:
            head = utm_path.partition(".")[0]
            key = head.removesuffix("[]")
            if key != path:
                continue
            value = _apply_utm(value, utm_path[len(key) :].lstrip("."), self.utm)
        return value


def block_var_name(region: str) -> str:
    """Merge var carrying a recipient block's HTML (handlebars-safe name)."""
    return "block_" + "".join(c if c.isalnum() else "_" for c in region)


def unit_hash(text: str) -> float:
    """Map text to a stable number in [0, 1) (sha256: identical on every machine and run)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def lookup(payload: dict[str, Any], path: str) -> Any:
    """Dotted path into the payload (`cart.total`); None when any step is missing."""
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def add_utm(url: str, params: dict[str, str]) -> str:
    """`url` with the UTM parameters set (existing utm_* replaced, other query kept)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return url
    return _add_utm(url, tuple(params.items()))


@functools.lru_cache(maxsize=4096)
def _add_utm(url: str, params: tuple[tuple[str, str], ...]) -> str:
    # Cached: a catalogue has far fewer product URLs than a send has recipients.
    if "utm_" not in url and "#" not in url:  # fast path: nothing to replace
        return url + ("&" if "?" in url else "?") + urlencode(params)
    names = {k for k, _ in params}
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    query.extend(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _apply_utm(value: Any, rest: str, params: dict[str, str]) -> Any:
    """Walk `value` along `rest` (`[]` = each item, `.key` = a field) and tag the URL found."""
    if rest.startswith("[]"):
        rest = rest[2:].lstrip(".")
    if not rest:
        if isinstance(value, list):
            return [add_utm(v, params) if isinstance(v, str) else v for v in value]
        return add_utm(value, params) if isinstance(value, str) else value
    if isinstance(value, list):
        return [_apply_utm(item, rest, params) for item in value]
    if isinstance(value, dict):
        key, _, tail = rest.partition(".")
        bare = key.removesuffix("[]")
        if bare not in value:
            return value
        copy = dict(value)
        copy[bare] = _apply_utm(value[bare], ("[]" if key.endswith("[]") else "") + tail, params)
        return copy
    return value


def _field_path(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "(top level)"


def load_campaign(path: Path, blocks_dir: Path | None = None) -> Campaign:
    """Load and validate one campaign file; CampaignConfigError names the file and field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CampaignConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CampaignConfigError(
            f"{path}: must be a mapping of settings, got {type(raw).__name__}"
        )
    validator = jsonschema.Draft202012Validator(CAMPAIGN_SCHEMA)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{path}: field `{_field_path(e)}`: {e.message}" for e in errors[:10]]
        raise CampaignConfigError("invalid campaign file:\n  " + "\n  ".join(lines))
    fail = _failer(path)
    if raw["campaign"] != path.stem:
        fail("campaign", f"is {raw['campaign']!r} but the file is named {path.name}")

    variants_raw = raw.get("variants") or [{"name": "control", "weight": 1}]
    variants: list[Variant] = []
    seen: set[str] = set()
    for i, vraw in enumerate(variants_raw):
        where = f"variants[{i}]." if raw.get("variants") else ""
        if vraw["name"] in seen:
            fail(f"{where}name", f"duplicate variant name {vraw['name']!r}")
        seen.add(vraw["name"])
        merged = {k: raw[k] for k in _TEMPLATE_KEYS if k in raw}
        # A variant that names one kind of template replaces the campaign's other kind.
        if "template" in vraw or "mc_template_id" in vraw:
            merged.pop("template", None)
            merged.pop("mc_template_id", None)
        merged.update({k: v for k, v in vraw.items() if k in _TEMPLATE_KEYS})
        has_slug, has_mc = "template" in merged, "mc_template_id" in merged
        if has_slug == has_mc:
            fail(
                f"{where}template",
                "set exactly one of `template` (Mandrill slug) or `mc_template_id`",
            )
        blocks = tuple(Block(**b) for b in merged.get("blocks", []))
        regions = [b.region for b in blocks]
        if len(set(regions)) != len(regions):
            fail(f"{where}blocks", "two blocks fill the same mc:edit region")
        if len({block_var_name(r) for r in regions}) != len(regions):
            # `cart-items` and `cart_items` would share one merge var, block_cart_items
            fail(
                f"{where}blocks",
                "two regions share one merge var name (they differ only in "
                "characters other than letters and digits)",
            )
        if blocks_dir is not None:
            for j, block in enumerate(blocks):
                if not (blocks_dir / block.template).is_file():
                    fail(
                        f"{where}blocks[{j}].template",
                        f"{block.template!r} not found in {blocks_dir}",
                    )
        variants.append(
            Variant(
                name=vraw["name"],
                weight=float(vraw.get("weight", 1)),
                template=merged.get("template"),
                mc_template_id=_opt_str(merged.get("mc_template_id")),
                mc_template_version=_opt_str(merged.get("mc_template_version")),
                subject=merged.get("subject"),
                from_email=merged["from_email"],
                from_name=merged.get("from_name"),
                tags=tuple(merged.get("tags", [])),
                blocks=blocks,
            )
        )

    merge_vars: list[MergeVar] = []
    for i, item in enumerate(raw.get("merge_vars", [])):
        spec = {"name": item} if isinstance(item, str) else dict(item)
        spec.setdefault("field", spec["name"])
        if spec["name"].lower() in {m.name.lower() for m in merge_vars}:
            fail(f"merge_vars[{i}]", f"duplicate merge var {spec['name']!r}")
        if spec["name"].startswith("_"):  # Mandrill refuses the whole call (ValidationError)
            fail(
                f"merge_vars[{i}]",
                f"merge var {spec['name']!r}: Mandrill names may not start with _",
            )
        merge_vars.append(MergeVar(**spec))

    utm_raw = dict(raw.get("utm") or {})
    paths = tuple(utm_raw.pop("paths", DEFAULT_UTM_PATHS))
    utm: dict[str, str] = {}
    if utm_raw:
        utm_raw.setdefault("campaign", raw["campaign"])
        utm = {f"utm_{k}": str(v) for k, v in utm_raw.items()}
    return Campaign(
        name=raw["campaign"],
        path=path,
        merge_vars=tuple(merge_vars),
        utm=utm,
        utm_paths=paths,
        holdout_share=float(raw.get("holdout_share", 0.0)),
        variants=tuple(variants),
        raw=raw,
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _failer(path: Path) -> Any:
    def fail(field_name: str, message: str) -> None:
        raise CampaignConfigError(
            f"invalid campaign file:\n  {path}: field `{field_name}`: {message}"
        )

    return fail


def load_campaigns(campaigns_dir: Path, blocks_dir: Path | None = None) -> dict[str, Campaign]:
    """Every `*.yml` in the folder, validated; all problems reported together."""
    if not campaigns_dir.is_dir():
        raise CampaignConfigError(
            f"campaigns_dir {campaigns_dir} does not exist or is not a folder"
        )
    campaigns: dict[str, Campaign] = {}
    problems: list[str] = []
    for path in sorted([*campaigns_dir.glob("*.yml"), *campaigns_dir.glob("*.yaml")]):
        try:
            campaign = load_campaign(path, blocks_dir)
        except CampaignConfigError as exc:
            problems.append(str(exc).removeprefix("invalid campaign file:\n  "))
            continue
        campaigns[campaign.name] = campaign
    if problems:
        raise CampaignConfigError("invalid campaign file(s):\n  " + "\n  ".join(problems))
    if not campaigns:
        raise CampaignConfigError(f"no campaign files (*.yml) in {campaigns_dir}")
    return campaigns
