"""Build the report: refresh the marts it reads with dbt, read them, render the page."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from signalmail.report.data import ReportReader, SentEmail, rendered_emails
from signalmail.report.render import write
from signalmail.report.screenshots import file_name, screenshot_html, unavailable
from signalmail.watch.dbt import WarmDbt
from signalmail.watch.settings import WatchSettings

#: The marts the report reads that the near-real-time tick does not build.
REPORT_MODELS = ("user_signals", "trigger_decisions", "campaign_performance")


def refresh_models(dbt: WarmDbt) -> None:
    """`dbt run` of the report's marts (the tick builds only email_triggers' ancestors)."""
    dbt.invoke("run", "--select", *REPORT_MODELS)


def build_report(settings: WatchSettings, folder: Path, emails: bool = True) -> Path:
    """Read the warehouse, the ledger and (with a Mandrill key) the sent messages; write HTML.

    The marts must be fresh (refresh_models) and nothing may hold the DuckDB file for writing.
    """
    data = ReportReader(settings).read()
    if emails and settings.mandrill_api_key:
        data.emails = rendered_emails(settings.mandrill_api_key, settings.mandrill_base_url)
        data.gallery_note = _gallery(data.emails, folder)
    return write(data, folder)


def _gallery(emails: list[SentEmail], folder: Path) -> str | None:
    """Take each email's PNG into folder/emails; return why not, if they cannot be taken."""
    reason = unavailable()
    if reason is not None or not emails:
        return reason
    pages = []
    counts: Counter[str] = Counter()
    for email in emails:
        counts[email.campaign] += 1
        email.png = f"emails/{file_name(email.campaign, counts[email.campaign])}"
        pages.append((email.html, folder / email.png))
    screenshot_html(pages)
    return None
