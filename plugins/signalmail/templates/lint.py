"""`signalmail templates lint`: catch a marketer's typo before Mandrill sends it to thousands.

A template is checked against what the target will actually give it for one campaign variant:

- every merge tag reads a merge var the campaign sends (`merge_vars` in its YAML, plus the
  `block_<region>` vars of recipient blocks); Mandrill renders anything else as an empty string,
  silently. Inside `{{#each products}}` (and `recommendations`) item fields are checked against
  the product fields of the event contract;
- every helper is one Mandrill knows, with enough arguments; unknown block helpers and syntax
  errors are reported with their line;
- every `mc:edit` region the campaign's blocks fill exists in the template (else the block HTML
  is dropped, silently);
- an unsubscribe link is present (`{{unsub "..."}}` or `*|UNSUB|*`).

Parsing reuses the sandbox's renderer (`signalmail.sandbox.handlebars`), so the linter sees the
exact names, scopes and helpers the renderer uses.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from target_mailchimp_transactional import Campaign, Variant, block_var_name

from signalmail.sandbox import handlebars
from signalmail.sandbox.handlebars import Block, Expr, Literal, Mustache, Text
from signalmail.sandbox.handlebars import Path as HbPath
from signalmail.templates.source import TemplateMissing, TemplateSource, template_refs

#: Row columns of the email_triggers mart a merge var may come from (docs/contracts.md 4).
ROW_FIELDS = frozenset(
    {"trigger_id", "campaign", "user_id", "email", "first_name", "locale", "timezone"}
)
#: Payload fields the contract names (the list is open-ended: unknown ones are warnings).
PAYLOAD_FIELDS = frozenset(
    {
        "products",
        "cart_total",
        "cart_total_display",
        "total_display",
        "order_total",
        "order_total_display",
        "currency",
        "recommendations",
        "search_term",
        "order_id",
        "total",
        "cart_url",
        "cart_id",
    }
)
#: Fields of one product (`products[]` items in the event contract).
PRODUCT_FIELDS = frozenset(
    {
        "product_id",
        "sku",
        "name",
        "brand",
        "category",
        "price",
        "price_display",
        "quantity",
        "url",
        "image_url",
    }
)
#: Fields that may be null for some trigger (docs/contracts.md 4 and the dbt payload builders:
#: a product event without a price, a cart without a total, a shopper without a first name).
#: Null prints nothing, so one printed right next to a literal word leaves a stray label
#: ("Total: ", "Hi ,"): lint wants it inside `{{#if field}}`.
NULLABLE_FIELDS = frozenset(
    {
        "first_name",
        "cart_total",
        "cart_total_display",
        "total",
        "total_display",
        "currency",
        "search_term",
        "order_id",
    }
)
NULLABLE_PRODUCT_FIELDS = frozenset(
    {"price", "price_display", "quantity", "brand", "category", "url", "image_url"}
)
#: Payload arrays whose items are products.
PRODUCT_ARRAYS = frozenset({"products", "recommendations"})
#: `@data` variables the renderer provides inside blocks.
DATA_NAMES = frozenset({"index", "key", "first", "last", "root"})
#: Mailchimp merge tags that are not merge vars.
MC_SPECIAL = re.compile(
    r"^(UNSUB|UPDATE_PROFILE|ARCHIVE|LIST:.*|DATE:.*|IF:.*|IFNOT:.*|ELSEIF:.*|ELSE:|END:IF|"
    r"MC:.*|REWARDS|CURRENT_YEAR|EMAIL)$",
    re.IGNORECASE,
)
_MC_TAG = re.compile(r"\*\|([^|]*)\|\*")
_UNSUB_MC = re.compile(r"\*\|UNSUB(?::[^|]*)?\|\*", re.IGNORECASE)
_LINE_PREFIX = re.compile(r"^line (\d+): (.*)$", re.DOTALL)


@dataclass(frozen=True, order=True)
class Finding:
    """One problem, printed `file:line: severity: message` like a compiler."""

    path: str
    line: int
    severity: str  # "error" | "warning"
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


def text_beside(before: str, after: str) -> str | None:
    """Give the literal words printed right beside a value (an excerpt), None when there are none.

    `before` and `after` are the template text on either side of the print. A value inside an
    attribute (`href="{{url}}"`) shows no text beside it; markup (`>`/`<`) is not words. Both
    linters (Mandrill templates and Jinja2 blocks) decide "stray label if null" by this.
    """
    left, right = before.rstrip(), after.lstrip()
    if re.search(r"=\s*[\"']?$", left):
        return None
    if (left and not left.endswith(">")) or (right and not right.startswith("<")):
        return (left[-20:] + " … " + right[:20]).strip()
    return None


def _line_of(text: str, needle: str | re.Pattern[str]) -> int:
    """1-based line of the first match of `needle` in `text`, or 1."""
    match = re.search(needle if isinstance(needle, re.Pattern) else re.escape(needle), text)
    return text.count("\n", 0, match.start()) + 1 if match else 1


def _suggest(name: str, choices: set[str] | frozenset[str]) -> str:
    close = difflib.get_close_matches(name.lower(), sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


@dataclass
class _Scope:
    """What a bare name resolves against: root merge vars, product items, or unknown data."""

    kind: str  # "root" | "product" | "opaque"
    names: frozenset[str]
    source: str = ""


class _Checker:
    """Walks the handlebars AST with a scope stack, as the renderer resolves names."""

    def __init__(self, origin: str, provided: set[str], campaign: Campaign) -> None:
        self.origin = origin
        self.provided = {name.lower() for name in provided}
        self.campaign = campaign
        self.findings: list[Finding] = []
        self.has_unsub = False
        self.guarded: list[frozenset[str]] = []  # names an enclosing #if tests

    def error(self, line: int, message: str) -> None:
        self.findings.append(Finding(self.origin, line, "error", message))

    def warn(self, line: int, message: str) -> None:
        self.findings.append(Finding(self.origin, line, "warning", message))

    def run(self, nodes: list[Any]) -> None:
        self.visit(nodes, [_Scope("root", frozenset(self.provided))])

    def visit(self, nodes: list[Any], scopes: list[_Scope]) -> None:
        for i, node in enumerate(nodes):
            if isinstance(node, Mustache):
                self.mustache(node, scopes)
                before = nodes[i - 1] if i > 0 else ""
                after = nodes[i + 1] if i + 1 < len(nodes) else ""
                self.unguarded_null(node, scopes, before, after)
            elif isinstance(node, Block):
                self.block(node, scopes)

    def unguarded_null(self, node: Mustache, scopes: list[_Scope], before: Any, after: Any) -> None:
        """Error for a nullable field printed next to literal words outside an #if on it."""
        name = node.name
        if node.args or name.data or len(name.parts) != 1:
            return
        if handlebars.is_helper_name(name) and name.parts[0] in handlebars.HELPERS:
            return
        field = name.parts[0].lower()
        scope = self._target_scope(name, scopes)
        nullable = NULLABLE_PRODUCT_FIELDS if scope and scope.kind == "product" else NULLABLE_FIELDS
        required = {var.name.lower() for var in self.campaign.merge_vars if var.required}
        if scope and scope.kind == "root" and field in required:  # the target never sends it null
            return
        if field not in nullable or any(field in names for names in self.guarded):
            return
        shown = text_beside(
            before.value if isinstance(before, Text) else "",
            after.value if isinstance(after, Text) else "",
        )
        if shown is not None:
            self.error(
                node.line,
                f"`{{{{{name.raw}}}}}` can be null and sits next to text ({shown!r}): that text "
                f"would show with nothing beside it; wrap both in "
                f"{{{{#if {name.raw}}}}}...{{{{/if}}}}",
            )

    def mustache(self, node: Mustache, scopes: list[_Scope]) -> None:
        name = node.name
        # The renderer's own rule: `{{url}}` calls the helper, `{{this.url}}` is a lookup.
        if handlebars.is_helper_name(name) and (name.parts[0] in handlebars.HELPERS or node.args):
            helper = name.parts[0]
            if helper not in handlebars.HELPERS:
                known = ", ".join(sorted(handlebars.HELPERS))
                self.error(
                    node.line,
                    f"unknown helper `{helper}`{_suggest(helper, set(handlebars.HELPERS))}; "
                    f"Mandrill's helpers are {known} (and #if, #unless, #each, #with)",
                )
            else:
                minimum = handlebars.HELPERS[helper][0]
                if len(node.args) < minimum and helper in scopes[-1].names | self.provided:
                    self.error(
                        node.line,
                        f"`{{{{{helper}}}}}` calls Mandrill's `{helper}` helper (helpers win over "
                        f"fields of the same name), so the `{helper}` value never shows; write "
                        f"`{{{{this.{helper}}}}}`",
                    )
                elif len(node.args) < minimum:
                    self.error(node.line, f"helper `{helper}` needs {minimum} argument(s)")
                self.has_unsub |= helper == "unsub"
            for arg in node.args:
                self.arg(arg, scopes, node.line)
            return
        if not name.raw and node.args:  # a literal: {{"text"}}
            return
        self.arg(name, scopes, node.line)
        if node.escape and not name.data and name.depth == 0 and len(scopes) == 1:
            head = name.parts[0].lower() if name.parts else ""
            if head.startswith("block_"):
                self.warn(
                    node.line,
                    f"`{{{{{name.raw}}}}}` holds HTML rendered from a Jinja2 block and would be "
                    f"escaped; write `{{{{{{{name.raw}}}}}}}`",
                )

    def block(self, node: Block, scopes: list[_Scope]) -> None:
        param = node.params[0]
        self.arg(param, scopes, node.line)
        inner = _Scope("opaque", frozenset())
        if node.kind == "each" and isinstance(param, HbPath) and not param.data:
            target = self._target_scope(param, scopes)
            if target is not None and target.kind == "root" and len(param.parts) == 1:
                array = param.parts[0].lower()
                if array in PRODUCT_ARRAYS:
                    inner = _Scope("product", PRODUCT_FIELDS, array)
        tested: frozenset[str] = frozenset()
        if node.kind == "if":
            leaves = _leaves(param.tree) if isinstance(param, Expr) else [param]
            tested = frozenset(
                leaf.parts[-1].lower() for leaf in leaves if isinstance(leaf, HbPath) and leaf.parts
            )
        self.guarded.append(tested)
        try:
            if node.kind in ("each", "with"):
                self.visit(node.body, [*scopes, inner])
            else:
                self.visit(node.body, scopes)
        finally:
            self.guarded.pop()
        self.visit(node.inverse, scopes)

    @staticmethod
    def _target_scope(path: HbPath, scopes: list[_Scope]) -> _Scope | None:
        index = len(scopes) - 1 - path.depth
        return scopes[index] if index >= 0 else None

    def arg(self, arg: Any, scopes: list[_Scope], line: int) -> None:
        if isinstance(arg, Literal):
            return
        if isinstance(arg, Expr):
            for leaf in _leaves(arg.tree):
                self.arg(leaf, scopes, line)
            return
        if not isinstance(arg, HbPath):
            return
        if arg.data:
            head = arg.parts[0] if arg.parts else ""
            if head not in DATA_NAMES:
                self.error(
                    line,
                    f"unknown data variable `@{head}` (known: @index, @key, @first, @last, @root)",
                )
            elif head == "root" and len(arg.parts) > 1:
                self.check_name(arg.parts[1], scopes[0], line, arg.raw)
            return
        if not arg.parts:  # `this`
            return
        target = self._target_scope(arg, scopes)
        if target is None:
            self.error(line, f"`{arg.raw}` climbs above the top level ({arg.depth} x ../)")
            return
        self.check_name(arg.parts[0], target, line, arg.raw)

    def check_name(self, name: str, scope: _Scope, line: int, raw: str) -> None:
        folded = name.lower()
        if scope.kind == "opaque" or folded in scope.names:
            return
        if scope.kind == "product":
            self.error(
                line,
                f"`{raw}` is not a product field inside #each {scope.source}"
                f"{_suggest(folded, scope.names)}; product fields are "
                f"{', '.join(sorted(scope.names))}",
            )
            return
        path = self.campaign.path
        if folded in ROW_FIELDS | PAYLOAD_FIELDS:
            self.error(
                line,
                f"merge tag `{raw}`: `{name}` is a trigger field, but campaign "
                f"{self.campaign.name} does not send it (add it to merge_vars in {path}); "
                f"it would render empty",
            )
            return
        self.error(
            line,
            f"unknown merge tag `{raw}`{_suggest(folded, scope.names)}: campaign "
            f"{self.campaign.name} sends {', '.join(sorted(scope.names)) or 'no merge vars'} "
            f"({path}); it would render empty",
        )


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, tuple):
        return [*_leaves(tree[1]), *(_leaves(tree[2]) if tree[2] is not None else [])]
    return [tree]


