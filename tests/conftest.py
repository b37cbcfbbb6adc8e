"""Fixtures shared by every test layer: free ports, readiness waits, the real PostgreSQL server."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API on 127.0.0.1 (moto's server mode): clients speak HTTP to it, as to AWS."""
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_until(lambda: port_open(port), what="moto S3 server")
    yield f"http://127.0.0.1:{port}"
    server.stop()


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


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the real PostgreSQL server that `make test` started (scripts/start-postgres.sh)."""
    url = os.environ.get("SIGNALMAIL_PG_URL", DEFAULT_PG_URL)
    psycopg = pytest.importorskip("psycopg")
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise  # in CI the server is part of the contract, never a silent skip
        pytest.skip(
            f"PostgreSQL not reachable ({exc.__class__.__name__}); run scripts/start-postgres.sh"
        )
    return url


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards, so tests never see each other's rows."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'create schema "{name}"')
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'drop schema if exists "{name}" cascade')


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """A fresh database for one test (its own rudderstack_raw, signals and ledger schemas).

    For code whose schemas are fixed names, such as `signalmail watch`; dropped afterwards.
    """
    import psycopg
    from psycopg import sql

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    base, _, _ = pg_url.rpartition("/")
    yield f"{base}/{name}"

    def dropped() -> bool:
        # An autovacuum worker (a superuser's process, which `force` may not end) can be busy
        # in the database after a test deleted many rows: the drop succeeds once it is done.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            try:
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )
            except psycopg.errors.InsufficientPrivilege:
                return False
        return True

    wait_until(dropped, timeout=120, what=f"database {name} dropped")
