"""Fixtures shared by every test layer: the local S3 API and the real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.servers import DEFAULT_PG_URL, free_port, port_open, wait_until


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