def provided_vars(campaign: Campaign, variant: Variant) -> set[str]:
    """Merge var names the target sends for this variant (campaign merge vars + block vars)."""
    names = {var.name for var in campaign.merge_vars}
    names |= {block_var_name(b.region) for b in variant.blocks if b.mode == "recipient"}
    return names


def lint_template(code: str, origin: str, campaign: Campaign, variant: Variant) -> list[Finding]:
    """Everything wrong with one template for one campaign variant."""
    checker = _Checker(origin, provided_vars(campaign, variant), campaign)
    try:
        nodes = handlebars.parse(code)
    except handlebars.TemplateError as exc:
        match = _LINE_PREFIX.match(str(exc))
        line, message = (int(match.group(1)), match.group(2)) if match else (1, str(exc))
        checker.error(line, f"handlebars syntax: {message}")
    else:
        checker.run(nodes)

    for match in _MC_TAG.finditer(code):
        tag = match.group(1).strip()
        if not MC_SPECIAL.match(tag):
            close = difflib.get_close_matches(tag.lower(), sorted(checker.provided), 1, 0.6)
            hint = f"write `{{{{{close[0]}}}}}`" if close else "use a handlebars merge tag"
            checker.warn(
                code.count("\n", 0, match.start()) + 1,
                f"Mailchimp merge tag `*|{tag}|*` is not merged: the target sends "
                f"merge_language handlebars; {hint}",
            )
    if not checker.has_unsub and not _UNSUB_MC.search(code):
        checker.error(
            _line_of(code, re.compile("</body>", re.IGNORECASE)),
            'no unsubscribe link: add {{unsub "https://..."}} (or *|UNSUB|*) to the footer',
        )

    regions = handlebars.mc_edit_regions(code)
    campaign_text = campaign.path.read_text(encoding="utf-8") if campaign.path.is_file() else ""
    for block in variant.blocks:
        if block.region not in regions:
            checker.findings.append(
                Finding(
                    str(campaign.path),
                    _line_of(
                        campaign_text, re.compile(rf"region:\s*['\"]?{re.escape(block.region)}\b")
                    ),
                    "error",
                    f"block {block.template} fills mc:edit region `{block.region}`, but "
                    f'{origin} has no mc:edit="{block.region}" (it has: '
                    f"{', '.join(regions) or 'none'}); the block would be dropped",
                )
            )
    return checker.findings


