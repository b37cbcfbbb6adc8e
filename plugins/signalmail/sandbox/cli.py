"""`signalmail sandbox`: serve the Mandrill-compatible sandbox on 127.0.0.1.

Every option also reads an environment variable (shown in `--help`), so `meltano` or a Makefile
can configure it without flags. API keys are never printed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from signalmail.sandbox.faults import ERRORS, FaultPlan


def _error_rate(value: str) -> tuple[str, float]:
    name, sep, rate = value.partition("=")
    if not sep or name not in ERRORS:
        raise click.BadParameter(
            f"expected NAME=RATE with NAME one of {sorted(ERRORS)}, got {value!r}"
        )
    try:
        return name, float(rate)
    except ValueError:
        raise click.BadParameter(f"rate in {value!r} is not a number") from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="SIGNALMAIL_SANDBOX_HOST")
@click.option("--port", default=8025, show_default=True, type=int, envvar="SIGNALMAIL_SANDBOX_PORT")
@click.option(
    "--db",
    "db_path",
    default="data/sandbox.sqlite3",
    show_default=True,
    type=click.Path(path_type=Path),
    envvar="SIGNALMAIL_SANDBOX_DB",
    help="SQLite file holding messages, templates, rejects, webhooks.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar="SIGNALMAIL_SANDBOX_API_KEYS",
    help="Valid API key (repeatable; env: whitespace-separated). Default: sandbox-key.",
)
@click.option(
    "--public-url",
    default=None,
    envvar="SIGNALMAIL_SANDBOX_PUBLIC_URL",
    help="Base URL put in unsubscribe links. Default: http://HOST:PORT.",
)
@click.option(
    "--error-style",
    type=click.Choice(["mandrill", "spec"]),
    default="mandrill",
    show_default=True,
    envvar="SIGNALMAIL_SANDBOX_ERROR_STYLE",
    help="mandrill: every error HTTP 500 (live service); spec: OpenAPI statuses.",
)
@click.option(
    "--search-calls-per-minute",
    default=20,
    show_default=True,
    type=int,
    help="messages/search limit per key; 0 disables it.",
)
@click.option("--max-metadata-bytes", default=250, show_default=True, type=int)
@click.option(
    "--index-all-metadata",
    is_flag=True,
    help="Search every metadata key, not only those added with metadata/add.",
)
@click.option(
    "--subaccount", "subaccounts", multiple=True, help="Known subaccount id (repeatable)."
)
@click.option(
    "--webhook-url",
    "webhook_urls",
    multiple=True,
    envvar="SIGNALMAIL_SANDBOX_WEBHOOK_URLS",
    help="Webhook receiving every event (repeatable); no HEAD probe.",
)
@click.option(
    "--webhook-key",
    default=None,
    envvar="SIGNALMAIL_SANDBOX_WEBHOOK_KEY",
    help="Signing key for --webhook-url hooks (default: random, see webhooks/list).",
)
@click.option("--webhook-attempts", default=5, show_default=True, type=int)
@click.option(
    "--webhook-backoff",
    default=0.5,
    show_default=True,
    type=float,
    help="Seconds before the first retry; doubles each attempt.",
)
@click.option("--no-webhook-probe", is_flag=True, help="Skip the HEAD probe on webhooks/add.")
@click.option(
    "--mc-templates",
    "mc_templates_file",
    type=click.Path(exists=True, path_type=Path),
    help="JSON list of Mailchimp templates to seed (mc_template_name, code, ...).",
)
@click.option(
    "--fault-error",
    "fault_errors",
    multiple=True,
    callback=lambda c, p, v: [_error_rate(x) for x in v],
    help="NAME=RATE, e.g. GeneralError=0.2 (repeatable).",
)
@click.option("--fault-429", default=0.0, type=float, help="Share of calls answered HTTP 429.")
@click.option("--fault-5xx", default=0.0, type=float, help="Share answered 503 with an empty body.")
@click.option("--fault-timeout", default=0.0, type=float, help="Share of calls that hang.")
@click.option(
    "--fault-lost-answer",
    default=0.0,
    type=float,
    help="Share of calls carried out but answered 200 `[]`.",
)
@click.option(
    "--timeout-seconds", default=30.0, show_default=True, type=float, help="How long they hang."
)
@click.option("--latency-ms", default=0.0, type=float, help="Added to every API call.")
@click.option(
    "--open-rate", default=0.0, type=float, help="Auto-simulated opens per delivered message."
)
@click.option("--click-rate", default=0.0, type=float, help="Clicks per opened message.")
@click.option("--bounce-rate", default=0.0, type=float, help="Hard bounces per delivered message.")
@click.option("--unsub-rate", default=0.0, type=float, help="Unsubscribes per delivered message.")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed for faults and auto events."
)
def sandbox(**opts: object) -> None:
    """Serve a Mandrill-compatible API at http://HOST:PORT/api/1.3 (see docs/sandbox.md)."""
    import uvicorn

    from signalmail.sandbox.app import AutoEvents, SandboxConfig, create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    keys: list[str] = []
    for value in opts["api_keys"] or ("sandbox-key",):  # type: ignore[union-attr]
        keys.extend(str(value).split())
    host, port = str(opts["host"]), int(opts["port"])  # type: ignore[arg-type]
    plan = FaultPlan(
        errors=dict(opts["fault_errors"]),  # type: ignore[arg-type]
        http_429=float(opts["fault_429"]),
        http_5xx=float(opts["fault_5xx"]),  # type: ignore[arg-type]
        timeout=float(opts["fault_timeout"]),
        timeout_s=float(opts["timeout_seconds"]),  # type: ignore[arg-type]
        lost_answer=float(opts["fault_lost_answer"]),  # type: ignore[arg-type]
        latency_ms=float(opts["latency_ms"]),
        seed=int(opts["seed"]),  # type: ignore[arg-type]
    )
    try:
        plan.check()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    config = SandboxConfig(
        db_path=opts["db_path"],  # type: ignore[arg-type]
        api_keys=keys,
        public_url=str(opts["public_url"] or f"http://{host}:{port}"),
        error_style=str(opts["error_style"]),
        search_calls_per_minute=int(opts["search_calls_per_minute"]),  # type: ignore[arg-type]
        max_metadata_bytes=int(opts["max_metadata_bytes"]),  # type: ignore[arg-type]
        index_all_metadata=bool(opts["index_all_metadata"]),
        subaccounts=list(opts["subaccounts"]),  # type: ignore[call-overload]
        faults=plan,
        webhook_urls=[u for value in opts["webhook_urls"] for u in str(value).split()],  # type: ignore[union-attr]
        webhook_key=opts["webhook_key"],  # type: ignore[arg-type]
        webhook_max_attempts=int(opts["webhook_attempts"]),  # type: ignore[arg-type]
        webhook_backoff_s=float(opts["webhook_backoff"]),  # type: ignore[arg-type]
        probe_webhooks=not opts["no_webhook_probe"],
        auto_events=AutoEvents(
            open=float(opts["open_rate"]),
            click=float(opts["click_rate"]),  # type: ignore[arg-type]
            hard_bounce=float(opts["bounce_rate"]),
            unsub=float(opts["unsub_rate"]),  # type: ignore[arg-type]
        ),
        seed=int(opts["seed"]),  # type: ignore[arg-type]
        mc_templates_file=opts["mc_templates_file"],  # type: ignore[arg-type]
    )
    click.echo(
        f"Mandrill sandbox on http://{host}:{port}/api/1.3 "
        f"({len(keys)} API key(s), db {config.db_path}, faults {json.dumps(plan.to_dict())})"
    )
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
