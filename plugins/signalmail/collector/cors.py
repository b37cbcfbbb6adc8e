"""CORS as rudder-server answers it, so browser SDKs can post from any shop's pages.

rudder-server wraps its whole router in rs/cors with `AllowOriginFunc: always true`,
`AllowCredentials: true`, `AllowedHeaders: ["*"]` and `MaxAge: 900`
(rudderlabs/rudder-server, gateway/handle_lifecycle.go; rs/cors v1.11.1, cors.go):

- a preflight (OPTIONS with Origin and Access-Control-Request-Method) never reaches a route:
  204, the Origin echoed (never `*`, which browsers refuse with credentials), credentials
  allowed, the requested method echoed when it is GET, POST or HEAD (else no CORS headers),
  the requested headers echoed, Max-Age 900;
- every other answer to a request with an Origin (errors included) carries the echoed Origin,
  `Access-Control-Allow-Credentials: true` and `Vary: Origin`.

Write keys still guard every ingest route: CORS only lets a browser read the answer.

Unlike rudder-server, `/health` and `/metrics` answer without CORS headers: no SDK reads them,
and with the headers any page a member of staff opened could read the collector's queue depth,
rejection counts and spool errors (local paths) from inside the shop's network.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ALLOWED_METHODS = frozenset({"GET", "POST", "HEAD"})
#: routes for operators and their monitoring, never for browsers (see the module docstring)
OPERATIONS_PATHS = frozenset({"/health", "/metrics"})
MAX_AGE = "900"
PREFLIGHT_VARY = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class RudderCors:
    """ASGI middleware: rudder-server's CORS answers (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a preflight here; add the CORS headers to any other answer to an Origin."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is None or scope["path"] in OPERATIONS_PATHS:
            await self.app(scope, receive, send)
            return
        method = headers.get(b"access-control-request-method")
        if scope["method"] == "OPTIONS" and method is not None:
            await send({"type": "http.response.start", "status": 204,
                        "headers": preflight_headers(origin, method, headers)})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0].lower() != b"vary"),
                    (b"access-control-allow-origin", origin),
                    (b"access-control-allow-credentials", b"true"),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def preflight_headers(
    origin: bytes, method: bytes, headers: dict[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    """Build a preflight's 204 headers (only Vary when the method is not allowed)."""
    out = [(b"vary", PREFLIGHT_VARY)]
    if method.decode("latin-1").upper() not in ALLOWED_METHODS:
        return out
    out += [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-allow-methods", method.upper()),
        (b"access-control-max-age", MAX_AGE.encode()),
    ]
    requested = headers.get(b"access-control-request-headers")
    if requested:
        out.append((b"access-control-allow-headers", requested))
    return out