def lint_subject(campaign: Campaign, variant: Variant) -> list[Finding]:
    """Check the campaign's subject override: Mandrill merges it like the body."""
    if not variant.subject or "{{" not in variant.subject:
        return []
    text = campaign.path.read_text(encoding="utf-8") if campaign.path.is_file() else ""
    line = _line_of(text, variant.subject)
    checker = _Checker(str(campaign.path), provided_vars(campaign, variant), campaign)
    try:
        checker.run(handlebars.parse(variant.subject))
    except handlebars.TemplateError as exc:
        match = _LINE_PREFIX.match(str(exc))
        checker.error(1, f"handlebars syntax: {match.group(2) if match else exc}")
    return [Finding(f.path, line, f.severity, f"subject: {f.message}") for f in checker.findings]


def lint_campaign_fields(campaign: Campaign) -> list[Finding]:
    """Warn about merge vars whose field is neither a row column nor a documented payload field."""
    text = campaign.path.read_text(encoding="utf-8") if campaign.path.is_file() else ""
    findings = []
    for var in campaign.merge_vars:
        head = var.field.split(".")[0]
        if head not in ROW_FIELDS | PAYLOAD_FIELDS:
            findings.append(
                Finding(
                    str(campaign.path),
                    _line_of(text, re.compile(rf"\b{re.escape(var.field)}\b")),
                    "warning",
                    f"merge var `{var.name}` reads payload field `{var.field}`, which the "
                    f"email_triggers contract does not document"
                    f"{_suggest(head, ROW_FIELDS | PAYLOAD_FIELDS)}; check the mart emits it",
                )
            )
    return findings


def lint_campaigns(campaigns: dict[str, Campaign], source: TemplateSource) -> list[Finding]:
    """Lint every campaign variant's template; findings sorted by file and line, deduplicated."""
    findings: set[Finding] = set()
    for campaign in campaigns.values():
        findings.update(lint_campaign_fields(campaign))
        text = campaign.path.read_text(encoding="utf-8") if campaign.path.is_file() else ""
        for variant, ref in template_refs(campaign):
            findings.update(lint_subject(campaign, variant))
            try:
                fetched = source.fetch(ref)
            except TemplateMissing as exc:
                key = ref.slug or str(ref.mc_template_id)
                findings.add(Finding(str(campaign.path), _line_of(text, key), "error", str(exc)))
                continue
            findings.update(lint_template(fetched.code, fetched.origin, campaign, variant))
    return sorted(findings)


def relative(path: str, base: Path) -> str:
    """Shorten absolute file paths in findings to the working directory, when inside it."""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return path
