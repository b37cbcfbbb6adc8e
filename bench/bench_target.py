"""Recipients per second into the sandbox with 50 ms added per call: batched vs one per call.

    python -m bench.bench_target                      # 10k batched, 200 naive, memory to 100k
    python -m bench.bench_target --batched 2000 --naive 100 --memory 20000   # quicker

The sandbox runs as its own process (`signalmail sandbox --latency-ms 50`), so it does not
share the target's interpreter. Both modes run the real target (singer-sdk reader, ledger on
DuckDB, real mailchimp-transactional client) in this process, one after the other:

- batched: the target as built (`max_recipients_per_call`, `concurrency`);
- naive: `max_recipients_per_call=1, concurrency=1`: one send-template call per recipient.

Memory: a separate run streams `--memory` triggers through the target from a generator (never
a list), printing the process RSS after 10,000 triggers and at the end: flat means the second
figure is close to the first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from target_mailchimp_transactional.target import TargetMailchimpTransactional

from tests.helpers.mailchimp_target import (
    API_KEY,
    SCHEMA,
    SLUGS,
    TEMPLATE_HTML,
    target_config,
    trigger,
)

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """Resident set size of this process now (not the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_input(path: Path, n: int, prefix: str) -> Path:
    """Singer lines for n triggers, written ahead (the tap is another process in production)."""
    with path.open("w") as out:
        out.write(json.dumps(SCHEMA) + "\n")
        for i in range(n):
            row = trigger(f"{prefix}{i}", "browse_abandonment", email=f"{prefix}{i}@example.com")
            out.write(json.dumps({"type": "RECORD", "stream": "email_triggers", "record": row}))
            out.write("\n")
    return path


class LineStream:
    """Streams a Singer input file line by line, noting RSS at the given line numbers."""

    def __init__(self, path: Path, marks: dict[int, list[float]] | None = None) -> None:
        self.path, self.marks = path, marks or {}
        self.it = self._lines()

    def _lines(self) -> Iterator[str]:
        with self.path.open() as lines:
            for n, line in enumerate(lines):
                if n in self.marks:
                    self.marks[n].append(rss_mb())
                yield line

    def __iter__(self) -> Iterator[str]:
        return self.it

    def readline(self) -> str:
        return next(self.it, "")


class Sandbox:
    """`signalmail sandbox` in a subprocess with 50 ms latency on every call."""

    def __init__(self, workdir: Path, latency_ms: int) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        exe = Path(sys.executable).with_name("signalmail")
        self.proc = subprocess.Popen(
            [str(exe), "sandbox", "--port", str(self.port), "--db", str(workdir / "sb.sqlite3"),
             "--api-key", API_KEY, "--search-calls-per-minute", "0",
             "--latency-ms", str(latency_ms)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.api_host = f"http://127.0.0.1:{self.port}/api/1.3"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.call("users/ping", {})
                break
            except OSError:
                time.sleep(0.1)  # readiness polling
        else:
            raise RuntimeError("sandbox did not start")

    def call(self, path: str, body: dict) -> object:
        req = urllib.request.Request(
            f"{self.api_host}/{path}.json", data=json.dumps({"key": API_KEY, **body}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as res:
            return json.loads(res.read() or b"null")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def run(cfg: dict, n: int, prefix: str, marks: dict[int, list[float]] | None = None) -> float:
    path = write_input(Path(cfg["outbox_dir"]) / f"{prefix}.jsonl", n, prefix)
    target = TargetMailchimpTransactional(config=cfg, validate_config=True)
    start = time.perf_counter()
    target.listen(LineStream(path, marks))
    elapsed = time.perf_counter() - start
    sent = target.dispatcher.stats.counts
    accepted = sent["sent"] + sent["queued"]
    if accepted != n:
        raise SystemExit(f"{prefix}: only {accepted} of {n} accepted: {dict(sent)}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batched", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=200)
    parser.add_argument("--memory", type=int, default=100_000, help="0 skips the memory run")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--per-call", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--memory-ledger-url",
        default=None,
        help="ledger for the memory run (default: a fresh DuckDB file; a PostgreSQL URL shows "
        "the target's own memory without DuckDB's in-process index)",
    )
    args = parser.parse_args()

    import logging

    logging.disable(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="bench-target-"))
    sandbox = Sandbox(work, args.latency_ms)
    try:
        for slug in SLUGS.values():
            sandbox.call("templates/add", {"name": slug, "from_email": "hello@shop.example.com",
                                           "code": TEMPLATE_HTML, "publish": True})  # fmt: skip

        class _SB:
            api_host = sandbox.api_host

        def cfg(name: str, **over: object) -> dict:
            return target_config(_SB, work, ledger_url=f"duckdb:///{work / name}.duckdb",
                                 timeout=60, outbox_dir=str(work), **over)  # fmt: skip

        batched_cfg = cfg("batched", max_recipients_per_call=args.per_call,
                          concurrency=args.concurrency)  # fmt: skip
        t_batched = run(batched_cfg, args.batched, "b")
        t_naive = run(cfg("naive", max_recipients_per_call=1, concurrency=1), args.naive, "n")
        batched_rate, naive_rate = args.batched / t_batched, args.naive / t_naive
        print(f"sandbox latency per call: {args.latency_ms} ms")
        print(f"batched: {args.batched} recipients in {t_batched:.2f} s = "
              f"{batched_rate:,.0f} recipients/s (per call {args.per_call}, "
              f"concurrency {args.concurrency})")  # fmt: skip
        print(f"naive:   {args.naive} recipients in {t_naive:.2f} s = "
              f"{naive_rate:,.1f} recipients/s "
              "(one call per recipient)")  # fmt: skip
        print(f"ratio batched/naive: {batched_rate / naive_rate:,.1f}x "
              f"(goal >= 50x, >= 1,000 recipients/s)")  # fmt: skip

        if args.memory:
            marks: dict[int, list[float]] = {10_000: [], args.memory: []}  # line 0 is SCHEMA
            before = rss_mb()
            ledger_url = args.memory_ledger_url or f"duckdb:///{work / 'memory'}.duckdb"
            extra = {"ledger_url": ledger_url}
            if args.memory_ledger_url:
                extra["ledger_schema"] = f"bench_{os.getpid()}"
            try:
                t_mem = run(batched_cfg | extra, args.memory, "m", marks)
            finally:
                if args.memory_ledger_url:
                    import sqlalchemy as sa

                    engine = sa.create_engine(args.memory_ledger_url)
                    with engine.begin() as conn:
                        conn.execute(
                            sa.text(f"drop schema if exists {extra['ledger_schema']} cascade")
                        )
                    engine.dispose()
            after = rss_mb()
            kind = ledger_url.split(":")[0]
            print(f"memory ({kind} ledger): RSS {before:.0f} MB before, "
                  f"{marks[10_000][0]:.0f} MB at 10,000 "
                  f"triggers, {marks[args.memory][0]:.0f} MB at {args.memory:,}, "
                  f"{after:.0f} MB after ({args.memory / t_mem:,.0f} recipients/s)")  # fmt: skip
    finally:
        sandbox.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"pid {os.getpid()} done")


if __name__ == "__main__":
    main()
