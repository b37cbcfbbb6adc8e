"""Mandrill's flavour of Handlebars, Mailchimp merge tags and `mc:edit` regions.

Why our own renderer: pybars3 treats `{{else if x}}` as a plain `{{else}}` (the condition is
dropped) and knows none of Mandrill's helpers or backtick comparisons, so a template that renders
"fine" there can go out wrong from Mandrill. This module implements the subset Mandrill documents:

- `{{var}}` (HTML-escaped like Handlebars.js: & < > " ' ` =), `{{{var}}}` and `{{&var}}` raw,
  dotted paths (`a.b.0.c`), `this`, `../parent`, `@index`, `@key`, `@first`, `@last`, `@root`;
- blocks `#if` (with `{{elseif x}}` and `{{else if x}}` chains, both meaning the same, as in
  Handlebars.js), `#unless`, `#each` (arrays and objects, `{{else}}` when empty), `#with`;
- backtick comparisons in block params: `{{#if `price > 10 && qty >= 1`}}` with == === != !==
  < > <= >= && || ! and parentheses, numbers compared numerically;
- helpers upper, lower, title, url (URL-encode), date (PHP-style format of the current date, or
  of a timestamp given as second argument), striptags, unsub (`{{unsub "https://..."}}`);
- comments `{{! ... }}` / `{{!-- ... --}}` and `~` whitespace control.

Lookups follow Handlebars.js: inside `#each`/`#with` a bare name resolves against the current
item only (use `../name` or `@root.name` for outer values); a missing value renders as "".
Unknown helpers called with arguments raise `TemplateError` (Handlebars.js: "Missing helper").

`parse()` returns an AST that `analyze()` walks, so template linting sees exactly the names and
helpers the renderer would use.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "HELPERS",
    "TemplateAnalysis",
    "TemplateError",
    "analyze",
    "apply_mc_edit",
    "mc_edit_regions",
    "parse",
    "render",
    "render_mailchimp",
]


class TemplateError(ValueError):
    """A template that cannot be parsed or rendered; the message names the construct and line."""


# --------------------------------------------------------------------------------------------
# AST


@dataclass
class Text:
    """Literal template text."""

    value: str


@dataclass
class Path:
    """A value lookup: `parts` after `depth` `../` hops; `data` for `@index`-style names."""

    parts: list[str]
    depth: int = 0
    data: bool = False
    raw: str = ""
    #: written `this.x`, `this/x`, `./x` or `this`: always a lookup, never a helper call
    scoped: bool = False


@dataclass
class Literal:
    """A string, number, boolean or null argument."""

    value: Any


@dataclass
class Expr:
    """A backtick comparison, parsed into a small tree of ("op", left, right) tuples."""

    tree: Any
    source: str


@dataclass
class Mustache:
    """`{{name args}}`: a lookup when `args` is empty and name is no helper, else a helper call."""

    name: Path
    args: list[Any]
    escape: bool
    line: int


@dataclass
class Block:
    """`{{#kind params}} body {{else}} inverse {{/kind}}`."""

    kind: str
    params: list[Any]
    body: list[Any]
    inverse: list[Any] = field(default_factory=list)
    line: int = 0
    #: an `{{else if}}` link: a synthetic block its chain's closing tag also closes
    chained: bool = field(default=False, repr=False, compare=False)


# --------------------------------------------------------------------------------------------
# Tokenizing

_TAG_RE = re.compile(r"\{\{(~?)(\{?)(!--.*?--|.*?)(\}?)(~?)\}\}", re.DOTALL)
_WS_LEFT_RE = re.compile(r"\s+$")
_WS_RIGHT_RE = re.compile(r"^\s+")


@dataclass
class _Tag:
    body: str
    triple: bool
    line: int


def _tokenize(source: str) -> list[str | _Tag]:
    r"""Split into text and tags, applying `~` whitespace control.

    As in handlebars.js, a backslash escapes a mustache: `\{{x}}` prints `{{x}}`, and
    `\\{{x}}` prints one backslash followed by x's value.
    """
    out: list[str | _Tag] = []
    pos = 0
    strip_next = False
    for match in _TAG_RE.finditer(source):
        if match.start() < pos:  # inside an escaped tag already taken as text
            continue
        text = source[pos : match.start()]
        slashes = len(text) - len(text.rstrip("\\"))
        if slashes % 2 == 1:  # escaped: the tag is text, without its backslash
            out.append(text[:-1] + match.group(0))
            out.append(_Tag("!", False, 0))  # an empty comment keeps text/tag alternation
            pos = match.end()
            continue
        if slashes:
            text = text[:-1]  # `\\{{x}}`: one backslash stays, the tag is live
        if strip_next:
            text = _WS_RIGHT_RE.sub("", text)
        if match.group(1):
            text = _WS_LEFT_RE.sub("", text)
        out.append(text)
        triple = bool(match.group(2))
        if triple != bool(match.group(4)):
            line = source.count("\n", 0, match.start()) + 1
            raise TemplateError(f"line {line}: unbalanced triple braces in {match.group(0)!r}")
        out.append(_Tag(match.group(3).strip(), triple, source.count("\n", 0, match.start()) + 1))
        strip_next = bool(match.group(5))
        pos = match.end()
    tail = source[pos:]
    if strip_next:
        tail = _WS_RIGHT_RE.sub("", tail)
    out.append(tail)
    return out


_ARG_RE = re.compile(
    r"""\s*(?:
        (?P<dq>"(?:[^"\\]|\\.)*")
      | (?P<sq>'(?:[^'\\]|\\.)*')
      | (?P<bt>`[^`]*`)
      | (?P<hash>[A-Za-z_][\w-]*=)
      | (?P<word>[^\s"'`()=]+)
    )""",
    re.VERBOSE,
)


def _parse_path(raw: str, line: int) -> Path:
    text = raw
    depth = 0
    while text.startswith("../"):
        depth += 1
        text = text[3:]
    data = text.startswith("@")
    if data:
        text = text[1:]
    # Handlebars.js treats a path starting with `.` or the word `this` as scoped: a plain
    # lookup in the current context, never a helper call (`{{this.url}}` vs `{{url}}`).
    scoped = bool(re.match(r"\.|this\b", text))
    if text.startswith(("this.", "this/")):
        text = text[5:]
    elif text.startswith("./"):
        text = text[2:]
    if text in ("this", ".", ""):
        parts: list[str] = []
    else:
        parts = [p for p in re.split(r"[./]", text)]
        if any(p == "" for p in parts):
            raise TemplateError(f"line {line}: invalid path {raw!r}")
    return Path(parts, depth, data, raw, scoped)


def _parse_word(word: str, line: int) -> Any:
    if re.fullmatch(r"-?\d+(\.\d+)?", word):
        return Literal(float(word) if "." in word else int(word))
    if word in ("true", "false"):
        return Literal(word == "true")
    if word in ("null", "undefined"):
        return Literal(None)
    return _parse_path(word, line)


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def _parse_args(text: str, line: int) -> list[Any]:
    args: list[Any] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _ARG_RE.match(text, pos)
        if not match or match.end() == pos:
            raise TemplateError(f"line {line}: cannot parse {text[pos:]!r}")
        pos = match.end()
        if match.group("dq") or match.group("sq"):
            args.append(Literal(_unquote(match.group("dq") or match.group("sq"))))
        elif match.group("bt"):
            source = match.group("bt")[1:-1]
            args.append(Expr(_parse_expression(source, line), source))
        elif match.group("hash"):
            raise TemplateError(f"line {line}: hash arguments are not supported ({text!r})")
        else:
            args.append(_parse_word(match.group("word"), line))
    return args


# --------------------------------------------------------------------------------------------
# Backtick expressions

_EXPR_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<num>-?\d+(?:\.\d+)?(?![\w.]))
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>===|!==|==|!=|<=|>=|&&|\|\||[<>!()])
      | (?P<name>(?:\.\./)*@?[A-Za-z_][\w.\-/]*)
    )""",
    re.VERBOSE,
)


