"""tap-rudderstack against a real S3 API: moto's server on 127.0.0.1, spoken to by s3fs/botocore.

Nothing is mocked inside the process: the tap sends HTTP requests to the server exactly as it
would to AWS or MinIO (endpoint_url, key id, secret, region settings).
"""

from __future__ import annotations

import pytest
from tap_rudderstack.spool import SpoolError

from tests.helpers.meltano import meltano_run
from tests.helpers.servers import S3_KEY_ID, S3_REGION, S3_SECRET, s3_client
from tests.helpers.spool import (
    event,
    ids,
    last_state,
    records,
    run_tap,
    ts_of,
    write_segment,
)

BUCKET = "events-bucket"


@pytest.fixture
def s3(s3_endpoint, tmp_path):
    """A fresh bucket and a helper that uploads spool files written locally under `prefix`."""
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    local = tmp_path / "local"

    def upload(ts: int, lines: list, **kwargs) -> str:
        path = write_segment(local, ts, lines, **kwargs)
        key = "dumps/" + str(path.relative_to(local))
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
        return key

    yield client, upload
    listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    for item in listed:
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def s3_config(endpoint: str, **extra) -> dict:
    return {
        "source": f"s3://{BUCKET}/dumps",
        "aws_access_key_id": S3_KEY_ID,
        "aws_secret_access_key": S3_SECRET,
        "endpoint_url": endpoint,
        "region": S3_REGION,
        **extra,
    }


def test_reads_the_spool_from_s3_and_ignores_non_layout_keys(s3, s3_endpoint):
    client, upload = s3
    key = upload(ts_of(0), [event("track", 1), event("identify", 2), "{bad"])
    upload(ts_of(60), [event("page", 3)], us_date=True)
    # In-flight or foreign objects next to the real ones.
    client.put_object(Bucket=BUCKET, Key=key + ".partial", Body=b"x")
    client.put_object(Bucket=BUCKET, Key=key.rsplit("/", 1)[0] + "/.hidden.json.gz", Body=b"x")
    client.put_object(Bucket=BUCKET, Key="dumps/rudder-logs/src1/README", Body=b"x")

    messages = run_tap(s3_config(s3_endpoint))
    assert sorted(ids(messages)) == sorted(
        [
            "m-track-1",
            "m-identify-2",
            "m-page-3",
            records(messages, "rejected_events")[0]["rejected_id"],
        ]
    )
    (rejected,) = records(messages, "rejected_events")
    assert rejected["source_file"] == key.removeprefix("dumps/")
    assert rejected["line_number"] == 3


def test_s3_resume_and_late_object(s3, s3_endpoint):
    _client, upload = s3
    upload(ts_of(600), [event("track", n) for n in range(50)])
    config = s3_config(s3_endpoint, state_every_records=20)
    first = run_tap(config)
    mid_state = [m["value"] for m in first if m["type"] == "STATE"][1]
    assert ids(run_tap(config, state=mid_state)) == [f"m-track-{n}" for n in range(40, 50)]

    upload(ts_of(60), [event("track", 99)])  # late: opened before the object already read
    assert ids(run_tap(config, state=last_state(first))) == ["m-track-99"]


def test_missing_prefix_is_a_clear_error(s3, s3_endpoint):
    config = s3_config(s3_endpoint)
    config["source"] = f"s3://{BUCKET}/no-such-prefix"
    with pytest.raises(SpoolError, match="no rudder-logs/ folder"):
        run_tap(config)


@pytest.mark.slow
def test_meltano_run_reads_s3_into_duckdb(s3, s3_endpoint, tmp_path, meltano_installed):
    """The Meltano venv of the tap can reach S3 (s3fs comes with its pip_url) end to end."""
    import duckdb

    _client, upload = s3
    upload(ts_of(0), [event("track", n) for n in range(20)] + ["{bad"])
    env = {
        "TAP_RUDDERSTACK_SOURCE": f"s3://{BUCKET}/dumps",
        "TAP_RUDDERSTACK_AWS_ACCESS_KEY_ID": S3_KEY_ID,
        "TAP_RUDDERSTACK_AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "TAP_RUDDERSTACK_ENDPOINT_URL": s3_endpoint,
        "TAP_RUDDERSTACK_REGION": S3_REGION,
        "TARGET_DUCKDB_JWILLS_FILEPATH": str(tmp_path / "warehouse.duckdb"),
    }
    done = meltano_run(tmp_path, env, "tap-rudderstack", "target-duckdb-jwills")
    assert done.returncode == 0, done.stderr[-3000:]
    assert S3_SECRET not in done.stdout + done.stderr  # the secret is never logged
    con = duckdb.connect(env["TARGET_DUCKDB_JWILLS_FILEPATH"], read_only=True)
    try:
        loaded = con.execute("select message_id from rudderstack_raw.tracks").fetchall()
        rejected = con.execute("select reason from rudderstack_raw.rejected_events").fetchall()
    finally:
        con.close()
    assert sorted(row[0] for row in loaded) == sorted(f"m-track-{n}" for n in range(20))
    assert rejected == [("invalid_json",)]


def test_batch_files_go_to_an_s3_root_with_the_storage_params_and_only_whole(
    s3, s3_endpoint, monkeypatch
):
    """BATCH files on an object store: the tap writes them with batch_config.storage.params
    (the credentials and endpoint, as the SDK passes them to fsspec), and an object appears
    only once its file is complete: a sync that fails mid-batch publishes nothing."""
    import gzip

    from tap_rudderstack.records import EventBuilder

    client, upload = s3
    upload(ts_of(0), [event("track", n) for n in range(7)])
    # no credentials in the environment: only the params can reach the bucket
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("tap_rudderstack.sync._Batches.CHUNK", 2)
    config = s3_config(
        s3_endpoint,
        batch_config={
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {
                "root": f"s3://{BUCKET}/batches",
                "params": {
                    "key": S3_KEY_ID,
                    "secret": S3_SECRET,
                    "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": S3_REGION},
                },
            },
            "batch_size": 5,
        },
    )
    messages = run_tap(config)
    urls = [url for m in messages if m["type"] == "BATCH" for url in m["manifest"]]
    got = []
    for url in urls:
        key = url.removeprefix(f"s3://{BUCKET}/")
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        got += [line for line in gzip.decompress(body).splitlines() if line]
    assert len(got) == 7

    def batch_keys() -> set[str]:
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix="batches/").get("Contents", [])
        return {item["Key"] for item in listed}

    before = batch_keys()
    build = EventBuilder.build
    calls = {"n": 0}

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # two chunks written into the open file, none closed
            raise RuntimeError("the builder broke")
        return build(self, *args)

    monkeypatch.setattr(EventBuilder, "build", failing)
    with pytest.raises(RuntimeError, match="the builder broke"):
        run_tap(config)
    assert batch_keys() == before
