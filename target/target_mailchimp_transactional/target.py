"""target-mailchimp-transactional: `email_triggers` rows in, personalised Mandrill emails out."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from singer_sdk import Target
from singer_sdk import typing as th

from target_mailchimp_transactional.blocks import BlockRenderer
from target_mailchimp_transactional.campaigns import load_campaigns
from target_mailchimp_transactional.client import MandrillClient
from target_mailchimp_transactional.dispatch import Dispatcher, Settings
from target_mailchimp_transactional.events import EmailSentEmitter
from target_mailchimp_transactional.ledger import SCHEMA, Ledger
from target_mailchimp_transactional.sinks import EmailTriggerSink

LOGGER = logging.getLogger("target_mailchimp_transactional")


class TargetMailchimpTransactional(Target):
    """Sends each due trigger once through Mandrill templates, recording it in a ledger."""

    name = "target-mailchimp-transactional"
    default_sink_class = EmailTriggerSink

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType,
            secret=True,
            description="Mailchimp Transactional (Mandrill) API key. Required unless dry_run. "
            "Never logged.",
        ),
        th.Property(
            "base_url",
            th.StringType,
            default="https://mandrillapp.com/api/1.3",
            description="API root. Point it at `signalmail sandbox` (http://127.0.0.1:<port>/api/1.3"
            " or whatever the sandbox prints) for development and tests.",
        ),
        th.Property(
            "campaigns_dir",
            th.StringType,
            default="templates/campaigns",
            description="Folder of campaign files `<campaign>.yml` (validated at start).",
        ),
        th.Property(
            "blocks_dir",
            th.StringType,
            default="templates/blocks",
            description="Folder of Jinja2 blocks (`*.html.j2`) the campaigns render into mc:edit "
            "regions.",
        ),
        th.Property(
            "ledger_url",
            th.StringType,
            default="duckdb:///data/ledger.duckdb",
            secret=True,  # a PostgreSQL ledger's URL carries its password
            description="SQLAlchemy URL of the send ledger (DuckDB file or PostgreSQL, e.g. "
            "postgresql+psycopg://user:pw@host/db). On DuckDB keep it a separate file from the "
            "warehouse: the warehouse tap reads the warehouse while the target writes.",
        ),
        th.Property(
            "ledger_schema",
            th.StringType,
            default=SCHEMA,
            description="Schema holding `send_ledger` (dbt reads `signalmail_ledger`).",
        ),
        th.Property(
            "max_recipients_per_call",
            th.IntegerType,
            default=500,
            description="Recipients per send-template call (each with its own merge vars; "
            "preserve_recipients is always false).",
        ),
        th.Property(
            "concurrency",
            th.IntegerType,
            default=4,
            description="Mandrill calls in flight at once (threads).",
        ),
        th.Property(
            "timeout",
            th.NumberType,
            default=30,
            description="Seconds to wait for one Mandrill answer (the client's own default is "
            "300). A send that times out is never resent blindly: it stays `sending` and is "
            "reconciled with messages/search.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType,
            default=5,
            description="Retries of one call on GeneralError, ServiceUnavailable, "
            "RequestLimitExceeded, an unnamed HTTP 429 or 503 and refused connections "
            "(exponential backoff with jitter); then the triggers are `failed` and left for the "
            "next run. An unnamed 502, 504 or other 5xx may come after Mandrill took the call: "
            "never retried, reconciled with messages/search.",
        ),
        th.Property(
            "backoff_base_seconds",
            th.NumberType,
            default=0.5,
            description="First retry delay; doubles per retry (jittered to 50-100%).",
        ),
        th.Property(
            "backoff_max_seconds",
            th.NumberType,
            default=30,
            description="Upper bound of one retry delay.",
        ),
        th.Property(
            "max_attempts",
            th.IntegerType,
            default=3,
            description="Runs that may try a `failed` trigger again before it stays failed.",
        ),
        th.Property(
            "search_calls_per_minute",
            th.IntegerType,
            default=20,
            description="messages/search rate limit (Mandrill allows 20 a minute).",
        ),
        th.Property(
            "search_batch_size",
            th.IntegerType,
            default=50,
            description="Trigger ids OR-ed into one messages/search query when reconciling.",
        ),
        th.Property(
            "send_after_grace_seconds",
            th.IntegerType,
            default=0,
            description="How many seconds before its send_after a trigger may go out (clock "
            "skew between warehouse and target). A trigger scheduled later than that (best hour, "
            "quiet hours) is deferred: not sent, not recorded; the mart offers it again on every "
            "run until it is due.",
        ),
        th.Property(
            "reconcile_grace_seconds",
            th.IntegerType,
            default=600,
            description="A trigger left `sending` (its request may have reached Mandrill) that "
            "messages/search does not find becomes `failed` (sendable again) only when the same "
            "search answer finds a message Mandrill accepted at least this many seconds after "
            "that request left: proof the answer is neither lost nor behind.",
        ),
        th.Property(
            "link_domains",
            th.ArrayType(th.StringType),
            description="When set, links from event data (payload keys `url` and `*_url`) "
            "reach an email only if their host is one of these domains or under one; "
            "anything not http(s) is always dropped.",
        ),
        th.Property(
            "default_currency",
            th.StringType,
            description="Currency code for payloads without one (the dbt var `default_currency` "
            "normally fills it in the mart); amounts are shown as `<field>_display`.",
        ),
        th.Property(
            "default_locale",
            th.StringType,
            default="en_US",
            description="Locale for formatting amounts when the recipient has none (or an "
            "unknown one), e.g. `de_DE`.",
        ),
        th.Property(
            "unconfirmed_after_hours",
            th.NumberType,
            default=24,
            description="A trigger left `sending` with no such proof after this long becomes "
            "`unconfirmed`: logged as an error and never sent again automatically.",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            description="Write request bodies (key redacted) and HTML previews to outbox_dir "
            "instead of calling Mandrill; the ledger is not touched.",
        ),
        th.Property(
            "outbox_dir",
            th.StringType,
            default="output/outbox",
            description="Where dry_run writes `<campaign>/<variant>/call-N.json` and "
            "`<trigger_id>.html`.",
        ),
        th.Property(
            "data_plane_url",
            th.StringType,
            description="RudderStack data plane (or `signalmail collect`) URL for Email Sent "
            "events; unset = no events.",
        ),
        th.Property(
            "write_key",
            th.StringType,
            secret=True,
            description="RudderStack source write key for Email Sent events.",
        ),
    ).to_dict()

    @property
    def max_parallelism(self) -> int:
        """One drain at a time: the dispatcher owns the ledger connection and its own threads."""
        return 1

    @max_parallelism.setter
    def max_parallelism(self, value: int) -> None:  # the SDK may try to set it
        pass

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """Built on first use: config checked, key proven, crashed sends reconciled."""
        # an unset ${VAR} in meltano.yml arrives as "": the setting's default applies
        cfg: dict[str, Any] = {k: v for k, v in self.config.items() if v not in (None, "")}
        dry_run = bool(cfg.get("dry_run"))
        blocks_dir = Path(cfg.get("blocks_dir", "templates/blocks"))
        campaigns = load_campaigns(
            Path(cfg.get("campaigns_dir", "templates/campaigns")), blocks_dir
        )
        renderer = BlockRenderer(blocks_dir)
        renderer.check(campaigns)
        settings = Settings(
            max_recipients_per_call=int(cfg.get("max_recipients_per_call", 500)),
            concurrency=int(cfg.get("concurrency", 4)),
            max_retries=int(cfg.get("max_retries", 5)),
            max_attempts=int(cfg.get("max_attempts", 3)),
            backoff_base_seconds=float(cfg.get("backoff_base_seconds", 0.5)),
            backoff_max_seconds=float(cfg.get("backoff_max_seconds", 30)),
            search_calls_per_minute=int(cfg.get("search_calls_per_minute", 20)),
            search_batch_size=int(cfg.get("search_batch_size", 50)),
            send_after_grace_seconds=int(cfg.get("send_after_grace_seconds", 0)),
            reconcile_grace_seconds=int(cfg.get("reconcile_grace_seconds", 600)),
            unconfirmed_after_hours=float(cfg.get("unconfirmed_after_hours", 24)),
            link_domains=tuple(cfg.get("link_domains") or ()),
            default_currency=cfg.get("default_currency") or None,
            default_locale=cfg.get("default_locale") or "en_US",
            dry_run=dry_run,
            outbox_dir=Path(cfg.get("outbox_dir", "output/outbox")),
        )
        if settings.max_recipients_per_call < 1 or settings.max_recipients_per_call > 1000:
            raise ValueError("max_recipients_per_call must be between 1 and 1000")
        client = ledger = emitter = None
        if not dry_run:
            if not cfg.get("api_key"):
                raise ValueError("api_key is required unless dry_run is true")
            client = MandrillClient(
                cfg["api_key"], cfg.get("base_url"), timeout=float(cfg.get("timeout", 30))
            )
            ledger_url = cfg.get("ledger_url", "duckdb:///data/ledger.duckdb")
            if ledger_url.startswith("duckdb:///") and not ledger_url.startswith("duckdb:///:"):
                Path(ledger_url.removeprefix("duckdb:///")).parent.mkdir(
                    parents=True, exist_ok=True
                )
            ledger = Ledger(ledger_url, cfg.get("ledger_schema", SCHEMA))
            if cfg.get("data_plane_url"):
                if not cfg.get("write_key"):
                    raise ValueError("data_plane_url is set but write_key is not")
                emitter = EmailSentEmitter(cfg["data_plane_url"], cfg["write_key"])
        dispatcher = Dispatcher(settings, campaigns, renderer, client, ledger, emitter)
        try:
            dispatcher.start()
        except BaseException:
            # not cached, so listen()'s cleanup never sees it: its lease (a PostgreSQL session),
            # the ledger's engine and the emitter's thread go now, not with the process (a
            # watch retrying a Mandrill outage every 30 s would keep one of each per attempt)
            dispatcher.abandon()
            raise
        return dispatcher

    def _process_batch_message(self, message_dict: dict) -> None:
        """Refuse BATCH: singer-sdk's sinks would drop it silently while state moves on."""
        raise ValueError(
            f"BATCH message for stream {message_dict.get('stream')!r} refused: this target "
            "sends each trigger exactly once and needs RECORD messages. Run the tap without "
            "`batch_config`."
        )

    def _write_state_message(self, state: dict) -> None:
        """Emit STATE only once every send in flight is recorded in the ledger."""
        if "dispatcher" in self.__dict__:
            self.dispatcher.flush()
        super()._write_state_message(state)

    # singer-sdk marks listen() final; it is the one method around the whole run, and the SDK
    # has no hook for a run that raised
    def listen(self, file_input: IO[str] | None = None) -> None:  # type: ignore[misc]
        """Read the input; if the run fails, still release its lease and its ledger.

        Without this a run that raised (and a host like `signalmail watch` that carries on)
        would keep its lease, and later runs would take its claims for a live run's.
        """
        try:
            super().listen(file_input)
        except BaseException:
            if "dispatcher" in self.__dict__:
                self.dispatcher.abandon()
            raise

    def process_endofpipe(self) -> None:
        """Drain, then flush events and log the run summary (reconciles even on empty input)."""
        dispatcher = self.dispatcher
        super().process_endofpipe()
        dispatcher.close()
        if dispatcher.ledger is not None:
            dispatcher.ledger.close()


if __name__ == "__main__":
    TargetMailchimpTransactional.cli()