def _parse_expression(source: str, line: int) -> Any:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(source):
        if source[pos:].strip() == "":
            break
        match = _EXPR_TOKEN_RE.match(source, pos)
        if not match:
            raise TemplateError(f"line {line}: cannot parse comparison `{source}` at {pos}")
        pos = match.end()
        if match.group("num") is not None:
            num = match.group("num")
            tokens.append(("lit", float(num) if "." in num else int(num)))
        elif match.group("str") is not None:
            tokens.append(("lit", _unquote(match.group("str"))))
        elif match.group("op") is not None:
            tokens.append(("op", match.group("op")))
        else:
            tokens.append(("val", _parse_word(match.group("name"), line)))
    index = 0

    def peek() -> tuple[str, Any] | None:
        return tokens[index] if index < len(tokens) else None

    def take() -> tuple[str, Any]:
        nonlocal index
        if index >= len(tokens):
            raise TemplateError(f"line {line}: comparison `{source}` ends too early")
        index += 1
        return tokens[index - 1]

    def binary(next_level: Callable[[], Any], ops: tuple[str, ...]) -> Any:
        left = next_level()
        while (tok := peek()) is not None and tok[0] == "op" and tok[1] in ops:
            take()
            left = (tok[1], left, next_level())
        return left

    def or_level() -> Any:
        return binary(and_level, ("||",))

    def and_level() -> Any:
        return binary(eq_level, ("&&",))

    def eq_level() -> Any:
        return binary(rel_level, ("==", "===", "!=", "!=="))

    def rel_level() -> Any:
        return binary(unary, ("<", ">", "<=", ">="))

    def unary() -> Any:
        kind, value = take()
        if kind == "op" and value == "!":
            return ("!", unary(), None)
        if kind == "op" and value == "(":
            inner = or_level()
            if take() != ("op", ")"):
                raise TemplateError(f"line {line}: missing ')' in `{source}`")
            return inner
        if kind == "lit":
            return Literal(value)
        if kind == "val":
            return value
        raise TemplateError(f"line {line}: unexpected {value!r} in `{source}`")

    tree = or_level()
    if index != len(tokens):
        raise TemplateError(f"line {line}: unexpected {tokens[index][1]!r} in `{source}`")
    return tree


