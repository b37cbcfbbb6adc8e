"""Helpers the tests share: free ports, readiness waits, the local S3 API's client.

Plain functions and constants, imported by name (`from tests.helpers.servers import wait_until`);
the fixtures that use them live in conftest.py, which pytest loads by itself.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

DEFAULT_PG_URL = "postgresql://signalmail:signalmail@127.0.0.1:5432/signalmail_test"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll `predicate` until it holds; fail the test with `what` if it never does.

    This is readiness polling (a server answering, a file appearing), not a sleep standing in
    for synchronisation: the loop ends the moment the condition is observed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def collector_ready(port: int, source_id: str, host: str = "127.0.0.1") -> bool:
    """True once *our* collector answers GET /health on `port` for `source_id`.

    Stronger than `port_open`: the app has finished starting (spool recovered, lifespan run),
    and a port that another test process grabbed between `free_port()` and our bind is not
    mistaken for ours (that collector would have exited, and the caller also polls for it).
    """
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as answer:
            body = json.loads(answer.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return body.get("status") == "ok" and body.get("source_id") == source_id


#: Credentials of the local S3 API (moto accepts any; these are never real).
S3_KEY_ID = "testing"
S3_SECRET = "testing-secret"
S3_REGION = "us-east-1"


def s3_client(endpoint: str):  # a boto3 client: its class is generated at run time
    """A boto3 S3 client for the local S3 API."""
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEY_ID,
        aws_secret_access_key=S3_SECRET,
        region_name=S3_REGION,
    )
