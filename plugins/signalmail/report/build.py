"""Build the report: refresh the marts it reads with dbt, read them, render the page."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from signalmail.report.data import ReportReader, SentEmail, rendered_emails
from signalmail.report.render import write
from signalmail.report.screenshots import file_name, screenshot_html, unavailable
from signalmail.watch.dbt import WarmDbt
from signalmail.watch.settings import WatchSettings

LOGGER = logging.getLogger(__name__)

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
        data.emails, data.gallery_note = sent_emails(settings, folder)
    return write(data, folder)


def sent_emails(settings: WatchSettings, folder: Path) -> tuple[list[SentEmail], str | None]:
    """Return the sent emails with their PNGs, and why there are none, if so.

    The gallery is the report's last part: Mandrill answering an error, or Chromium failing to
    start (a small /dev/shm, a crash), leaves the rest of the report, and the watch or demo
    that asked for it, as they are.
    """
    assert settings.mandrill_api_key is not None
    try:
        emails = rendered_emails(settings.mandrill_api_key, settings.mandrill_base_url)
    except Exception as exc:
        LOGGER.warning("report: the sent emails could not be read: %s", _reason(exc))
        return [], f"the sent emails could not be read from Mandrill ({_reason(exc)})"
    return emails, _gallery(emails, folder)


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
    try:
        screenshot_html(pages)
    except Exception as exc:
        for email in emails:
            email.png = None
        LOGGER.warning("report: Chromium could not paint the emails: %s", _reason(exc))
        return f"Chromium could not paint them ({_reason(exc)})"
    return None


def _reason(exc: Exception) -> str:
    """One line for the page: the error's class and the start of its message."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line[:200]}".rstrip(": ")