# --------------------------------------------------------------------------------------------
# Parsing

_BLOCKS = ("if", "unless", "each", "with")


def parse(source: str) -> list[Any]:
    """Parse a template into a node list; raise `TemplateError` naming the line on bad syntax."""
    tokens = _tokenize(source)
    root: list[Any] = []
    # stack of (block, list currently being filled, chain of nested elseif blocks)
    stack: list[tuple[Block, list[Any]]] = []
    current = root
    for token in tokens:
        if isinstance(token, str):
            if token:
                current.append(Text(token))
            continue
        body, line = token.body, token.line
        if token.triple:
            current.append(_mustache(body, escape=False, line=line))
        elif body.startswith("!"):
            continue
        elif body.startswith("#"):
            kind, _, rest = body[1:].partition(" ")
            kind = kind.strip()
            if kind not in _BLOCKS:
                raise TemplateError(f"line {line}: unknown block helper #{kind}")
            params = _parse_args(rest, line)
            if len(params) != 1:
                raise TemplateError(f"line {line}: #{kind} takes exactly one parameter")
            block = Block(kind, params, [], [], line)
            current.append(block)
            stack.append((block, current))
            current = block.body
        elif body.startswith("/"):
            kind = body[1:].strip()
            if not stack:
                raise TemplateError(f"line {line}: {{{{/{kind}}}}} closes nothing")
            block, parent = stack.pop()
            # unwind elseif chains: they were pushed as synthetic nested blocks
            while block.chained:
                block, parent = stack.pop()
            if block.kind != kind:
                raise TemplateError(
                    f"line {line}: {{{{/{kind}}}}} closes #{block.kind} opened on line {block.line}"
                )
            current = parent
        elif re.fullmatch(r"else|\^", body) or re.match(r"(else\s+if|elseif)\s", body):
            if not stack:
                raise TemplateError(f"line {line}: {{{{{body}}}}} outside a block")
            block, parent = stack[-1]
            if current is block.inverse:
                raise TemplateError(f"line {line}: second {{{{else}}}} in #{block.kind}")
            chain = re.match(r"(else\s+if|elseif)\s+(.*)$", body, re.DOTALL)
            if chain:
                if block.kind not in ("if", "unless"):
                    raise TemplateError(f"line {line}: elseif inside #{block.kind}")
                params = _parse_args(chain.group(2), line)
                if len(params) != 1:
                    raise TemplateError(f"line {line}: elseif takes exactly one parameter")
                nested = Block("if", params, [], [], line, chained=True)
                block.inverse.append(nested)
                stack.append((nested, block.inverse))
                current = nested.body
            else:
                current = block.inverse
        elif body.startswith("&"):
            current.append(_mustache(body[1:], escape=False, line=line))
        else:
            current.append(_mustache(body, escape=True, line=line))
    if stack:
        block = next(b for b, _ in reversed(stack) if not b.chained)
        raise TemplateError(f"line {block.line}: #{block.kind} is never closed")
    return root


