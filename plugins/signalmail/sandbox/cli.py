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
def sandbox(
    *,
    host: str,
    port: int,
    db_path: Path,
    api_keys: tuple[str, ...],
    public_url: str | None,
    error_style: str,
    search_calls_per_minute: int,
    max_metadata_bytes: int,
    index_all_metadata: bool,
    subaccounts: tuple[str, ...],
    webhook_urls: tuple[str, ...],
    webhook_key: str | None,
    webhook_attempts: int,
    webhook_backoff: float,
    no_webhook_probe: bool,
    mc_templates_file: Path | None,
    fault_errors: list[tuple[str, float]],
    fault_429: float,
    fault_5xx: float,
    fault_timeout: float,
    fault_lost_answer: float,
    timeout_seconds: float,
    latency_ms: float,
    open_rate: float,
    click_rate: float,
    bounce_rate: float,
    unsub_rate: float,
    seed: int,
) -> None:
    """Serve a Mandrill-compatible API at http://HOST:PORT/api/1.3 (see docs/sandbox.md)."""
    import uvicorn

    from signalmail.sandbox.app import AutoEvents, SandboxConfig, create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    keys: list[str] = []
    for value in api_keys or ("sandbox-key",):
        keys.extend(value.split())
    plan = FaultPlan(
        errors=dict(fault_errors),
        http_429=fault_429,
        http_5xx=fault_5xx,
        timeout=fault_timeout,
        timeout_s=timeout_seconds,
        lost_answer=fault_lost_answer,
        latency_ms=latency_ms,
        seed=seed,
    )
    try:
        plan.check()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    config = SandboxConfig(
        db_path=db_path,
        api_keys=keys,
        public_url=public_url or f"http://{host}:{port}",
        error_style=error_style,
        search_calls_per_minute=search_calls_per_minute,
        max_metadata_bytes=max_metadata_bytes,
        index_all_metadata=index_all_metadata,
        subaccounts=list(subaccounts),
        faults=plan,
        webhook_urls=[u for value in webhook_urls for u in value.split()],
        webhook_key=webhook_key,
        webhook_max_attempts=webhook_attempts,
        webhook_backoff_s=webhook_backoff,
        probe_webhooks=not no_webhook_probe,
        auto_events=AutoEvents(
            open=open_rate,
            click=click_rate,
            hard_bounce=bounce_rate,
            unsub=unsub_rate,
        ),
        seed=seed,
        mc_templates_file=mc_templates_file,
    )
    click.echo(
        f"Mandrill sandbox on http://{host}:{port}/api/1.3 "
        f"({len(keys)} API key(s), db {config.db_path}, faults {json.dumps(plan.to_dict())})"
    )
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
