"""Lint the Jinja2 blocks the same way as the Mandrill templates: no stray label beside a null.

A block prints nothing for a null (the target renders blocks with a finalize that turns None
into ""), so a nullable field printed right next to literal words ("Total: {{ total }}") leaves
the words alone on the page when the field is null. Such a print must sit inside an
`{% if %}` that tests the field, or use `default(...)`. Which fields can be null is the same
list the template lint uses (signalmail.templates.lint: the contract and the payload builders).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jinja2
from jinja2 import nodes

from signalmail.templates.lint import (
    NULLABLE_FIELDS,
    NULLABLE_PRODUCT_FIELDS,
    PRODUCT_ARRAYS,
    Finding,
    text_beside,
)


def lint_blocks(blocks_dir: Path) -> list[Finding]:
    """Lint every `*.html.j2` block in the folder; findings sorted by file and line."""
    environment = jinja2.Environment(autoescape=True)
    findings: list[Finding] = []
    for path in sorted(blocks_dir.glob("*.j2")):
        source = path.read_text(encoding="utf-8")
        try:
            tree = environment.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            findings.append(Finding(str(path), exc.lineno or 1, "error", exc.message or str(exc)))
            continue
        findings += [
            Finding(str(path), line, "error", text) for line, text in _walk(tree, {}, set())
        ]
    return sorted(findings)


def _walk(node: nodes.Node, loops: dict[str, str], guarded: set[str]) -> Iterator[tuple[int, str]]:
    """Yield (line, message) for unguarded nullable prints under `node`.

    `loops` maps a loop variable to the array it walks; `guarded` holds the fields (`total`,
    `p.price`) an enclosing `if` tests.
    """
    if isinstance(node, nodes.For):
        inner = dict(loops)
        array = _base_name(node.iter)
        if isinstance(node.target, nodes.Name) and array is not None:
            inner[node.target.name] = array
        more = guarded | (_tested(node.test) if node.test is not None else set())
        for child in node.body:
            yield from _walk(child, inner, more)
        for child in node.else_:
            yield from _walk(child, loops, guarded)
        return
    if isinstance(node, nodes.If):
        tested = _tested(node.test)
        for child in node.body:
            yield from _walk(child, loops, guarded | tested)
        for branch in node.elif_:
            yield from _walk(branch, loops, guarded)
        for child in node.else_:
            yield from _walk(child, loops, guarded)
        return
    if isinstance(node, nodes.Output):
        yield from _output(node.nodes, loops, guarded)
        return
    for child in node.iter_child_nodes():
        yield from _walk(child, loops, guarded)


def _output(
    items: list[nodes.Expr], loops: dict[str, str], guarded: set[str]
) -> Iterator[tuple[int, str]]:
    for i, item in enumerate(items):
        field = _printed_field(item, loops)
        if field is None or field in guarded:
            continue
        before = items[i - 1] if i > 0 else None
        after = items[i + 1] if i + 1 < len(items) else None
        shown = text_beside(
            before.data if isinstance(before, nodes.TemplateData) else "",
            after.data if isinstance(after, nodes.TemplateData) else "",
        )
        if shown is not None:
            yield (
                item.lineno,
                f"`{{{{ {field} }}}}` can be null and sits next to text ({shown!r}): that text "
                "would show with nothing beside it; wrap both in "
                f"{{% if {field} %}}...{{% endif %}}",
            )


def _printed_field(expr: nodes.Expr, loops: dict[str, str]) -> str | None:
    """Name the nullable field an output expression prints as it is, else None."""
    if isinstance(expr, nodes.Name) and expr.name.lower() in NULLABLE_FIELDS:
        return expr.name
    if (
        isinstance(expr, nodes.Getattr)
        and isinstance(expr.node, nodes.Name)
        and loops.get(expr.node.name) in PRODUCT_ARRAYS
        and expr.attr.lower() in NULLABLE_PRODUCT_FIELDS
    ):
        return f"{expr.node.name}.{expr.attr}"
    return None  # a filter (default, utm), a call or a literal decides what shows


def _tested(test: nodes.Node) -> set[str]:
    """Every name and `loop_var.attr` a test mentions (`if a and b.c > 1` guards a and b.c)."""
    found: set[str] = set()
    for node in [test, *test.find_all((nodes.Name, nodes.Getattr))]:
        if isinstance(node, nodes.Name):
            found.add(node.name)
        elif isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
            found.add(f"{node.node.name}.{node.attr}")
    return found


def _base_name(expr: nodes.Node) -> str | None:
    """Name the array a loop walks: `products`, `products | default([])`, `items[:4]`."""
    while isinstance(expr, nodes.Filter | nodes.Getitem) and expr.node is not None:
        expr = expr.node
    return expr.name if isinstance(expr, nodes.Name) else None
