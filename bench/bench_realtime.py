"""Event-to-Mandrill latency of `signalmail watch` under steady live traffic, against a baseline
of `meltano run cycle` in a loop, measured in the same run.

    python bench/bench_realtime.py                                # 1M history, 200 ev/s, 10 min
    python bench/bench_realtime.py --history-days 2 --minutes 2 --baseline-minutes 2   # a look

For each mode, from scratch:

1. about `--history` events of a simulated shop (`--users` shoppers over `--history-days`) go
   into the spool as a backfill (received when they happened: `simulate --received-at event`);
2. a collector (one-second segments), the Mandrill sandbox and the loop under test start; the
   loop catches up with the history (timed, not part of the figures);
3. the simulator sends live traffic through rudder-sdk-python at `--rate` events a second for
   `--minutes`, new shoppers (another seed) so no cooldown from the history holds them back;
4. the loop winds down, stops, and its send ledger gives every email's latency: from due
   (email_triggers.due_at) to Mandrill's accepted answer.

The loops run with the cart abandonment delay set to 0 and no quiet hours (dbt vars), so a
cart is due when its last event is received; the figures are for cart_abandonment emails due
during the live traffic. Printed per mode: p50/p95/max latency, the same for the shoppers who
were reachable (identified, opted in) before their cart's last event, each step's seconds per
minute of the run (it must not grow), the loop's CPU seconds and peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
SIGNALMAIL = [sys.executable, "-m", "signalmail"]
MELTANO = str(Path(sys.executable).with_name("meltano"))
CAMPAIGN = "cart_abandonment"
VARS = {"cart_abandon_minutes": 0, "quiet_hours_start": 0, "quiet_hours_end": 0}

from signalmail.progress import progress_bar  # noqa: E402
from signalmail.services import (  # noqa: E402
    free_port,
    publish_starter_templates,
    running_collector,
    running_sandbox,
)


def log(text: str) -> None:
    print(f"{dt.datetime.now():%H:%M:%S} {text}", flush=True)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def simulate_history(spool: Path, args: argparse.Namespace) -> int:
    """The history backfill (`simulate --spool --received-at event --compress-time`); its count.

    Run in this process rather than through the CLI, whose output the bench would have to
    capture: a million events take minutes, and the simulator's bar shows them on a terminal
    (it draws nothing elsewhere, so a bench piped to a log stays clean).
    """
    from signalmail.simulate.cli import run
    from signalmail.simulate.model import Simulation, SimulationConfig
    from signalmail.simulate.sinks import SpoolSink

    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=args.history_days)
    config = SimulationConfig(seed=args.seed, users=args.users, days=args.history_days, start=start)
    sink = SpoolSink(str(spool), "history", received_at="event")
    try:
        return run(
            Simulation(config),
            sink,
            compress_time=True,
            rate=None,
            limit=args.history,
            progress=sys.stderr.isatty(),
        )
    finally:
        sink.close()


class Sampler:
    """CPU seconds and peak resident memory of a process tree, sampled every second."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.cpu_start = self._cpu()

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _cpu(self) -> float:
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            rss = 0
            for proc in self._tree():
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += proc.memory_info().rss
            self.peak_rss = max(self.peak_rss, rss)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def finish(self) -> None:
        """Take the CPU figure while the process still runs, and stop sampling."""
        self.cpu_seconds = self._cpu() - self.cpu_start
        self.stop.set()
        self.thread.join()

    def __exit__(self, *exc: object) -> None:
        if not self.stop.is_set():
            self.finish()


