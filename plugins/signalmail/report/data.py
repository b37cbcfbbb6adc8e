"""What the report shows, read from the warehouse, the send ledger and Mandrill.

Everything comes from tables a user has too: the raw event tables, the marts dbt builds
(`user_signals`, `trigger_decisions`, `email_triggers`, `campaign_performance`), the send
ledger, and Mandrill's own copy of the sent messages (messages/search and messages/content,
which the sandbox answers as Mandrill does). Recipient addresses are masked: the report is a
file people pass around.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from signalmail.watch.settings import LEDGER_SCHEMA, RAW_SCHEMA, WatchSettings

ACCEPTED = ("sent", "queued", "scheduled")
RAW_STREAMS = ("tracks", "pages", "identifies", "screens", "groups", "aliases", "merges")


@dataclass
class CampaignResult:
    """One campaign over the whole period: counts, conversion and hold-out uplift."""

    campaign: str
    triggered: int = 0
    sent: int = 0
    held_out: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    held_out_converted: int = 0
    revenue: float = 0.0

    @property
    def treated_rate(self) -> float | None:
        """Share of sent emails followed by an order within the attribution window."""
        return self.converted / self.sent if self.sent else None

    @property
    def held_out_rate(self) -> float | None:
        """The same share in the hold-out group."""
        return self.held_out_converted / self.held_out if self.held_out else None

    def uplift(self) -> tuple[float | None, float | None, float | None]:
        """Uplift and its 95% interval: the normal approximation campaign_performance uses."""
        treated, held = self.treated_rate, self.held_out_rate
        if treated is None or held is None:
            return None, None, None
        spread = 1.96 * math.sqrt(
            treated * (1 - treated) / self.sent + held * (1 - held) / self.held_out
        )
        return treated - held, treated - held - spread, treated - held + spread


@dataclass
class SentEmail:
    """One message as Mandrill rendered it."""

    campaign: str
    variant: str
    to: str
    subject: str
    html: str
    state: str
    #: the gallery's PNG of it, relative to the report folder (None: none taken)
    png: str | None = None


@dataclass
class ReportData:
    """Everything the report shows."""

    generated_at: dt.datetime
    engine: str
    funnel: list[tuple[str, int]] = field(default_factory=list)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    latencies_by_campaign: dict[str, list[float]] = field(default_factory=dict)
    campaigns: list[CampaignResult] = field(default_factory=list)
    deferred: list[tuple[str, int, dt.datetime]] = field(default_factory=list)
    emails: list[SentEmail] = field(default_factory=list)
    #: why the emails have no PNGs (None: they have, or there are no emails)
    gallery_note: str | None = None


def mask_email(address: str) -> str:
    """Return `a***@example.com`: enough to tell messages apart, not to read an address."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


