"""The Mandrill-compatible sandbox: a Starlette app serving `/api/1.3/<path>.json`.

Every API call goes through the same gate, in Mandrill's order: JSON body -> injected faults ->
`key` (missing: ValidationError "You must specify a key value"; unknown: Invalid_Key) -> the
OpenAPI request schema (ValidationError naming each field) -> the endpoint. Errors are Mandrill's
JSON `{"status": "error", "code", "name", "message"}`. With `error_style="mandrill"` (default)
every error is HTTP 500 and Invalid_Key has code -1, as the live service answers; with
`error_style="spec"` statuses and codes follow the OpenAPI document (401 / 404 / 422 ...).
RequestLimitExceeded is HTTP 429 in both styles.

Endpoints run in Starlette's thread pool (they touch SQLite and, for webhooks/add, probe a URL),
so a slow one never stalls the event loop that injects latency or timeouts into others.

Sandbox-only admin endpoints live under `/sandbox/` (no key; bind to 127.0.0.1): faults, event
simulation, Mailchimp-template seeding, unsubscribe links, webhook drain, health.

This module is only the HTTP side. The state and the key/schema gate are `core.Sandbox`, the
endpoint groups `endpoints.*`; the names other code imports from here are re-exported below.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from signalmail.sandbox.checks import is_valid_email
from signalmail.sandbox.config import AutoEvents, SandboxConfig
from signalmail.sandbox.core import Sandbox
from signalmail.sandbox.endpoints.send_recipients import (
    INVALID_DOMAIN,
    REJECT_DOMAIN,
    REJECT_LOCAL_PARTS,
)
from signalmail.sandbox.endpoints.webhooks import WEBHOOK_EVENTS
from signalmail.sandbox.errors import SPEC_STATUS, MandrillError
from signalmail.sandbox.events import SIMULATED_EVENTS
from signalmail.sandbox.faults import ERRORS, Fault, FaultPlan

__all__ = [
    "API_PREFIX",
    "INVALID_DOMAIN",
    "REJECT_DOMAIN",
    "REJECT_LOCAL_PARTS",
    "SIMULATED_EVENTS",
    "SPEC_STATUS",
    "WEBHOOK_EVENTS",
    "AutoEvents",
    "MandrillError",
    "Sandbox",
    "SandboxConfig",
    "create_app",
    "is_valid_email",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/1.3"


def create_app(config: SandboxConfig) -> Starlette:
    """Build the ASGI app; `app.state.sandbox` is the `Sandbox` (closed on shutdown)."""
    sandbox = Sandbox(config)
    app = Starlette(
        routes=[
            Route(API_PREFIX + "/{path:path}", _api, methods=["POST", "GET"]),
            Route("/sandbox/faults", _faults, methods=["GET", "POST"]),
            Route("/sandbox/faults/injected", _faults_injected, methods=["GET"]),
            Route("/sandbox/events", _events, methods=["POST"]),
            Route("/sandbox/mctemplates", _mctemplates, methods=["POST"]),
            Route("/sandbox/unsub", _unsub, methods=["GET"]),
            Route("/sandbox/webhooks/wait", _webhooks_wait, methods=["POST"]),
            Route("/sandbox/health", _health, methods=["GET"]),
        ],
        lifespan=_lifespan(sandbox),
    )
    app.state.sandbox = sandbox
    return app


def _sandbox(request: Request) -> Sandbox:
    """Return the app's `Sandbox`, kept on `app.state` so endpoints can be module functions."""
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _lifespan(sandbox: Sandbox) -> Callable[[Starlette], Any]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(sandbox.close)

    return lifespan


# ---------------------------------------------------------------------- /api/1.3


async def _api(request: Request) -> Response:
    sandbox = _sandbox(request)
    path = request.path_params["path"]
    operation, _, fmt = path.rpartition(".")
    if not operation:
        operation, fmt = path, "json"
    if request.method != "POST":
        return JSONResponse(
            {
                "status": "error",
                "code": -1,
                "name": "ValidationError",
                "message": "Mandrill API calls are POST",
            },
            status_code=405,
        )
    body = await _json_object(request, fmt)
    if isinstance(body, MandrillError):
        return _error_response(sandbox, body)
    plan = sandbox.faults.plan
    if plan.latency_ms and (not plan.only or operation in plan.only):
        await asyncio.sleep(plan.latency_ms / 1000)
    fault = sandbox.faults.draw(operation)
    if fault is not None and fault.kind != "lost_answer":  # that one answers after the call
        answered = await _injected_fault(sandbox, plan, fault)
        if answered is not None:
            return answered
    try:
        result = await run_in_threadpool(sandbox.call, operation, body)
    except MandrillError as error:
        return _error_response(sandbox, error)
    except Exception:
        log.exception("sandbox failed on %s", operation)
        return _error_response(
            sandbox, MandrillError("GeneralError", ERRORS["GeneralError"][1], -1)
        )
    if fault is not None and fault.kind == "lost_answer":
        # The work is done (a send is stored), only the answer is lost.
        return JSONResponse([])
    return JSONResponse(result)