def _mustache(body: str, escape: bool, line: int) -> Mustache:
    if not body:
        raise TemplateError(f"line {line}: empty tag")
    args = _parse_args(body, line)
    head = args[0]
    if not isinstance(head, Path):
        # `{{"text"}}` or `{{5}}`: render the literal
        return Mustache(Path([], raw=""), [head], escape, line)
    return Mustache(head, args[1:], escape, line)


# --------------------------------------------------------------------------------------------
# Helpers


def _php_date(fmt: str, when: dt.datetime) -> str:
    """Format like PHP's date(), the format language Mandrill's `date` helper takes."""
    out = []
    escape = False
    for ch in fmt:
        if escape:
            out.append(ch)
            escape = False
            continue
        if ch == "\\":
            escape = True
            continue
        out.append(_PHP_FORMATS[ch](when) if ch in _PHP_FORMATS else ch)
    return "".join(out)


def _suffix(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


_PHP_FORMATS: dict[str, Callable[[dt.datetime], str]] = {
    "d": lambda w: f"{w.day:02d}",
    "D": lambda w: w.strftime("%a"),
    "j": lambda w: str(w.day),
    "l": lambda w: w.strftime("%A"),
    "N": lambda w: str(w.isoweekday()),
    "S": lambda w: _suffix(w.day),
    "w": lambda w: str(w.isoweekday() % 7),
    "z": lambda w: str(w.timetuple().tm_yday - 1),
    "W": lambda w: f"{w.isocalendar()[1]:02d}",
    "F": lambda w: w.strftime("%B"),
    "m": lambda w: f"{w.month:02d}",
    "M": lambda w: w.strftime("%b"),
    "n": lambda w: str(w.month),
    "y": lambda w: f"{w.year % 100:02d}",
    "Y": lambda w: str(w.year),
    "a": lambda w: "am" if w.hour < 12 else "pm",
    "A": lambda w: "AM" if w.hour < 12 else "PM",
    "g": lambda w: str(w.hour % 12 or 12),
    "G": lambda w: str(w.hour),
    "h": lambda w: f"{w.hour % 12 or 12:02d}",
    "H": lambda w: f"{w.hour:02d}",
    "i": lambda w: f"{w.minute:02d}",
    "s": lambda w: f"{w.second:02d}",
    "U": lambda w: str(int(w.timestamp())),
    "e": lambda w: "UTC",
    "T": lambda w: "UTC",
    "c": lambda w: w.isoformat(),
}


def _to_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str) and value:
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


