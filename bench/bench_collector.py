"""Collector ingest rate (acknowledged = durable) against this machine's raw append+fsync rate.

    python bench/bench_collector.py [--events 100000] [--senders 3] [--drivers sdk,raw]

1. Baseline, same run, same disk: append JSON lines of the same events in batches of `--batch`
   with one fdatasync per batch (the best a collector without group commit could do), and again
   with the collector's observed mean group size (the ceiling for its own fsync pattern).
2. `signalmail collect` runs as a subprocess pinned to CPU 0 (one core). Two drivers, each in
   `--senders` processes pinned to the other CPU(s):
   - `sdk`: rudder-sdk-python in async mode (batches of `--batch`, gzip), the real client;
   - `raw`: pre-built gzip batches of `--batch` events over 8 keep-alive connections per
     process, so the senders cost little and the collector's own one-core limit shows (on a
     2-core machine one core of SDK processes cannot saturate the collector: about 5k events/s
     per SDK process, measured here).
   A sender counts an event as acknowledged only when its request got 200. Events/s =
   acknowledged events / wall time from the first send to the last acknowledgement. The
   collector's CPU seconds give events per collector CPU-second: its one-core capacity even
   when the senders, sharing too few cores, cannot saturate it.
3. Checks that the collector fsync'd at least what it acknowledged, and after a clean stop that
   every acknowledged messageId is in the published segments.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

WRITE_KEY = "bench-write-key"


def sample_event(i: int, message_id: str | None = None) -> dict:
    return {
        "type": "track",
        "event": "Product Viewed",
        "userId": f"user-{i % 5000}",
        "anonymousId": None,
        "messageId": message_id or str(uuid.uuid4()),
        "channel": "server",
        "integrations": {"All": True},
        "properties": {
            "product_id": f"p-{i % 997}",
            "sku": f"SKU-{i % 997}",
            "name": "Trail Running Shoe",
            "brand": "Northwind",
            "category": "Shoes",
            "price": 89.95,
            "currency": "USD",
            "url": f"https://shop.example.com/p/{i % 997}",
        },
        "context": {"library": {"name": "analytics-python", "version": "2.1.9"}},
        "timestamp": "2026-01-01T00:00:00.123456+00:00",
    }


def raw_fsync_rate(directory: Path, events: int, batch: int) -> float:
    """Events/s for append + fdatasync per `batch` events of encoded JSON lines."""
    lines = [json.dumps(sample_event(i)).encode() + b"\n" for i in range(min(events, 10000))]
    path = directory / f"raw-{batch}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    start = time.perf_counter()
    written = 0
    try:
        while written < events:
            n = min(batch, events - written)
            chunk = b"".join(lines[(written + k) % len(lines)] for k in range(n))
            os.write(fd, chunk)
            os.fdatasync(fd)
            written += n
    finally:
        os.close(fd)
        path.unlink()
    return events / (time.perf_counter() - start)


def sdk_sender(port: int, events: int, batch: int, ready, go, out) -> None:
    from rudderstack.analytics.client import Client

    failed: list[int] = []
    client = Client(
        WRITE_KEY,
        host=f"http://127.0.0.1:{port}",
        sync_mode=False,
        upload_size=batch,
        upload_interval=0.05,
        max_queue_size=events + 1,
        on_error=lambda _exc, items: failed.extend([1] * len(items)),
    )
    ids = [str(uuid.uuid4()) for _ in range(events)]
    properties = sample_event(0)["properties"]
    ready.set()
    go.wait()
    start = time.perf_counter()
    for i, message_id in enumerate(ids):
        ok, _ = client.track(
            user_id=f"user-{i % 5000}",
            event="Product Viewed",
            properties=properties,
            message_id=message_id,
        )
        assert ok, "SDK queue full"
    client.flush()
    end = time.perf_counter()
    client.join()
    out.put((events - len(failed), start, end, [] if failed else ids))


def raw_sender(port: int, events: int, batch: int, ready, go, out, connections: int = 8) -> None:
    """Pre-built gzip batches over `connections` keep-alive connections (threads: they mostly
    wait on the collector, so a few per process give it concurrent requests to group)."""
    import threading

    bodies, ids = [], []
    for first in range(0, events, batch):
        chunk = [sample_event(i) for i in range(first, min(first + batch, events))]
        ids.extend(e["messageId"] for e in chunk)
        sent_at = "2026-01-01T00:00:01.000Z"
        body = gzip.compress(json.dumps({"batch": chunk, "sentAt": sent_at}).encode(), 6)
        bodies.append((body, len(chunk)))
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    headers = {
        "Authorization": auth,
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    acked = [0] * connections

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body, count in bodies[n::connections]:
            while True:
                conn.request("POST", "/v1/batch", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 429:  # back off and resend, as the SDK does
                    break
                time.sleep(0.01)
            if response.status == 200:
                acked[n] += count

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(connections)]
    ready.set()
    go.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    end = time.perf_counter()
    total = sum(acked)
    out.put((total, start, end, ids if total == events else []))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return json.load(resp)


def run_phase(name, target, port, pid, events, senders, batch, sender_cpus, base, raw_batch):
    ready_events, procs = [], []
    go, out = mp.Event(), mp.Queue()
    for n in range(senders):
        ready = mp.Event()
        per = events // senders + (1 if n < events % senders else 0)  # exactly `events` in all
        p = mp.Process(target=target, args=(port, per, batch, ready, go, out))
        p.start()
        os.sched_setaffinity(p.pid, {sender_cpus[n % len(sender_cpus)]})
        ready_events.append(ready)
        procs.append(p)
    for ready in ready_events:
        ready.wait(120)
    before, cpu_before = metrics(port), cpu_seconds(pid)
    go.set()
    results = [out.get(timeout=900) for _ in procs]
    after, cpu_used = metrics(port), cpu_seconds(pid) - cpu_before
    for p in procs:
        p.join(60)
    acked = sum(r[0] for r in results)
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    rate = acked / wall
    groups = after["spool"]["groups"] - before["spool"]["groups"]
    durable = after["spool"]["events_written"] - before["spool"]["events_written"]
    segments = after["spool"]["segments_written"] - before["spool"]["segments_written"]
    requests = after["accepted_requests"] - before["accepted_requests"]
    mean_group = durable / max(groups, 1)
    per_cpu = acked / max(cpu_used, 1e-9)
    print(f"[{name}] {acked:,} events acknowledged by {senders} sender processes in {wall:.2f}s")
    print(f"[{name}]   acknowledged+durable rate: {rate:,.0f} events/s")
    print(
        f"[{name}]   collector CPU {cpu_used:.2f}s = {cpu_used / wall:.0%} of its core; "
        f"{per_cpu:,.0f} events per collector CPU-second (one-core capacity)"
    )
    print(
        f"[{name}]   {requests:,} requests, {durable:,} events fsync'd in {groups:,} group "
        f"commits (mean {mean_group:,.0f} events/fsync); {segments} segments published"
    )
    raw_group = raw_fsync_rate(base, min(events, 100_000), max(int(mean_group), 1))
    print(f"[{name}]   raw append+fdatasync at {int(mean_group)} events/fsync: {raw_group:,.0f}/s")
    print(
        f"[{name}]   ratio collector/raw({batch}/fsync) = {rate / raw_batch:.3f}; "
        f"collector/raw({int(mean_group)}/fsync) = {rate / raw_group:.3f}"
    )
    assert durable >= acked, f"acknowledged {acked} but only {durable} fsync'd"
    ids = set()
    for r in results:
        ids.update(r[3])
    return rate, per_cpu, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per driver")
    parser.add_argument("--senders", type=int, default=3, help="sender processes per driver")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--drivers", default="sdk,raw", help="comma list of sdk, raw")
    parser.add_argument("--segment-mb", type=int, default=8, help="collector --max-segment-bytes")
    parser.add_argument("--dir", default=None, help="spool parent directory (default: a temp dir)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-collector-", dir=args.dir))
    cpus = sorted(os.sched_getaffinity(0))
    collector_cpu, sender_cpus = cpus[0], (cpus[1:] or cpus)
    print(f"cpus: collector on {collector_cpu}, senders on {sender_cpus}; spool {base}")
    raw_batch = raw_fsync_rate(base, min(args.events, 50_000), args.batch)
    print(f"baseline raw append+fdatasync, {args.batch} events/fsync: {raw_batch:,.0f} events/s")

    port = free_port()
    spool = base / "spool"
    cmd = [
        str(Path(sys.executable).with_name("signalmail")),
        "collect",
        "--port",
        str(port),
        "--spool",
        str(spool),
        "--log-level",
        "warning",
        # rotate (gzip + rename) several times inside the measurement, as in production
        "--max-segment-bytes",
        str(args.segment_mb * 1024 * 1024),
    ]
    env = {**os.environ, "SIGNALMAIL_WRITE_KEY": WRITE_KEY}
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(collector_cpu), *cmd]
    proc = subprocess.Popen(cmd, env=env)
    drivers = {"sdk": sdk_sender, "raw": raw_sender}
    ids: set[str] = set()
    summary = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                metrics(port)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("collector did not start") from None
                time.sleep(0.05)
        for name in args.drivers.split(","):
            rate, per_cpu, acked_ids = run_phase(
                name,
                drivers[name],
                port,
                proc.pid,
                args.events,
                args.senders,
                args.batch,
                sender_cpus,
                base,
                raw_batch,
            )
            ids |= acked_ids
            summary.append((name, rate, per_cpu))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    if code != 0:
        raise SystemExit(f"collector exited with {code} after SIGTERM (expected a clean 0)")
    found = 0
    for path in (spool / "rudder-logs").rglob("*.json.gz"):
        with gzip.open(path, "rt") as handle:
            for line in handle:
                if json.loads(line)["messageId"] in ids:
                    found += 1
    print(f"after clean stop: {found:,} of {len(ids):,} acknowledged messageIds in segments")
    for name, rate, per_cpu in summary:
        print(
            f"summary [{name}]: {rate:,.0f} events/s acknowledged+durable "
            f"(>= 20,000: {'yes' if rate >= 20_000 else 'no'}); one-core capacity "
            f"{per_cpu:,.0f} events per collector CPU-second "
            f"(>= 20,000: {'yes' if per_cpu >= 20_000 else 'no'}); raw fsync ratio "
            f"{rate / raw_batch:.2f}"
        )
    if os.environ.get("BENCH_KEEP") is None:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
