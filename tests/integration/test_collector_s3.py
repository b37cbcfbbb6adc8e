"""The spool on S3 (moto server mode on 127.0.0.1): one PUT per segment, exact recovery."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from rudderstack.analytics.client import Client
from signalmail.collector.spool import SEGMENT_RE, SpoolWriter, segment_key

from tests.helpers.servers import (
    S3_KEY_ID,
    S3_REGION,
    S3_SECRET,
    collector_ready,
    free_port,
    s3_client,
    wait_until,
)

BUCKET = "signalmail-spool"


@pytest.fixture
def s3(s3_endpoint):
    client = s3_client(s3_endpoint)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    options = {
        "key": S3_KEY_ID,
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": S3_REGION},
        "use_listings_cache": False,
        "skip_instance_cache": True,
    }
    return client, prefix, options


def objects(client, prefix: str) -> list[str]:
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def read_object(client, key: str) -> list[dict]:
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]


def test_segments_are_published_to_s3(s3, tmp_path):
    client, prefix, options = s3
    root = f"s3://{BUCKET}/{prefix}"
    with SpoolWriter(root, "web", storage_options=options, journal_dir=tmp_path / "j") as writer:
        writer.append([{"messageId": "a", "type": "track", "userId": "u"}])
        writer.append([{"messageId": "b", "type": "track", "userId": "u"}])
        writer.flush()
        (key,) = objects(client, prefix)
    assert key.startswith(f"{prefix}/rudder-logs/web/")
    assert SEGMENT_RE.match(key.rsplit("/", 1)[1])
    assert [e["messageId"] for e in read_object(client, key)] == ["a", "b"]
    # nothing but segments is ever visible in the bucket, and the local journal is gone
    assert not list((tmp_path / "j").glob("*.journal"))
    assert not list((tmp_path / "j").glob(".upload-*"))


def test_s3_recovery_skips_already_uploaded_segment_and_uploads_the_rest(s3, tmp_path):
    client, prefix, options = s3
    journal_dir = tmp_path / "j"
    journal_dir.mkdir()
    uploaded = journal_dir / f"1767225600.{uuid.uuid4().hex}.journal"
    pending = journal_dir / f"1767225660.{uuid.uuid4().hex}.journal"
    # a compressed copy a killed collector was uploading when it died
    (journal_dir / ".upload-k1ll3d.partial").write_bytes(b"\x1f\x8b half a segment")
    uploaded.write_bytes(b'{"messageId": "u1"}\n')
    pending.write_bytes(b'{"messageId": "p1"}\n{"messageId": "p2"}\n{"messa')
    done_key = segment_key("web", 1767225600, str(uuid.UUID(uploaded.name.split(".")[1])))
    client.put_object(
        Bucket=BUCKET, Key=f"{prefix}/{done_key}", Body=gzip.compress(b'{"messageId": "u1"}\n')
    )
    writer = SpoolWriter(
        f"s3://{BUCKET}/{prefix}", "web", storage_options=options, journal_dir=journal_dir
    )
    writer.close()
    keys = objects(client, prefix)
    assert len(keys) == 2
    ids = sorted(e["messageId"] for key in keys for e in read_object(client, key))
    assert ids == ["p1", "p2", "u1"]  # u1 once, the torn p3 dropped
    assert writer.stats.journals_already_published == 1
    assert writer.stats.torn_lines_dropped == 1
    assert not list(journal_dir.glob("*.journal"))
    assert not list(journal_dir.glob(".upload-*"))  # no litter left by the killed process


def test_unreachable_s3_keeps_journal_for_next_start(s3, tmp_path):
    _, _, options = s3
    dead = {
        **options,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    writer = SpoolWriter(
        f"s3://{BUCKET}/dead", "web", storage_options=dead, journal_dir=tmp_path / "j"
    )
    writer.append([{"messageId": "kept", "type": "track", "userId": "u"}])  # durable locally
    with pytest.raises(TimeoutError):
        writer.flush(timeout=1)
    assert writer.stats.segments_written == 0
    writer.close(timeout=1)
    (journal,) = (tmp_path / "j").glob("*.journal")
    assert b'"kept"' in journal.read_bytes()

    # a restart while S3 is still down takes events (the journal is there for that) instead of
    # failing to start; the journal left behind waits in the background
    again = SpoolWriter(
        f"s3://{BUCKET}/dead", "web", storage_options=dead, journal_dir=tmp_path / "j"
    )
    again.append([{"messageId": "during", "type": "track", "userId": "u"}])
    assert again.healthy
    again.close(timeout=1)
    assert len(list((tmp_path / "j").glob("*.journal"))) == 2

    # S3 is back: the next start publishes both, each once
    client, prefix, options = s3
    back = SpoolWriter(
        f"s3://{BUCKET}/{prefix}", "web", storage_options=options, journal_dir=tmp_path / "j"
    )
    back.close()
    ids = sorted(
        e["messageId"] for key in objects(client, prefix) for e in read_object(client, key)
    )
    assert ids == ["during", "kept"]
    assert not list((tmp_path / "j").glob("*.journal"))


def test_collect_command_spools_sdk_events_to_s3(s3, tmp_path):
    """The real `signalmail collect` process, configured only through flags and env vars."""
    client, prefix, options = s3
    port = free_port()
    env = {
        **os.environ,
        "SIGNALMAIL_WRITE_KEY": "s3-secret-write-key",
        "SIGNALMAIL_STORAGE_OPTIONS": json.dumps(options),
    }
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("signalmail")),
            "collect",
            "--port",
            str(port),
            "--spool",
            f"s3://{BUCKET}/{prefix}",
            "--journal-dir",
            str(tmp_path / "journal"),
            "--source-id",
            "shop",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: collector_ready(port, "shop") or proc.poll() is not None,
            what="collector start",
        )
        assert proc.poll() is None
        sdk = Client("s3-secret-write-key", host=f"http://127.0.0.1:{port}", sync_mode=True)
        for i in range(5):
            sdk.track(user_id="u1", event="Product Viewed", properties={"i": i})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    (key,) = objects(client, f"{prefix}/rudder-logs/shop/")
    assert [e["properties"]["i"] for e in read_object(client, key)] == [0, 1, 2, 3, 4]
    assert "s3-secret-write-key" not in stderr