_TAG_STRIP_RE = re.compile(r"<[^>]*>")


def _title(value: str) -> str:
    """PHP ucwords(strtolower()): words are split on whitespace only."""
    return re.sub(r"\S+", lambda m: m.group(0)[0].upper() + m.group(0)[1:].lower(), value)


@dataclass
class RenderOptions:
    """What helpers need from outside the template: the clock and how to build unsub links."""

    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    unsub_link: Callable[[str], str] = lambda url: url


def _helper_date(opts: RenderOptions, args: list[Any]) -> str:
    fmt = _to_str(args[0]) if args else "d/m/Y"
    when = _to_datetime(args[1]) if len(args) > 1 else opts.now()
    if when is None:
        return ""
    return _php_date(fmt, when)


#: helper name -> (minimum args, function(options, evaluated args) -> str)
HELPERS: dict[str, tuple[int, Callable[[RenderOptions, list[Any]], str]]] = {
    "upper": (1, lambda o, a: _to_str(a[0]).upper()),
    "lower": (1, lambda o, a: _to_str(a[0]).lower()),
    "title": (1, lambda o, a: _title(_to_str(a[0]))),
    "url": (1, lambda o, a: urllib.parse.quote(_to_str(a[0]), safe="")),
    "striptags": (1, lambda o, a: html.unescape(_TAG_STRIP_RE.sub("", _to_str(a[0])))),
    "date": (0, _helper_date),
    "unsub": (1, lambda o, a: o.unsub_link(_to_str(a[0]))),
}


#: helpers whose output is markup-safe (Handlebars SafeString): never HTML-escaped
SAFE_HELPERS = frozenset({"unsub"})

# --------------------------------------------------------------------------------------------
# Rendering