class ReportReader:
    """Read-only queries against one warehouse and its ledger."""

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings
        self.schema = settings.dbt_schema
        if settings.engine == "duckdb":
            self.engine = sa.create_engine(
                settings.warehouse_url(),
                poolclass=sa.pool.NullPool,
                connect_args={"read_only": True},
            )
            self.ledger_table = f"signalmail_ledger_db.{LEDGER_SCHEMA}.send_ledger"
        else:
            self.engine = sa.create_engine(settings.warehouse_url(), poolclass=sa.pool.NullPool)
            self.ledger_table = f"{LEDGER_SCHEMA}.send_ledger"

    def read(self) -> ReportData:
        """Run every query in one connection."""
        data = ReportData(
            generated_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
            engine=self.settings.engine,
        )
        with self.engine.connect() as conn:
            has_ledger = self._attach_ledger(conn)
            tables = self._tables(conn)
            data.funnel = self._funnel(conn, tables, has_ledger)
            data.outcomes = self._outcomes(conn, tables, has_ledger)
            if has_ledger:
                self._latencies(conn, data)
            data.campaigns = self._campaigns(conn, tables)
            data.deferred = self._deferred(conn, tables)
        return data

    # -- helpers ----------------------------------------------------------------------------

    def _attach_ledger(self, conn: sa.Connection) -> bool:
        if self.settings.engine != "duckdb":
            return LEDGER_SCHEMA in {
                name
                for (name,) in conn.execute(
                    sa.text("select schema_name from information_schema.schemata")
                )
            }
        path = self.settings.path(self.settings.ledger_path)
        if not path.exists():
            return False
        quoted = str(path).replace("'", "''")
        conn.execute(sa.text(f"attach '{quoted}' as signalmail_ledger_db (read_only)"))
        return True

    def _tables(self, conn: sa.Connection) -> set[tuple[str, str]]:
        rows = conn.execute(
            sa.text("select table_schema, table_name from information_schema.tables")
        )
        return {(schema, name) for schema, name in rows}

    def _count(self, conn: sa.Connection, sql: str) -> int:
        return int(conn.execute(sa.text(sql)).scalar() or 0)

    def _funnel(
        self, conn: sa.Connection, tables: set[tuple[str, str]], has_ledger: bool
    ) -> list[tuple[str, int]]:
        events = sum(
            self._count(conn, f'select count(*) from {RAW_SCHEMA}."{stream}"')  # noqa: S608
            for stream in RAW_STREAMS
            if (RAW_SCHEMA, stream) in tables
        )
        schema = self.schema
        signals = (
            self._count(
                conn,
                f"select count(*) from {schema}.user_signals where intent_score > 0",  # noqa: S608
            )
            if (schema, "user_signals") in tables
            else 0
        )
        sources = []
        if (schema, "trigger_decisions") in tables:
            sources.append(f"select trigger_id from {schema}.trigger_decisions")  # noqa: S608
        if has_ledger:
            sources.append(f"select trigger_id from {self.ledger_table}")  # noqa: S608
        triggers = (
            self._count(
                conn,
                f"select count(distinct trigger_id) from ({' union all '.join(sources)}) as t",  # noqa: S608
            )
            if sources
            else 0
        )
        sent = (
            self._count(
                conn,
                f"select count(*) from {self.ledger_table} "  # noqa: S608
                f"where state in ('sent', 'queued', 'scheduled')",
            )
            if has_ledger
            else 0
        )
        opened = clicked = ordered = 0
        if (schema, "campaign_performance") in tables:
            row = conn.execute(
                sa.text(
                    f"select sum(opened_count), sum(clicked_count), sum(converted_count) "  # noqa: S608
                    f"from {schema}.campaign_performance"
                )
            ).one()
            opened, clicked, ordered = (int(v or 0) for v in row)
        return [
            ("events", events),
            ("shoppers with intent", signals),
            ("triggers", triggers),
            ("sent", sent),
            ("opened", opened),
            ("clicked", clicked),
            ("ordered", ordered),
        ]

    def _outcomes(
        self, conn: sa.Connection, tables: set[tuple[str, str]], has_ledger: bool
    ) -> dict[str, Counter[str]]:
        """Per campaign: the ledger's verdicts and, for triggers it never saw, dbt's reasons."""
        outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        if has_ledger:
            rows = conn.execute(
                sa.text(f"select campaign, state, count(*) from {self.ledger_table} group by 1, 2")  # noqa: S608
            )
            for campaign, state, n in rows:
                key = "sent" if state in ACCEPTED else state
                outcomes[campaign or "?"][key] += int(n)
        if (self.schema, "trigger_decisions") in tables:
            rows = conn.execute(
                sa.text(
                    f"select campaign, decision, count(*) from {self.schema}.trigger_decisions "  # noqa: S608
                    "where decision <> 'in_ledger' group by 1, 2"
                )
            )
            for campaign, decision, n in rows:
                key = "due, not sent yet" if decision == "send" else decision
                outcomes[campaign][key] += int(n)
        return dict(sorted(outcomes.items()))

    def _latencies(self, conn: sa.Connection, data: ReportData) -> None:
        rows = conn.execute(
            sa.text(
                f"select campaign, due_at, sent_at from {self.ledger_table} "  # noqa: S608
                "where state in ('sent', 'queued', 'scheduled') and due_at is not null "
                "and sent_at is not null"
            )
        )
        for campaign, due_at, sent_at in rows:
            seconds = (sent_at - due_at).total_seconds()
            data.latencies.append(seconds)
            data.latencies_by_campaign.setdefault(campaign, []).append(seconds)

    def _campaigns(self, conn: sa.Connection, tables: set[tuple[str, str]]) -> list[CampaignResult]:
        if (self.schema, "campaign_performance") not in tables:
            return []
        rows = conn.execute(
            sa.text(
                "select campaign, sum(triggered_count), sum(sent_count), sum(held_out_count), "  # noqa: S608
                "sum(opened_count), sum(clicked_count), sum(converted_count), "
                "sum(held_out_converted_count), sum(revenue) "
                f"from {self.schema}.campaign_performance group by campaign order by campaign"
            )
        )
        results = []
        for campaign, *numbers in rows:
            triggered, sent, held_out, opened, clicked, converted, held_out_converted = (
                int(v or 0) for v in numbers[:7]
            )
            results.append(
                CampaignResult(
                    campaign=campaign,
                    triggered=triggered,
                    sent=sent,
                    held_out=held_out,
                    opened=opened,
                    clicked=clicked,
                    converted=converted,
                    held_out_converted=held_out_converted,
                    revenue=float(numbers[7] or 0),
                )
            )
        return results

    def _deferred(
        self, conn: sa.Connection, tables: set[tuple[str, str]]
    ) -> list[tuple[str, int, dt.datetime]]:
        if (self.schema, "email_triggers") not in tables:
            return []
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        rows = conn.execute(
            sa.text(
                f"select campaign, count(*), min(send_after) from {self.schema}.email_triggers "  # noqa: S608
                "where send_after > :now group by campaign order by 3"
            ),
            {"now": now},
        )
        return [(campaign, int(n), first) for campaign, n, first in rows]


