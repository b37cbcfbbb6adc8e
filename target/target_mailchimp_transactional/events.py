"""Emit "Email Sent" track events (rudder-sdk-python), so a send joins the behavioral stream.

One event per message Mandrill accepted (sent, queued, scheduled), properties per
docs/contracts.md section 2. The messageId is derived from the trigger id, so a rerun that
re-emits an event (after reconciliation, say) deduplicates downstream like every SDK retry.
Delivery is the SDK's background queue; `close()` flushes it before the target exits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from typing import Any

from rudderstack.analytics import Client

LOGGER = logging.getLogger(__name__)


def email_sent_message_id(trigger_id: str) -> str:
    """Stable messageId for a trigger's Email Sent event (uuid5 over the trigger id)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"signalmail:email-sent:{trigger_id}"))


class EmailSentEmitter:
    """Queues Email Sent events; errors are logged (never fatal: the email is already out)."""

    def __init__(self, data_plane_url: str, write_key: str, timeout: float = 15.0) -> None:
        self.failures = 0
        self.client = Client(
            write_key=write_key,
            host=data_plane_url.rstrip("/"),
            sync_mode=False,
            gzip=True,
            timeout=timeout,
            max_retries=5,
            on_error=self._on_error,
            upload_size=100,
            # the SDK gathers a batch for up to this long before uploading, and close() waits
            # for that upload: its 0.5 s default would add half a second to every run that sent
            upload_interval=0.05,
            max_queue_size=100_000,
        )

    def _on_error(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        self.failures += len(batch)
        LOGGER.warning("Email Sent events not delivered (%d): %s", len(batch), type(error).__name__)

    def email_sent(
        self,
        *,
        trigger_id: str,
        campaign: str,
        variant: str,
        template: str,
        mandrill_id: str | None,
        email: str,
        user_id: str | None,
        status: str,
    ) -> None:
        """Queue one Email Sent event (identified user, else an anonymous id from the email)."""
        anonymous_id = None
        if not user_id:
            anonymous_id = (
                "mandrill:"
                + hashlib.sha1(  # noqa: S324 - an id, not a secret
                    email.strip().lower().encode()
                ).hexdigest()
            )
        self.client.track(
            user_id=user_id or None,
            anonymous_id=anonymous_id,
            event="Email Sent",
            properties={
                "trigger_id": trigger_id,
                "campaign": campaign,
                "variant": variant,
                "template": template,
                "mandrill_id": mandrill_id,
                "email": email,
                "user_id": user_id,
                "status": status,
            },
            context={"library": {"name": "target-mailchimp-transactional", "version": "0.1.0"}},
            timestamp=dt.datetime.now(dt.UTC),
            message_id=email_sent_message_id(trigger_id),
        )

    def close(self) -> None:
        """Flush the queue and stop the consumer thread."""
        self.client.flush()
        self.client.join()