async def _json_object(request: Request, fmt: str) -> dict[str, Any] | MandrillError:
    """Return the request's JSON object, or the error to answer before any fault is drawn."""
    if fmt != "json":
        return MandrillError("ValidationError", f"the sandbox answers .json only, not .{fmt}", -1)
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return MandrillError("ValidationError", "the request body is not valid JSON", -1)
    if not isinstance(body, dict):
        return MandrillError("ValidationError", "the request body must be a JSON object", -1)
    return body


async def _injected_fault(sandbox: Sandbox, plan: FaultPlan, fault: Fault) -> Response | None:
    """Answer an injected fault; None for a timeout, which then answers normally (late).

    `plan` is the one read before the latency delay, so a plan switched meanwhile does not
    change how long this call hangs.
    """
    if fault.kind == "timeout":
        await asyncio.sleep(plan.timeout_s)
        return None
    if fault.kind == "dropped":  # never carried out; the client gave up long ago
        await asyncio.sleep(plan.timeout_s)
        return Response(b"", status_code=504)
    if fault.kind == "5xx":
        return Response(b"", status_code=plan.http_5xx_status)
    if fault.kind == "429":
        return _error_response(
            sandbox, MandrillError("RequestLimitExceeded", ERRORS["RequestLimitExceeded"][1], 429)
        )
    code, message = ERRORS[fault.detail]
    if fault.detail == "Invalid_Key" and sandbox.config.error_style == "spec":
        code = 401
    return _error_response(
        sandbox, MandrillError(fault.detail, f"{message} (injected fault)", code)
    )


def _error_response(sandbox: Sandbox, error: MandrillError) -> JSONResponse:
    payload = {"status": "error", "code": error.code, "name": error.name, "message": error.message}
    return JSONResponse(payload, status_code=sandbox.http_status(error))


# ---------------------------------------------------------------------- /sandbox (admin)
# Keyless endpoints that tests and demos drive the sandbox with; never subject to faults.


async def _faults(request: Request) -> Response:
    sandbox = _sandbox(request)
    if request.method == "POST":
        try:
            plan = FaultPlan.from_dict(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        sandbox.faults.set(plan)
    return JSONResponse(sandbox.faults.plan.to_dict())


async def _faults_injected(request: Request) -> Response:
    return JSONResponse(_sandbox(request).faults.injected())


async def _events(request: Request) -> Response:
    data = await request.json()
    try:
        payload = await run_in_threadpool(
            _sandbox(request).simulate,
            data.get("message_id", ""),
            data.get("event", ""),
            data.get("url"),
        )
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except LookupError as exc:
        return JSONResponse({"error": str(exc.args[0])}, status_code=404)
    return JSONResponse(payload)


async def _mctemplates(request: Request) -> Response:
    data = await request.json()
    try:
        stored = await run_in_threadpool(
            _sandbox(request).seed_mc_templates, data if isinstance(data, list) else [data]
        )
    except (ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(stored)


async def _unsub(request: Request) -> Response:
    message_id = request.query_params.get("md_id", "")
    redirect = request.query_params.get("md_url", "")
    try:
        await run_in_threadpool(_sandbox(request).simulate, message_id, "unsub")
    except LookupError:
        return Response("Unknown message", status_code=404, media_type="text/plain")
    if redirect.startswith(
        ("http://", "https://")
    ):  # a javascript: or data: md_url is not followed
        return RedirectResponse(redirect, status_code=302)
    return Response("You are unsubscribed.", media_type="text/plain")


async def _webhooks_wait(request: Request) -> Response:
    timeout = float(request.query_params.get("timeout", "10"))
    idle = await run_in_threadpool(_sandbox(request).dispatcher.wait_idle, timeout)
    return JSONResponse({"idle": idle}, status_code=200 if idle else 504)


async def _health(request: Request) -> Response:
    return JSONResponse(
        {"ok": True, "messages": await run_in_threadpool(_sandbox(request).store.count_messages)}
    )