def live_traffic(collector, args: argparse.Namespace, minutes: float) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALMAIL_")}
    env["SIGNALMAIL_WRITE_KEY"] = collector.write_key
    events = int(args.rate * minutes * 60)
    proc = subprocess.Popen(
        [
            *SIGNALMAIL, "simulate", "--data-plane-url", collector.url, "--users",
            str(args.users), "--seed", str(args.seed + 1), "--rate", str(args.rate),
            "--limit", str(events), "--json",
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with progress_bar(f"live traffic at {args.rate:g}/s", total=minutes * 60, unit="s") as bar:
        began = time.monotonic()
        while proc.poll() is None:
            time.sleep(1)
            bar.update(min(minutes * 60, time.monotonic() - began))
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"live traffic failed: {out[-2000:]}{err[-2000:]}")


def metric(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


@contextlib.contextmanager
def stack(work: Path, args: argparse.Namespace) -> Iterator[tuple]:
    """Collector and sandbox for one mode."""
    write_key, webhook_key = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    with (
        running_collector(
            work / "spool",
            write_key,
            "shop",
            extra_args=("--max-segment-age", "1"),
            extra_env={"SIGNALMAIL_MANDRILL_WEBHOOK_KEY": webhook_key},
        ) as collector,
        running_sandbox(
            work / "sandbox", f"{collector.url}/webhooks/mandrill", webhook_key
        ) as sandbox,
    ):
        publish_starter_templates(REPO, sandbox.api_key, sandbox.api_host, work / "sync.json")
        yield collector, sandbox


def ledger_latencies(
    ledger: Path, warehouse: Path, since: dt.datetime
) -> tuple[list[float], list[float]]:
    """Latency of every cart email due since `since`; and of those whose shopper was
    reachable (an identify received) before the cart's due time."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        con.execute(f"attach '{ledger}' as ledger_db (read_only)")
        rows = con.execute(
            """
            select epoch(l.sent_at) - epoch(l.due_at),
                (select min(i.received_at) from rudderstack_raw.identifies as i
                 where i.user_id = l.user_id) <= l.due_at
            from ledger_db.signalmail_ledger.send_ledger as l
            where l.campaign = ? and l.state in ('sent', 'queued', 'scheduled')
                and l.due_at >= ? and l.sent_at is not null
            """,
            [CAMPAIGN, since],
        ).fetchall()
    every = [float(seconds) for seconds, _ in rows]
    reachable = [float(seconds) for seconds, known in rows if known]
    return every, reachable


def step_growth(cycles: list[dict], since: dt.datetime) -> dict[str, list[float]]:
    """Median seconds of each step per minute of the live traffic."""
    per_minute: dict[str, dict[int, list[float]]] = {}
    for cycle in cycles:
        at = dt.datetime.fromisoformat(cycle["started_at"])
        if at < since:
            continue
        minute = int((at - since).total_seconds() // 60)
        for step, seconds in cycle["steps"].items():
            per_minute.setdefault(step, {}).setdefault(minute, []).append(seconds)
    return {step: [statistics.median(by[m]) for m in sorted(by)] for step, by in per_minute.items()}


def run_watch_mode(work: Path, args: argparse.Namespace) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log("watch: writing the history into the spool")
    history = simulate_history(work / "spool", args)
    log(f"watch: {history:,} history events in the spool")
    with stack(work, args) as (collector, sandbox):
        port = free_port()
        env = dict(
            os.environ,
            SIGNALMAIL_DBT_TARGET="duckdb",
            SIGNALMAIL_SPOOL=str(work / "spool"),
            SIGNALMAIL_DUCKDB_PATH=str(work / "warehouse.duckdb"),
            SIGNALMAIL_LEDGER_PATH=str(work / "ledger.duckdb"),
            SIGNALMAIL_MANDRILL_API_KEY=sandbox.api_key,
            SIGNALMAIL_MANDRILL_BASE_URL=sandbox.api_host,
            SIGNALMAIL_DATA_PLANE_URL=collector.url,
            SIGNALMAIL_WRITE_KEY=collector.write_key,
        )
        summary = work / "summary.json"
        with (work / "watch.out").open("w") as out:
            watch = subprocess.Popen(
                [
                    *SIGNALMAIL, "watch", "--project-root", str(REPO), "--state-dir",
                    str(work / "state"), "--view", "lines", "--nightly-at", "never",
                    "--metrics-port", str(port), "--vars", json.dumps(VARS),
                    "--summary-json", str(summary),
                ],
                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        began = time.monotonic()
        while metric(port, "signalmail_watch_cycles_total") < 2:
            if watch.poll() is not None:
                raise RuntimeError(f"watch exited {watch.returncode}: see {work / 'watch.out'}")
            time.sleep(1)
        catch_up = time.monotonic() - began
        log(f"watch: caught up with the history in {catch_up:.0f}s")
        live_from = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with Sampler(watch.pid) as sampler:
            live_traffic(collector, args, args.minutes)
            time.sleep(args.wind_down)
            sampler.finish()
            watch.send_signal(signal.SIGTERM)
            watch.wait(timeout=600)
    every, reachable = ledger_latencies(
        work / "ledger.duckdb", work / "warehouse.duckdb", live_from
    )
    cycles = json.loads(summary.read_text())["cycles"]
    return {
        "mode": "signalmail watch",
        "history": history,
        "catch_up_s": catch_up,
        "latency": every,
        "reachable": reachable,
        "steps": step_growth(cycles, live_from),
        "cpu_s": sampler.cpu_seconds,
        "peak_rss_mb": sampler.peak_rss / 1e6,
        "minutes": args.minutes,
    }


def baseline_project(work: Path) -> Path:
    """A copy of the Meltano project whose dev paths land in `work` and whose dbt vars are
    the bench's (the same as the watch's --vars)."""
    project = work / "project"
    project.mkdir(parents=True)
    shutil.copy(REPO / "meltano.yml", project / "meltano.yml")
    for name in ("templates", "pyproject.toml"):
        (project / name).symlink_to(REPO / name)
    shutil.copytree(
        REPO / "dbt_project",
        project / "dbt_project",
        ignore=shutil.ignore_patterns("target", "logs"),
    )
    config_path = project / "dbt_project" / "dbt_project.yml"
    config = yaml.safe_load(config_path.read_text())
    config["vars"].update(VARS)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    sys_dir = work / "meltano-sys"
    sys_dir.mkdir()
    for kind in ("extractors", "loaders", "utilities"):
        (sys_dir / kind).symlink_to(REPO / ".meltano" / kind)
    return project


def meltano_cycle(project: Path, env: dict[str, str], failures: list[str] | None = None) -> float:
    """One `meltano run cycle`; its seconds. A failure raises unless `failures` collects it (a
    scheduler runs the next cycle anyway: the loop goes on, the bench reports the count)."""
    began = time.monotonic()
    done = subprocess.run(
        [MELTANO, "--cwd", str(project), "run", "cycle"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        if failures is None:
            raise RuntimeError(f"meltano run cycle failed:\n{done.stderr[-3000:]}")
        errors = [line for line in done.stderr.splitlines() if "Error" in line]
        failures.append(errors[-1].strip() if errors else f"exit {done.returncode}")
        log(f"baseline: a cycle failed: {failures[-1][-300:]}")
    return time.monotonic() - began


def run_baseline_mode(work: Path, args: argparse.Namespace) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    project = baseline_project(work)
    data = project / "data"
    log("baseline: writing the history into the spool")
    history = simulate_history(data / "spool", args)
    with stack(data, args) as (collector, sandbox):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALMAIL_")}
        env.update(
            MELTANO_SYS_DIR_ROOT=str(work / "meltano-sys"),
            MELTANO_STATE_BACKEND_URI=f"file://{work}/state",
            MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
            SIGNALMAIL_MANDRILL_API_KEY=sandbox.api_key,
            SIGNALMAIL_MANDRILL_BASE_URL=sandbox.api_host,
            SIGNALMAIL_DATA_PLANE_URL=collector.url,
            SIGNALMAIL_WRITE_KEY=collector.write_key,
        )
        catch_up = meltano_cycle(project, env) + meltano_cycle(project, env)
        log(f"baseline: caught up with the history in {catch_up:.0f}s")
        live_from = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        cycles: list[dict] = []
        failures: list[str] = []
        traffic = threading.Thread(
            target=live_traffic, args=(collector, args, args.baseline_minutes)
        )
        traffic.start()
        ends = time.monotonic() + args.baseline_minutes * 60 + args.wind_down
        while time.monotonic() < ends:
            started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            seconds = meltano_cycle(project, env, failures)
            cycles.append({"started_at": started.isoformat(), "steps": {"cycle": seconds}})
        traffic.join()
    every, reachable = ledger_latencies(
        data / "ledger.duckdb", data / "warehouse.duckdb", live_from
    )
    return {
        "mode": "meltano run cycle, in a loop",
        "history": history,
        "catch_up_s": catch_up,
        "latency": every,
        "reachable": reachable,
        "steps": step_growth(cycles, live_from),
        "minutes": args.baseline_minutes,
        "failed_cycles": failures,
    }


def report(result: dict) -> None:
    every, reachable = result["latency"], result["reachable"]
    print(f"\n== {result['mode']} ({result['history']:,} history events, caught up in "
          f"{result['catch_up_s']:.0f}s, {result['minutes']:g} min of live traffic)")  # fmt: skip
    for label, values in (("all cart emails", every), ("shopper reachable before", reachable)):
        print(
            f"  latency, {label}: n={len(values)} p50={percentile(values, 0.5):.1f}s "
            f"p95={percentile(values, 0.95):.1f}s max={max(values, default=math.nan):.1f}s"
        )
    for step, minutes in sorted(result["steps"].items()):
        shown = " ".join(f"{v:.2f}" for v in minutes)
        growth = minutes[-1] / minutes[0] if len(minutes) > 1 and minutes[0] else math.nan
        print(f"  {step:<10} median s per minute: {shown}  (last/first {growth:.2f})")
    for failure in result.get("failed_cycles", []):
        print(f"  a cycle failed: {failure[-300:]}")
    if "cpu_s" in result:
        minutes = result["minutes"] * 60
        print(
            f"  CPU {result['cpu_s']:.0f}s over the traffic "
            f"({result['cpu_s'] / minutes:.2f} cores), peak RSS {result['peak_rss_mb']:.0f} MB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--history-days", type=float, default=21)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--baseline-minutes", type=float, default=10)
    parser.add_argument("--wind-down", type=float, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--skip-watch", action="store_true", help="Run the baseline alone.")
    parser.add_argument("--workdir", default=str(REPO / "bench" / "work" / "realtime"))
    parser.add_argument("--json", help="Also write the raw results here.")
    args = parser.parse_args()
    work = Path(args.workdir)
    results = []
    if not args.skip_watch:
        results.append(run_watch_mode(work / "watch", args))
        report(results[-1])
    if not args.skip_baseline:
        results.append(run_baseline_mode(work / "baseline", args))
        report(results[-1])
    if len(results) == 2:
        watch_p95 = percentile(results[0]["latency"], 0.95)
        base_p95 = percentile(results[1]["latency"], 0.95)
        print(f"\nlatency p95: watch {watch_p95:.1f}s, baseline {base_p95:.1f}s "
              f"(baseline / watch {base_p95 / watch_p95:.1f}x)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