def _to_str(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(_to_str(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#x27;")
        .replace("`", "&#x60;")
        .replace("=", "&#x3D;")
    )


def _truthy(value: Any) -> bool:
    """Handlebars.js truthiness: false, null, "", 0 and [] are false; {} is true."""
    if value is None or value is False or value == "" or value == []:
        return False
    return not (isinstance(value, int | float) and not isinstance(value, bool) and value == 0)


_MISSING = object()


@dataclass
class _Frame:
    context: Any
    data: dict[str, Any]


class _Renderer:
    def __init__(self, root: Any, options: RenderOptions) -> None:
        self.options = options
        self.frames = [_Frame(root, {"root": root})]

    def lookup(self, path: Path) -> Any:
        if path.data:
            frame = self.frames[-1 - path.depth] if path.depth < len(self.frames) else None
            if frame is None or not path.parts:
                return None
            value = frame.data.get(path.parts[0], _MISSING)
            if value is _MISSING:
                value = self.frames[0].data.get(path.parts[0]) if path.parts[0] == "root" else None
            return self._walk(value, path.parts[1:])
        if path.depth >= len(self.frames):
            return None
        return self._walk(self.frames[-1 - path.depth].context, path.parts)

    @staticmethod
    def _walk(value: Any, parts: list[str]) -> Any:
        for index, part in enumerate(parts):
            if isinstance(value, dict):
                if part in value:
                    value = value[part]
                    continue
                if index == 0:  # Mandrill merge var names are case-insensitive
                    folded = {k.lower(): v for k, v in value.items() if isinstance(k, str)}
                    if part.lower() in folded:
                        value = folded[part.lower()]
                        continue
                return None
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
                continue
            if isinstance(value, list | str) and part == "length":
                value = len(value)
                continue
            return None
        return value

    def value(self, arg: Any) -> Any:
        if isinstance(arg, Literal):
            return arg.value
        if isinstance(arg, Path):
            return self.lookup(arg)
        if isinstance(arg, Expr):
            return self.evaluate(arg.tree)
        raise TypeError(arg)

    def evaluate(self, tree: Any) -> Any:
        if not isinstance(tree, tuple):
            return self.value(tree)
        op, left, right = tree
        if op == "!":
            return not _truthy(self.evaluate(left))
        if op == "&&":
            lhs = self.evaluate(left)
            return self.evaluate(right) if _truthy(lhs) else lhs
        if op == "||":
            lhs = self.evaluate(left)
            return lhs if _truthy(lhs) else self.evaluate(right)
        return _compare(op, self.evaluate(left), self.evaluate(right))

    def render(self, nodes: list[Any], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.value)
            elif isinstance(node, Mustache):
                out.append(self.mustache(node))
            else:
                self.block(node, out)

    def mustache(self, node: Mustache) -> str:
        name = node.name
        if is_helper_name(name) and name.parts[0] in HELPERS:
            minimum, function = HELPERS[name.parts[0]]
            args = [self.value(a) for a in node.args]
            if len(args) < minimum:
                raise TemplateError(
                    f"line {node.line}: helper {name.parts[0]} needs {minimum} argument(s)"
                )
            text = function(self.options, args)
            if name.parts[0] in SAFE_HELPERS:
                return text
        elif node.args and not name.raw:
            text = _to_str(self.value(node.args[0]))
        elif node.args:
            raise TemplateError(f"line {node.line}: missing helper {name.raw!r}")
        else:
            text = _to_str(self.lookup(name))
        return _escape(text) if node.escape else text

    def block(self, node: Block, out: list[str]) -> None:
        value = self.value(node.params[0])
        if node.kind == "if":
            self.render(node.body if _truthy(value) else node.inverse, out)
        elif node.kind == "unless":
            self.render(node.inverse if _truthy(value) else node.body, out)
        elif node.kind == "with":
            if _truthy(value):
                self.push(value, {})
                try:
                    self.render(node.body, out)
                finally:
                    self.frames.pop()
            else:
                self.render(node.inverse, out)
        else:  # each
            items: list[tuple[Any, Any]]
            if isinstance(value, dict):
                items = list(value.items())
            elif isinstance(value, list):
                items = list(enumerate(value))
            else:
                items = []
            if not items:
                self.render(node.inverse, out)
                return
            last = len(items) - 1
            for position, (key, item) in enumerate(items):
                data = {"index": position, "first": position == 0, "last": position == last}
                if isinstance(value, dict):
                    data["key"] = key
                self.push(item, data)
                try:
                    self.render(node.body, out)
                finally:
                    self.frames.pop()

    def push(self, context: Any, data: dict[str, Any]) -> None:
        self.frames.append(_Frame(context, {**self.frames[0].data, **data}))


def is_helper_name(name: Path) -> bool:
    """Whether a mustache's name may call a helper (Handlebars.js `simpleId`).

    Only a bare one-part name can: `{{url}}` calls the `url` helper even inside `#each` over
    items that have a `url` field (helpers win), while `{{this.url}}`, `{{./url}}`,
    `{{this/url}}`, `{{../url}}`, `{{item.url}}` and `{{@url}}` are always lookups. The
    renderer, `analyze()` and the template linter all decide through this one function.
    """
    return not name.data and not name.scoped and name.depth == 0 and len(name.parts) == 1


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


_Comparable = TypeVar("_Comparable", float, str)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "===":
        return type(left) is type(right) and left == right
    if op == "!==":
        return not (type(left) is type(right) and left == right)
    lnum, rnum = _number(left), _number(right)
    if lnum is not None and rnum is not None:
        return _ordered(op, lnum, rnum)
    if op in ("==", "!="):
        equal = left == right or _to_str(left) == _to_str(right)
        return equal if op == "==" else not equal
    if left is None or right is None:
        return False
    return _ordered(op, _to_str(left), _to_str(right))


def _ordered(op: str, a: _Comparable, b: _Comparable) -> bool:
    """Compare two numbers or two strings with `op` (==, !=, <, >, <=, >=)."""
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == ">":
        return a > b
    if op == "<=":
        return a <= b
    return a >= b


def render(
    source: str | list[Any], context: dict[str, Any], options: RenderOptions | None = None
) -> str:
    """Render a Handlebars template (source or `parse()` output) with merge vars `context`."""
    nodes = parse(source) if isinstance(source, str) else source
    out: list[str] = []
    _Renderer(context, options or RenderOptions()).render(nodes, out)
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Analysis (used by `signalmail templates lint`)


@dataclass
class TemplateAnalysis:
    """Top-level merge var names a template reads, helpers it calls, and unsub link presence."""

    variables: set[str] = field(default_factory=set)
    helpers: set[str] = field(default_factory=set)
    has_unsub: bool = False


def analyze(source: str | list[Any]) -> TemplateAnalysis:
    """Walk the AST; names used inside `#each`/`#with` are item fields, not top-level vars."""
    nodes = parse(source) if isinstance(source, str) else source
    result = TemplateAnalysis()

    def visit_arg(arg: Any, depth: int) -> None:
        if isinstance(arg, Path) and not arg.data and arg.parts and arg.depth >= depth:
            result.variables.add(arg.parts[0])
        elif (
            isinstance(arg, Path) and arg.data and arg.parts[:1] == ["root"] and len(arg.parts) > 1
        ):
            result.variables.add(arg.parts[1])
        elif isinstance(arg, Expr):
            for leaf in _expr_leaves(arg.tree):
                visit_arg(leaf, depth)

    def visit(items: list[Any], depth: int) -> None:
        for node in items:
            if isinstance(node, Mustache):
                name = node.name
                if is_helper_name(name) and (name.parts[0] in HELPERS or node.args):
                    result.helpers.add(name.parts[0])
                    result.has_unsub |= name.parts[0] == "unsub"
                else:
                    visit_arg(name, depth)
                for arg in node.args:
                    visit_arg(arg, depth)
            elif isinstance(node, Block):
                visit_arg(node.params[0], depth)
                scoped = depth + (1 if node.kind in ("each", "with") else 0)
                visit(node.body, scoped)
                visit(node.inverse, depth)

    visit(nodes, 0)
    return result


def _expr_leaves(tree: Any) -> Iterator[Any]:
    if isinstance(tree, tuple):
        yield from _expr_leaves(tree[1])
        if tree[2] is not None:
            yield from _expr_leaves(tree[2])
    else:
        yield tree


# --------------------------------------------------------------------------------------------
# Mailchimp merge language: *|NAME|*, *|IF:NAME|* ... *|ELSEIF:NAME|* ... *|ELSE:|* ... *|END:IF|*

_MC_TAG_RE = re.compile(r"\*\|([^|]*)\|\*")


def render_mailchimp(
    source: str, context: dict[str, Any], options: RenderOptions | None = None
) -> str:
    """Render Mailchimp merge tags; names are case-insensitive, values inserted as given.

    `*|UNSUB|*` becomes the unsubscribe link, `*|DATE:format|*` the formatted date; unknown tags
    are left in place, as Mailchimp does, so a typo is visible in the output.
    """
    opts = options or RenderOptions()
    values = {str(k).upper(): v for k, v in context.items()}
    out: list[str] = []
    # stack of [emitting?, branch already taken?]
    stack: list[list[bool]] = []
    pos = 0

    def active() -> bool:
        return all(level[0] for level in stack)

    for match in _MC_TAG_RE.finditer(source):
        if active():
            out.append(source[pos : match.start()])
        pos = match.end()
        tag = match.group(1).strip()
        upper = tag.upper()
        if upper.startswith(("IF:", "IFNOT:")):
            cond = _mc_condition(tag.split(":", 1)[1].strip(), values)
            cond = cond if upper.startswith("IF:") else not cond
            stack.append([cond, cond])
        elif upper.startswith("ELSEIF:"):
            if not stack:
                raise TemplateError(f"{match.group(0)} outside *|IF:|*")
            level = stack[-1]
            cond = not level[1] and _mc_condition(tag.split(":", 1)[1].strip(), values)
            level[0] = cond
            level[1] = level[1] or cond
        elif upper == "ELSE:":
            if not stack:
                raise TemplateError("*|ELSE:|* outside *|IF:|*")
            stack[-1][0] = not stack[-1][1]
        elif upper == "END:IF":
            if not stack:
                raise TemplateError("*|END:IF|* without *|IF:|*")
            stack.pop()
        elif not active():
            continue
        elif upper == "UNSUB":
            out.append(opts.unsub_link(""))
        elif upper.startswith("DATE:"):
            out.append(_php_date(tag.split(":", 1)[1], opts.now()))
        elif upper in values:
            out.append(_to_str(values[upper]))
        else:
            out.append(match.group(0))
    if stack:
        raise TemplateError("*|IF:|* is never closed with *|END:IF|*")
    out.append(source[pos:])
    return "".join(out)


def _mc_condition(expr: str, values: dict[str, Any]) -> bool:
    match = re.fullmatch(r"\s*([\w-]+)\s*(=|!=|>=|<=|>|<)?\s*(.*?)\s*", expr)
    if not match:
        raise TemplateError(f"cannot parse merge condition {expr!r}")
    name, op, operand = match.groups()
    value = values.get(name.upper())
    if not op:
        return _truthy(value)
    return _compare({"=": "=="}.get(op, op), value, operand)


# --------------------------------------------------------------------------------------------
# mc:edit regions

_MC_EDIT_RE = re.compile(
    r"<(?P<tag>[A-Za-z][\w-]*)\b(?P<attrs>[^>]*?\bmc:edit\s*=\s*(?P<q>[\"'])(?P<name>[^\"']*)(?P=q)[^>]*)>",
    re.IGNORECASE,
)


def mc_edit_regions(source: str) -> list[str]:
    """Names of the `mc:edit` regions in document order."""
    return [m.group("name") for m in _MC_EDIT_RE.finditer(source)]


def apply_mc_edit(source: str, contents: dict[str, str]) -> str:
    """Replace the inner HTML of each `mc:edit="name"` element whose name is in `contents`.

    Regions not named in `contents` keep their default content; names without a region are
    ignored, as Mandrill ignores them. Nested elements of the same tag are matched by depth.
    """
    out: list[str] = []
    pos = 0
    for match in _MC_EDIT_RE.finditer(source):
        if match.start() < pos:  # inside a region already replaced
            continue
        name = match.group("name")
        if name not in contents:
            continue
        tag = match.group("tag")
        end_inner, end_outer = _find_close(source, tag, match.end())
        out.append(source[pos : match.end()])
        out.append(contents[name] or "")
        pos = end_inner
        out.append(source[end_inner:end_outer])
        pos = end_outer
    out.append(source[pos:])
    return "".join(out)


def _find_close(source: str, tag: str, start: int) -> tuple[int, int]:
    if tag.lower() in ("img", "br", "hr", "input", "meta", "link"):
        return start, start
    pattern = re.compile(rf"<(/?){re.escape(tag)}\b[^>]*?(/?)>", re.IGNORECASE)
    depth = 1
    for match in pattern.finditer(source, start):
        if match.group(1):
            depth -= 1
            if depth == 0:
                return match.start(), match.end()
        elif not match.group(2):
            depth += 1
    raise TemplateError(f"<{tag} mc:edit> is never closed")
