"""The rest of `signalmail demo` after capture: load, model, send, report.

Runs the real thing, never a shortcut: one `meltano --environment demo run` with
tap-rudderstack -> target-duckdb-bulk -> dbt build -> tap-warehouse ->
target-mailchimp-transactional, against a local Mandrill sandbox whose webhooks and the
target's "Email Sent" events go back into a running collector, exactly as in production. Paths
come from the `demo` environment in meltano.yml (everything under data/demo/); Meltano's state
for the demo lives there too, so a fresh demo starts from nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from signalmail.demo import DemoError, free_port, wait_until_ready

#: The pipeline the demo runs, in Meltano's own words.
PIPELINE = (
    "tap-rudderstack",
    "target-duckdb-bulk",
    "dbt-duckdb:build",
    "tap-warehouse",
    "target-mailchimp-transactional",
)


@dataclass
class SandboxProcess:
    """A `signalmail sandbox` child process (Mandrill on 127.0.0.1)."""

    process: subprocess.Popen[bytes]
    url: str
    api_key: str
    log_path: Path

    @property
    def api_host(self) -> str:
        """The API root the mailchimp-transactional client and the target use."""
        return f"{self.url}/api/1.3"

    def call(self, path: str, body: dict | None = None) -> object:
        """POST one Mandrill call through the real client; errors come back as DemoError."""
        import mailchimp_transactional as mailchimp
        from mailchimp_transactional.api_client import ApiClientError

        client = mailchimp.Client(self.api_key)
        client.api_client.host = self.api_host
        group, method = path.split("/")
        try:
            return getattr(getattr(client, group), method.replace("-", "_"))(dict(body or {}))
        except ApiClientError as exc:
            raise DemoError(f"sandbox call {path} failed: {exc.text}") from exc

    def stop(self) -> None:
        """Stop the sandbox and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _sandbox_ready(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/sandbox/health", timeout=1) as answer:  # noqa: S310
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_sandbox(
    data_dir: Path, webhook_url: str, webhook_key: str, timeout: float = 30.0
) -> Iterator[SandboxProcess]:
    """Run `signalmail sandbox` for the block, its webhooks pointed at the demo collector.

    Opens and clicks are simulated at plausible rates so the engagement models have something
    to count. The API key is random per demo and travels in the environment, not argv.
    """
    port = free_port()
    api_key = f"demo-{secrets.token_hex(8)}"
    log_path = data_dir / "sandbox.log"
    command = [
        sys.executable,
        "-c",
        "from signalmail.cli import main; main()",
        "sandbox",
        "--port",
        str(port),
        "--db",
        str(data_dir / "sandbox.sqlite"),
        "--webhook-url",
        webhook_url,
        "--open-rate",
        "0.5",
        "--click-rate",
        "0.4",
        "--seed",
        "42",
    ]
    env = dict(
        os.environ,
        SIGNALMAIL_SANDBOX_API_KEYS=api_key,
        SIGNALMAIL_SANDBOX_WEBHOOK_KEY=webhook_key,
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    sandbox = SandboxProcess(process, f"http://127.0.0.1:{port}", api_key, log_path)
    try:
        wait_until_ready(
            process, lambda: _sandbox_ready(sandbox.url), "Mandrill sandbox", log_path, timeout
        )
        yield sandbox
    finally:
        sandbox.stop()


def publish_starter_templates(project_root: Path, sandbox: SandboxProcess) -> list[str]:
    """Push templates/mandrill/*.html as drafts with `signalmail templates sync`, then publish.

    Publishing is the marketer's step in real life; the demo plays the marketer.
    """
    env = dict(
        os.environ,
        SIGNALMAIL_MANDRILL_API_KEY=sandbox.api_key,
        SIGNALMAIL_MANDRILL_BASE_URL=sandbox.api_host,
    )
    sync = subprocess.run(  # noqa: S603
        [
            sys.executable,
            "-c",
            "from signalmail.cli import main; main()",
            "templates",
            "sync",
            "--dir",
            str(project_root / "templates" / "mandrill"),
            "--campaigns-dir",
            str(project_root / "templates" / "campaigns"),
            "--record",
            str(project_root / "data" / "demo" / "sync-state.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if sync.returncode != 0:
        raise DemoError(f"signalmail templates sync failed:\n{sync.stdout}{sync.stderr}")
    slugs = sorted(path.stem for path in (project_root / "templates" / "mandrill").glob("*.html"))
    for slug in slugs:
        sandbox.call("templates/publish", {"name": slug})
    return slugs


def meltano_executable() -> Path:
    """Find the meltano next to this interpreter (`make install` puts it there)."""
    candidate = Path(sys.executable).parent / "meltano"
    if not candidate.exists():
        raise DemoError("meltano is not installed in this environment; run `make demo`")
    return candidate


def run_pipeline(project_root: Path, env: dict[str, str], log_path: Path) -> float:
    """`meltano --environment demo run <PIPELINE>`; returns its wall time in seconds."""
    command = [str(meltano_executable()), "--environment", "demo", "run", *PIPELINE]
    click.echo(f"\n$ meltano --environment demo run {' '.join(PIPELINE)}")
    began = time.monotonic()
    with log_path.open("wb") as log:
        result = subprocess.run(  # noqa: S603
            command, cwd=project_root, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    elapsed = time.monotonic() - began
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise DemoError(f"meltano run failed (exit {result.returncode}); log {log_path}:\n{tail}")
    return elapsed


def warehouse_report(warehouse: Path, ledger: Path) -> dict[str, object]:
    """Count what landed where: raw rows, due emails by campaign, the ledger's verdicts."""
    import duckdb

    report: dict[str, object] = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = [
            name
            for (name,) in con.execute(
                "select table_name from duckdb_tables() "
                "where schema_name = 'rudderstack_raw' order by table_name"
            ).fetchall()
        ]
        # names come from the catalog, not from input
        report["raw"] = {
            table: con.execute(f'select count(*) from rudderstack_raw."{table}"').fetchone()[0]  # noqa: S608
            for table in tables
        }
        report["triggers"] = con.execute(
            "select campaign, count(*), count(*) filter (where holdout) "
            "from signals.email_triggers group by campaign order by campaign"
        ).fetchall()
        report["signals"] = con.execute(
            "select intent_stage, count(*) from signals.user_signals "
            "group by intent_stage order by 2 desc"
        ).fetchall()
    report["ledger"] = []
    if ledger.exists():
        with duckdb.connect(str(ledger), read_only=True) as con:
            report["ledger"] = con.execute(
                "select campaign, state, count(*) from signalmail_ledger.send_ledger "
                "group by campaign, state order by campaign, state"
            ).fetchall()
    return report


def print_report(report: dict[str, object], sandbox_messages: list[dict]) -> None:
    """Print the pipeline's outcome as a reader of the demo wants it."""
    click.echo("\nwarehouse (rudderstack_raw):")
    for table, count in report["raw"].items():  # type: ignore[union-attr]
        click.echo(f"  {count:>8}  {table}")
    click.echo("\nintent (signals.user_signals):")
    for stage, count in report["signals"]:  # type: ignore[union-attr]
        click.echo(f"  {count:>8}  {stage}")
    click.echo("\ndue emails (signals.email_triggers): campaign, due, held out")
    for campaign, due, held in report["triggers"]:  # type: ignore[union-attr]
        click.echo(f"  {due:>8}  {campaign} ({held} held out)")
    click.echo("\nsend ledger: campaign, state, triggers")
    for campaign, state, count in report["ledger"]:  # type: ignore[union-attr]
        click.echo(f"  {count:>8}  {campaign}: {state}")
    click.echo(f"\nmessages in the Mandrill sandbox: {len(sandbox_messages)}")
    for message in sandbox_messages[:5]:
        click.echo(f"  {message.get('email')}: {message.get('subject')} [{message.get('state')}]")


def activate(project_root: Path, collector_url: str, write_key: str, webhook_key: str) -> None:
    """Load, model and send with the collector still up for webhooks and Email Sent events."""
    data_dir = project_root / "data" / "demo"
    with running_sandbox(data_dir, f"{collector_url}/webhooks/mandrill", webhook_key) as sandbox:
        slugs = publish_starter_templates(project_root, sandbox)
        click.echo(f"sandbox up at {sandbox.url}; published templates: {', '.join(slugs)}")
        env = dict(
            os.environ,
            MELTANO_STATE_BACKEND_URI=(data_dir / "state").resolve().as_uri(),
            SIGNALMAIL_MANDRILL_BASE_URL=sandbox.api_host,
            TARGET_MAILCHIMP_TRANSACTIONAL_API_KEY=sandbox.api_key,
            TARGET_MAILCHIMP_TRANSACTIONAL_DATA_PLANE_URL=collector_url,
            TARGET_MAILCHIMP_TRANSACTIONAL_WRITE_KEY=write_key,
            MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        )
        elapsed = run_pipeline(project_root, env, data_dir / "meltano.log")
        click.echo(f"pipeline finished in {elapsed:.1f}s (log data/demo/meltano.log)")
        found = sandbox.call(
            "messages/search", {"query": "*", "limit": 1000, "date_from": "2000-01-01"}
        )
        messages = found if isinstance(found, list) else []
    report = warehouse_report(data_dir / "warehouse.duckdb", data_dir / "ledger.duckdb")
    print_report(report, messages)
    sent = sum(count for _, state, count in report["ledger"] if state in {"sent", "queued"})  # type: ignore[union-attr]
    if not report["triggers"]:
        raise DemoError("dbt produced no due emails; the demo data should always yield some")
    if sent != len(messages):
        raise DemoError(f"the ledger says {sent} sent but the sandbox holds {len(messages)}")
    click.echo(
        "\nnext: `signalmail templates preview --sqlalchemy-url "
        "duckdb:///data/demo/warehouse.duckdb --schema signals` renders the emails to HTML; "
        "`json` reports: " + json.dumps({"sent": sent})
    )
