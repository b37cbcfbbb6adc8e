"""The report's gallery fails alone: Mandrill or Chromium failing leaves the rest of the report."""

from __future__ import annotations

from pathlib import Path

from signalmail.report import build
from signalmail.report.data import SentEmail
from signalmail.watch.settings import WatchSettings


def settings(tmp_path: Path) -> WatchSettings:
    return WatchSettings(project_root=tmp_path, mandrill_api_key="md-KEY-not-shown")


def email(campaign: str) -> SentEmail:
    return SentEmail(campaign, "a", "a***@example.com", "Hi", "<p>hi</p>", "sent")


def test_mandrill_failing_leaves_no_gallery_and_says_why(tmp_path, monkeypatch):
    def refused(api_key: str, base_url: str) -> list[SentEmail]:
        raise ConnectionError("Connection refused\nretries exhausted")

    monkeypatch.setattr(build, "rendered_emails", refused)
    emails, note = build.sent_emails(settings(tmp_path), tmp_path)
    assert emails == []
    assert (
        note
        == "the sent emails could not be read from Mandrill (ConnectionError: Connection refused)"
    )
    assert "md-KEY" not in note


def test_chromium_failing_keeps_the_emails_without_pngs(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "rendered_emails", lambda key, url: [email("cart"), email("cart")])
    monkeypatch.setattr(build, "unavailable", lambda: None)

    def crashed(pages):
        raise RuntimeError("Target page, context or browser has been closed")

    monkeypatch.setattr(build, "screenshot_html", crashed)
    emails, note = build.sent_emails(settings(tmp_path), tmp_path)
    assert [e.png for e in emails] == [None, None]
    closed = "RuntimeError: Target page, context or browser has been closed"
    assert note == f"Chromium could not paint them ({closed})"


def test_a_painted_gallery_names_each_png(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "rendered_emails", lambda key, url: [email("cart"), email("cart")])
    monkeypatch.setattr(build, "unavailable", lambda: None)
    painted: list[Path] = []
    monkeypatch.setattr(build, "screenshot_html", lambda pages: painted.extend(p for _, p in pages))
    emails, note = build.sent_emails(settings(tmp_path), tmp_path)
    assert note is None
    assert [e.png for e in emails] == ["emails/cart-1.png", "emails/cart-2.png"]
    assert painted == [tmp_path / "emails/cart-1.png", tmp_path / "emails/cart-2.png"]


def test_the_gallery_shows_signalmails_own_emails_only(tmp_path):
    """An account shared with other applications: their messages stay out of the report."""
    from signalmail.report.data import rendered_emails
    from signalmail.sandbox.testing import run_sandbox

    with run_sandbox(tmp_path, api_keys=["report-key"]) as sandbox:
        client = sandbox.client("report-key")
        for metadata, subject in (
            ({"trigger_id": "cart_abandonment:1", "campaign": "cart_abandonment"}, "Your cart"),
            ({"order": "invoice-7"}, "Your invoice"),
        ):
            client.messages.send({"message": {
                "from_email": "shop@example.com", "subject": subject, "html": "<p>hi</p>",
                "to": [{"email": "ann@example.com"}], "metadata": metadata,
            }})  # fmt: skip
        emails = rendered_emails("report-key", sandbox.api_host)
    assert [(e.campaign, e.subject) for e in emails] == [("cart_abandonment", "Your cart")]
    assert emails[0].to != "ann@example.com"  # masked