#: seconds the report waits for one Mandrill answer
REPORT_MANDRILL_TIMEOUT = 30.0


def rendered_emails(api_key: str, api_host: str, limit_per_campaign: int = 3) -> list[SentEmail]:
    """Fetch the newest messages per campaign as Mandrill rendered them (search, content).

    Through the email target's client: its timeout, and Mandrill's errors translated (a key
    never in a message).
    """
    from target_mailchimp_transactional import MandrillClient

    client = MandrillClient(api_key, api_host, timeout=REPORT_MANDRILL_TIMEOUT)
    found = client.search("*", date_from="2000-01-01", limit=1000)
    taken: Counter[str] = Counter()
    emails = []
    for message in sorted(found, key=lambda m: m.get("ts") or 0, reverse=True):
        metadata = message.get("metadata") or {}
        if not metadata.get("trigger_id"):  # another application's mail on the same account
            continue
        campaign = str(metadata.get("campaign") or "?")
        if taken[campaign] >= limit_per_campaign:
            continue
        content = client.message_content(message["_id"])
        if content is None:
            continue
        taken[campaign] += 1
        emails.append(
            SentEmail(
                campaign=campaign,
                variant=str(metadata.get("variant") or ""),
                to=mask_email(str(message.get("email") or "")),
                subject=str(content.get("subject") or message.get("subject") or ""),
                html=str(content.get("html") or ""),
                state=str(message.get("state") or ""),
            )
        )
    return sorted(emails, key=lambda e: (e.campaign, e.to))


def campaign_rows(data: ReportData) -> list[dict[str, Any]]:
    """Build the campaign table's rows, with latency figures beside the performance ones."""
    from signalmail.watch.latency import Summary

    rows = []
    for result in data.campaigns:
        value, low, high = result.uplift()
        latency = Summary.of(data.latencies_by_campaign.get(result.campaign, []))
        rows.append({"result": result, "uplift": (value, low, high), "latency": latency})
    return rows
