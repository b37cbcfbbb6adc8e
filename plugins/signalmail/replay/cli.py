"""`signalmail replay`: public e-commerce clickstreams into a data plane or the spool.

The pipeline is one pass, one row at a time: file (plain or gzip) -> csv rows -> converter
(REES46 or Retailrocket) -> sink (rudder-sdk-python or the spool's writer). Bad rows are
counted, reported with their line numbers and optionally written to `--rejects`; they never stop
the replay. Memory is constant in the file's size.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from signalmail.progress import Bar, progress_bar
from signalmail.replay.converter import DEFAULT_IMAGE_TEMPLATE, DEFAULT_URL_TEMPLATE, Converter
from signalmail.replay.rees46 import Rees46Converter
from signalmail.replay.retailrocket import RetailrocketConverter
from signalmail.replay.source import (
    Input,
    InputUnreadable,
    Reject,
    Rejects,
    ReplayError,
    RowError,
    iter_rows,
    raw_text,
    sniff_format,
)
from signalmail.simulate.cli import check_destination, destination_options, make_sink
from signalmail.simulate.sinks import EventSink, SinkError

CONVERTERS: dict[str, type[Converter]] = {
    "rees46": Rees46Converter,
    "retailrocket": RetailrocketConverter,
}


@dataclass(slots=True)
class ReplayResult:
    """Counts of one replay, for the summary."""

    format: str = ""
    rows: int = 0
    events: int = 0
    by_name: Counter[str] = field(default_factory=Counter)
    rejects: Rejects = field(default_factory=Rejects)
    split_orders: int = 0
    late_split_orders: int = 0
    elapsed_s: float = 0.0
    #: why the input stopped being readable part way (the rows before it were replayed)
    unreadable: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "format": self.format,
            "rows": self.rows,
            "events": self.events,
            "events_by_name": dict(self.by_name.most_common()),
            "rejected_rows": self.rejects.count,
            "rejected_by_reason": dict(self.rejects.by_reason.most_common()),
            "reject_examples": [
                {"line": r.line, "reason": r.reason} for r in self.rejects.examples
            ],
            "orders_split_by_memory_cap": self.split_orders,
            "orders_split_by_late_rows": self.late_split_orders,
            "unreadable": self.unreadable,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def iter_events(
    source: Input,
    wanted_format: str,
    result: ReplayResult,
    limit: int | None = None,
    progress: Bar | None = None,
    **converter_options: Any,
) -> Iterator[dict[str, Any]]:
    """Yield the converted events of one input, lazily; rejects and counts go into `result`."""
    rows = iter_rows(source.text)
    first = next(rows, None)
    if first is None:
        raise ReplayError(f"{source.path} is empty")
    line, cells, error = first
    if error is not None or cells is None:
        raise ReplayError(f"cannot read the first line of {source.path}: {error}")
    result.format, has_header = sniff_format(cells, wanted_format)
    converter: Converter = CONVERTERS[result.format](**converter_options)
    pending = [] if has_header else [(line, cells, None)]

    def all_rows() -> Iterator[tuple[int, list[str] | None, str | None]]:
        yield from pending
        yield from rows

    try:
        yield from _converted(all_rows(), converter, result, source, limit, progress)
    except InputUnreadable as exc:  # what came before it still goes, open orders included
        result.unreadable = str(exc)
    yield from converter.finish()
    result.split_orders = converter.orders.split_orders
    result.late_split_orders = converter.orders.late_split_orders


def _converted(
    rows: Iterator[tuple[int, list[str] | None, str | None]],
    converter: Converter,
    result: ReplayResult,
    source: Input,
    limit: int | None,
    progress: Bar | None,
) -> Iterator[dict[str, Any]]:
    """Convert rows to events, counting rows and rejects in `result`."""
    for line, cells, error in rows:
        if limit is not None and result.rows >= limit:
            break
        result.rows += 1
        if cells is None or error is not None:
            result.rejects.add(Reject(line, error or "unreadable row", ""))
        elif not any(cell.strip() for cell in cells):
            result.rows -= 1  # blank lines are not rows
        else:
            try:
                events = converter.convert(line, cells)
            except RowError as exc:
                result.rejects.add(Reject(line, str(exc), raw_text(cells)))
                events = []
            yield from events
        if progress is not None:
            progress.update(source.position(), rows=result.rows, rejects=result.rejects.count)


def replay_file(
    path: str | Path,
    sink: EventSink,
    *,
    wanted_format: str = "auto",
    limit: int | None = None,
    rejects: Rejects | None = None,
    progress: bool = False,
    **converter_options: Any,
) -> ReplayResult:
    """Replay one file into `sink` (closing the sink); the library entry point of the command."""
    result = ReplayResult(rejects=rejects or Rejects())
    began = time.monotonic()
    source = Input(path)
    try:
        with progress_bar(
            f"replaying {Path(path).name}",
            total=source.size,
            unit="bytes",
            extra="{task.fields[rows]:,} rows  {task.fields[rejects]:,} rejected",
            enabled=progress,
            rows=0,
            rejects=0,
        ) as bar:
            for event in iter_events(
                source, wanted_format, result, limit, bar, **converter_options
            ):
                result.by_name[event["event"]] += 1
                result.events += 1
                sink.send(event)
            bar.update(source.position(), rows=result.rows, rejects=result.rejects.count)
    finally:
        source.close()
        result.rejects.close()
        try:
            sink.close()
        finally:
            result.elapsed_s = time.monotonic() - began
    return result


def _finite(value: float, name: str) -> float:
    """Refuse NaN, which passes a range check and makes every event time NaN."""
    if value != value:
        raise click.BadParameter("must be a number, not nan", param_hint=name)
    return value


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "wanted_format",
    type=click.Choice(["auto", "rees46", "retailrocket"]),
    default="auto",
    show_default=True,
    help="Data set; auto reads the header.",
)
@destination_options(default_source_id="replay")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many rows.")
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False),
    help="Write every rejected row (line, reason, raw) to this CSV file.",
)
@click.option(
    "--shift-days",
    # about 270 years either way: a shifted event time stays a date (year 1 to 9999)
    type=click.FloatRange(-100_000, 100_000),
    callback=lambda _ctx, _param, days: _finite(days, "--shift-days"),
    default=0.0,
    show_default=True,
    help="Move every event time by this many days (e.g. bring 2019 data near today).",
)
@click.option(
    "--order-window",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds of event time after an order's last purchase row before it is sent.",
)
@click.option(
    "--url-template",
    default=DEFAULT_URL_TEMPLATE,
    show_default=True,
    help="Product URL; {product_id} is replaced.",
)
@click.option(
    "--image-template",
    default=DEFAULT_IMAGE_TEMPLATE,
    show_default=True,
    help="Product image URL; {product_id} is replaced.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(
    path: str,
    wanted_format: str,
    data_plane_url: str | None,
    write_key: str | None,
    spool: str | None,
    source_id: str,
    limit: int | None,
    rejects_path: str | None,
    shift_days: float,
    order_window: float,
    url_template: str,
    image_template: str,
    batch_size: int,
    max_retries: int,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Replay a REES46 or Retailrocket CSV (plain or .gz) as RudderStack e-commerce events."""
    check_destination(data_plane_url, write_key, spool)
    for name, template in (("--url-template", url_template), ("--image-template", image_template)):
        try:
            template.format(product_id="1")
        except (KeyError, IndexError, ValueError) as exc:
            raise click.BadParameter(
                f"only {{product_id}} may be used: {exc}", param_hint=name
            ) from None
    if not Path(path).is_file():
        raise click.ClickException(f"no such file: {path}")
    try:  # before the destination: a bad path must not leave a sink opened for nothing
        rejects = Rejects(path=Path(rejects_path) if rejects_path else None)
    except OSError as exc:
        msg = f"cannot write {rejects_path}: {exc}"
        raise click.BadParameter(msg, param_hint="--rejects") from None
    try:
        sink = make_sink(
            data_plane_url,
            write_key,
            spool,
            source_id,
            batch_size=batch_size,
            max_retries=max_retries,
        )
    except Exception as exc:
        raise click.ClickException(f"cannot open the destination: {exc}") from exc
    failure = None
    result = None
    try:
        result = replay_file(
            path,
            sink,
            wanted_format=wanted_format,
            limit=limit,
            rejects=rejects,
            progress=sys.stderr.isatty() if progress is None else progress,
            url_template=url_template,
            image_template=image_template,
            shift_s=shift_days * 86400.0,
            order_window_s=order_window,
        )
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from None
    except SinkError as exc:
        failure = str(exc)
    if result is None:
        raise click.ClickException(failure or "replay failed")
    data = result.as_dict()
    data["accepted"] = sink.sent - getattr(sink, "failed", 0)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(
            f"replayed {data['rows']} {data['format']} rows as {data['events']} events "
            f"in {data['elapsed_s']}s; {data['rejected_rows']} rows rejected"
        )
        for name, count in data["events_by_name"].items():
            click.echo(f"  {count:>9}  {name}")
        for reason, count in data["rejected_by_reason"].items():
            click.echo(f"  rejected {count:>6}  {reason}", err=True)
        for example in data["reject_examples"]:
            click.echo(f"  line {example['line']}: {example['reason']}", err=True)
    if failure:
        raise click.ClickException(failure)
    if result.unreadable:
        raise click.ClickException(f"{result.unreadable}; the rows before it were replayed")
