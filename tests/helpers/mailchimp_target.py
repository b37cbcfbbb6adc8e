"""Helpers for the target's integration and reliability tests (no tests in here).

Everything goes through the real pieces: the real `mailchimp_transactional` client against the
`signalmail sandbox` over HTTP, rudder-sdk-python against a recording data plane, and the target
driven through singer-sdk's own message reader.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from target_mailchimp_transactional.ledger import Ledger
from target_mailchimp_transactional.target import TargetMailchimpTransactional

REPO = Path(__file__).resolve().parents[2]
CAMPAIGNS_DIR = REPO / "templates" / "campaigns"
BLOCKS_DIR = REPO / "templates" / "blocks"
API_KEY = "test-key-0123456789"
SLUGS = {
    "cart_abandonment": "cart-abandonment",
    "browse_abandonment": "browse-abandonment",
    "product_recommendations": "product-recommendations",
    "re_engagement": "re-engagement",
    "post_purchase": "post-purchase",
}
TEMPLATE_HTML = """<html><body>
<h1>Hi {{#if first_name}}{{first_name}}{{else}}there{{/if}}</h1>
{{#each products}}<p class="product">{{name}} {{price}}</p>{{/each}}
<div mc:edit="cart_items">default cart</div>
<div mc:edit="viewed">default viewed</div>
<div mc:edit="order_summary">default order</div>
<div mc:edit="recommendations">default recommendations</div>
<a href="*|UNSUB|*">unsubscribe</a>
</body></html>"""

SCHEMA = {
    "type": "SCHEMA",
    "stream": "email_triggers",
    "key_properties": ["trigger_id"],
    "schema": {
        "type": "object",
        "properties": {
            "trigger_id": {"type": "string"},
            "campaign": {"type": "string"},
            "user_id": {"type": ["string", "null"]},
            "email": {"type": ["string", "null"]},
            "first_name": {"type": ["string", "null"]},
            "locale": {"type": ["string", "null"]},
            "timezone": {"type": ["string", "null"]},
            "eligible_at": {"type": ["string", "null"], "format": "date-time"},
            "send_after": {"type": ["string", "null"], "format": "date-time"},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "holdout": {"type": ["boolean", "null"]},
            "payload": {"type": ["string", "object", "null"]},
            "computed_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
}


def iso(delta_minutes: float = 0) -> str:
    """Naive-UTC ISO text `delta_minutes` from now (the tap's rendering of the mart)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return (now + dt.timedelta(minutes=delta_minutes)).isoformat()


def trigger(n: int | str, campaign: str = "cart_abandonment", **over: Any) -> dict[str, Any]:
    """One `email_triggers` row (docs/contracts.md section 4) with a realistic payload."""
    payload = {
        "products": [
            {"product_id": f"p{n}", "name": f"Shoe {n}", "price": 59.0, "quantity": 1,
             "url": f"https://shop.example.com/p/{n}", "image_url": f"https://img.example.com/{n}.png"},
        ],
        "cart_total": 59.0,
        "currency": "EUR",
        "cart_url": "https://shop.example.com/cart",
        "recommendations": [
            {"name": "Socks", "url": "https://shop.example.com/p/socks", "price": 9}
        ],
        "order_id": f"o{n}",
        "order_total": 59.0,
        "search_term": "shoes",
    }  # fmt: skip
    row = {
        "trigger_id": f"{campaign}:{n}",
        "campaign": campaign,
        "user_id": f"user-{n}",
        "email": f"user{n}@example.com",
        "first_name": f"Ann{n}",
        "locale": "en",
        "timezone": "Europe/Berlin",
        "eligible_at": iso(-30),
        "send_after": iso(-1),
        "expires_at": iso(24 * 60),
        "holdout": False,
        "payload": json.dumps(payload),
        "computed_at": iso(),
    }
    row.update(over)
    return row


def singer_lines(rows: list[dict[str, Any]], extra: list[dict[str, Any]] | None = None) -> str:
    """SCHEMA + RECORD lines (+ any extra messages) as a tap would write them."""
    out = [json.dumps(SCHEMA)]
    out += [json.dumps({"type": "RECORD", "stream": "email_triggers", "record": r}) for r in rows]
    out += [json.dumps(m) for m in extra or []]
    return "\n".join(out) + "\n"


def target_config(sandbox: Any, tmp_path: Path, **over: Any) -> dict[str, Any]:
    """A config pointing at the sandbox, a DuckDB ledger in tmp_path and the shipped campaigns."""
    cfg = {
        "api_key": API_KEY,
        "base_url": sandbox.api_host,
        "campaigns_dir": str(CAMPAIGNS_DIR),
        "blocks_dir": str(BLOCKS_DIR),
        "ledger_url": f"duckdb:///{tmp_path / 'ledger.duckdb'}",
        "max_recipients_per_call": 50,
        "concurrency": 4,
        "timeout": 5,
        "max_retries": 3,
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        "search_calls_per_minute": 600,
    }
    cfg.update(over)
    return cfg


def run_target(config: dict[str, Any], lines: str) -> TargetMailchimpTransactional:
    """Run the target in-process over Singer lines, as `target-mailchimp-transactional` would."""
    target = TargetMailchimpTransactional(config=config, validate_config=True)
    target.listen(io.StringIO(lines))
    return target


def seed_templates(sandbox: Any) -> None:
    """Create and publish one template per campaign slug in the sandbox."""
    client = sandbox.client(API_KEY)
    for name, slug in SLUGS.items():
        client.templates.add({
            "name": slug, "from_email": "hello@shop.example.com", "from_name": "Example Shop",
            "subject": f"{name} default subject", "code": TEMPLATE_HTML, "publish": True,
            "labels": [name],
        })  # fmt: skip


def sandbox_messages(sandbox: Any, query: str = "*") -> list[dict[str, Any]]:
    """Every message the sandbox stored (messages/search through the real client)."""
    client = sandbox.client(API_KEY)
    result = client.messages.search({"query": query, "limit": 1000})
    return result if isinstance(result, list) else []


def ledger_rows(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ledger as trigger_id -> row (opened after the target released the file)."""
    ledger = Ledger(config["ledger_url"], config.get("ledger_schema", "signalmail_ledger"))
    try:
        return {r["trigger_id"]: r for r in ledger.all_rows()}
    finally:
        ledger.close()


class CollectorPlane:
    """`signalmail collect` (the project's RudderStack-compatible data plane) in a thread.

    Built from its public pieces (contracts section 1: SpoolWriter; the collector's app); the
    events are read back from the spool it writes, as tap-rudderstack would read them.
    """

    def __init__(self, root: Path, write_key: str) -> None:
        import uvicorn
        from signalmail.collector.app import CollectorSettings, create_app
        from signalmail.collector.spool import SpoolWriter

        from tests.helpers.servers import free_port

        self.root = root
        self.writer = SpoolWriter(str(root), "target-tests")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        app = create_app(CollectorSettings(write_key=write_key), self.writer)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event in the spool (the open segment is published first)."""
        self.writer.flush()
        out: list[dict[str, Any]] = []
        for path in sorted((self.root / "rudder-logs").rglob("*.json.gz")):
            with gzip.open(path, "rt") as handle:
                out.extend(json.loads(line) for line in handle)
        return out

    def __enter__(self) -> CollectorPlane:
        from tests.helpers.servers import port_open, wait_until

        self.thread.start()
        port = int(self.url.rsplit(":", 1)[1])
        wait_until(lambda: self.server.started and port_open(port), what="collector listening")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.writer.close()


def data_plane(root: Path, write_key: str) -> CollectorPlane | RecordingDataPlane:
    """The collector when it is importable, else the minimal recording server."""
    try:
        return CollectorPlane(root, write_key)
    except ImportError:
        return RecordingDataPlane(write_key)


class RecordingDataPlane:
    """A minimal RudderStack data plane: records every /v1/batch event, answers 200 OK.

    Checks what rudder-sdk-python relies on: basic auth with the write key, gzip JSON body.
    """

    def __init__(self, write_key: str) -> None:
        self.write_key = write_key
        self._events: list[dict[str, Any]] = []
        self.rejected_auth = 0
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                import base64

                auth = self.headers.get("Authorization", "")
                expected = "Basic " + base64.b64encode(f"{plane.write_key}:".encode()).decode()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if auth != expected:
                    plane.rejected_auth += 1
                    self.send_response(401)
                    self.end_headers()
                    self.wfile.write(b"invalid write key")
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                plane._events.extend(json.loads(body)["batch"])
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received so far."""
        return list(self._events)

    def __enter__(self) -> RecordingDataPlane:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
