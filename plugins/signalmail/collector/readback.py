"""Read a spool back: what the published segments hold, as a person checking a capture wants it.

Only names of the published pattern are read (`<ts>.<source>.<uuid>.json.gz`); journals and
`.partial` files are skipped, as any spool reader must (docs/contracts.md section 1).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import click

from signalmail.collector.spool import SEGMENT_RE

#: the suffix of <unix_ts>.<source_id>.<uuid>.json.gz, the only files a spool reader may look at
#: (each name is then matched against the collector's SEGMENT_RE)
SEGMENT_SUFFIX = ".json.gz"


@dataclass
class SpoolSummary:
    """What the spool holds, read back segment by segment."""

    segments: list[Path] = field(default_factory=list)
    events: int = 0
    message_ids: set[str] = field(default_factory=set)
    by_type: Counter[str] = field(default_factory=Counter)
    by_name: Counter[str] = field(default_factory=Counter)
    user_ids: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)
    opted_in: set[str] = field(default_factory=set)
    first: str | None = None
    last: str | None = None

    @property
    def duplicates(self) -> int:
        """Events whose messageId appeared before."""
        return self.events - len(self.message_ids)


def read_spool(root: Path, source_id: str | None = None) -> SpoolSummary:
    """Summarise every published segment under `root` (optionally of one source).

    Only names of the published pattern are read; journals and `.partial` files are skipped,
    as any spool reader must.
    """
    summary = SpoolSummary()
    base = root / "rudder-logs"
    pattern = f"*/*/*{SEGMENT_SUFFIX}" if source_id is None else f"{source_id}/*/*{SEGMENT_SUFFIX}"
    consent: dict[str, bool] = {}
    for path in sorted(base.glob(pattern)):
        if not SEGMENT_RE.match(path.name):
            continue
        summary.segments.append(path)
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue  # a forgotten event's place (signalmail.privacy.spool), as the tap
                event = json.loads(line)
                summary.events += 1
                # the collector takes events without a type or an event name (rudder-server
                # does): the rest of the pipeline quarantines them, a read-back counts them
                kind = event.get("type")
                summary.message_ids.add(str(event.get("messageId")))
                summary.by_type[str(kind)] += 1
                if kind == "track":
                    summary.by_name[str(event.get("event"))] += 1
                if event.get("userId"):
                    summary.user_ids.add(event["userId"])
                if event.get("anonymousId"):
                    summary.anonymous_ids.add(event["anonymousId"])
                traits = event.get("traits") or (event.get("context") or {}).get("traits") or {}
                if kind == "identify" and "email_opt_in" in traits and event.get("userId"):
                    consent[event["userId"]] = bool(traits["email_opt_in"])
                stamp = event.get("timestamp")
                if stamp:
                    summary.first = min(summary.first or stamp, stamp)
                    summary.last = max(summary.last or stamp, stamp)
    summary.opted_in = {user for user, ok in consent.items() if ok}
    return summary


def print_spool_summary(summary: SpoolSummary, root: Path) -> None:
    """Print the captured data, as a person would want to see it after the demo."""
    click.echo(
        f"\ncaptured in {root}: {len(summary.segments)} segments, {summary.events} events "
        f"({summary.duplicates} duplicate messageIds)"
    )
    click.echo(f"  event time {summary.first} .. {summary.last}")
    click.echo(
        f"  users: {len(summary.user_ids)} identified ({len(summary.opted_in)} opted in to "
        f"email), {len(summary.anonymous_ids)} devices (anonymousIds)"
    )
    for kind, count in summary.by_type.most_common():
        click.echo(f"  {count:>8}  {kind}")
    for name, count in summary.by_name.most_common():
        click.echo(f"  {count:>8}    track: {name}")
    for path in summary.segments[:5]:
        click.echo(f"  segment {path.relative_to(root)}")
    if len(summary.segments) > 5:
        click.echo(f"  ... and {len(summary.segments) - 5} more")
