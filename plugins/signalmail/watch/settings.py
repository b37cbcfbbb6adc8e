"""What `signalmail watch` needs to know, and the plugin configurations it derives from it.

Every setting a user gives has one environment variable, the same one `meltano.yml`, dbt's
`profiles.yml` and the collector read (docs/watch.md lists them). From those few values this
module builds the configuration of each Singer plugin the watch runs in-process, with the same
values the Meltano project gives them, so that `meltano run cycle` and `signalmail watch` load,
model and send alike (a test compares the two).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: Engines the watch runs against, as `SIGNALMAIL_DBT_TARGET` names them.
ENGINES = ("duckdb", "postgres")
RAW_SCHEMA = "rudderstack_raw"
LEDGER_SCHEMA = "signalmail_ledger"
#: where `signalmail intent train` writes purchase_scores (dbt reads it as var intent_schema)
INTENT_SCHEMA = "signalmail_intent"
DEFAULT_MANDRILL_URL = "https://mandrillapp.com/api/1.3"


class SettingsError(ValueError):
    """A setting is missing or contradicts another; the message names the variable to set."""


def sqlalchemy_postgres_url(url: str) -> str:
    """Return the warehouse URL with psycopg 3 as its driver (every plugin venv has it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        raise SettingsError(
            f"SIGNALMAIL_PG_URL must be a postgresql:// URL, not {parts.scheme or 'a path'}://..."
        )
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def redact_url(url: str) -> str:
    """Return the URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


#: tap-rudderstack's settings for reaching an S3 spool (its TAP_RUDDERSTACK_<NAME> variables)
SPOOL_ACCESS_SETTINGS = (
    "endpoint_url",
    "region",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
)

#: Records one capture reads at most (five of its 200,000-record batches)
CAPTURE_MAX_RECORDS = 1_000_000


@dataclass(frozen=True)
class WatchSettings:
    """Settings of one watch process (defaults are the Meltano project's `dev` environment)."""

    project_root: Path
    engine: str = "duckdb"
    spool: str = "data/spool"
    #: tap-rudderstack's logs_folder: the top folder under the spool root (RudderStack's
    #: destination may rename rudder-logs); the tap, forget and retention all read it
    logs_folder: str = "rudder-logs"
    #: tap-rudderstack's S3 settings (endpoint_url, region, aws_*), from Meltano's variables
    #: for them: the watch's own tap and its retention read the spool with them
    spool_access: dict[str, str] = field(default_factory=dict, repr=False)
    duckdb_path: Path = Path("data/warehouse.duckdb")
    ledger_path: Path = Path("data/ledger.duckdb")
    pg_url: str | None = field(default=None, repr=False)
    dbt_schema: str = "signals"
    mandrill_api_key: str | None = field(default=None, repr=False)
    mandrill_base_url: str = DEFAULT_MANDRILL_URL
    data_plane_url: str | None = None
    write_key: str | None = field(default=None, repr=False)
    state_dir: Path = Path("data/watch")
    dbt_vars: dict[str, Any] = field(default_factory=dict)
    #: the email target's link_domains: links from event data reach an email only on these
    link_domains: tuple[str, ...] = ()
    #: seconds between looks at the spool when the last cycle found nothing
    poll_seconds: float = 0.5
    #: at most this long without a tick: time alone makes triggers due (an idle cart)
    idle_tick_seconds: float = 5.0
    #: DuckDB: fold the write-ahead log into the file once it passes this many MB
    checkpoint_wal_mb: int = 256
    #: tap-rudderstack's late_file_window_minutes: how late a segment may be published
    late_file_minutes: int = 10
    #: the ticks' lookback (dbt var lookback_minutes), widened for a tick after late events
    lookback_seconds: float = 10.0
    #: UTC time of day of the nightly build (recommendations, every test); None: never
    nightly_at: dt.time | None = dt.time(3, 0)
    #: the email target's reconcile_grace_seconds (None: its default, 600)
    reconcile_grace_seconds: int | None = None
    #: seconds the email target waits for one Mandrill answer (None: its default, 30)
    mandrill_timeout: float | None = None
    #: the email target's concurrency: send calls in flight at once (None: its default, 4)
    send_concurrency: int | None = None
    #: keep raw events this many days (spool and event tables), applied after each nightly
    #: build; None: forever (signalmail.privacy.retention)
    retention_days: float | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise SettingsError(
                f"engine {self.engine!r} is not one of {', '.join(ENGINES)} (SIGNALMAIL_DBT_TARGET)"
            )
        if self.send_concurrency is not None and self.send_concurrency < 1:
            raise SettingsError("SIGNALMAIL_SEND_CONCURRENCY must be at least 1")
        if self.retention_days is not None and self.retention_days <= 0:
            raise SettingsError("SIGNALMAIL_RETENTION_DAYS must be a positive number of days")
        if self.engine == "postgres" and not self.pg_url:
            raise SettingsError("the postgres engine needs SIGNALMAIL_PG_URL")
        if self.engine == "postgres":
            sqlalchemy_postgres_url(self.pg_url or "")  # fails early on a malformed URL

    # -- paths ------------------------------------------------------------------------------

    def path(self, value: str | Path) -> Path:
        """Resolve a setting's path: relative to the project root unless absolute."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.project_root / path

    @property
    def spool_location(self) -> str:
        """The spool as the tap reads it: an object-store URL as is, a folder made absolute."""
        return self.spool if "://" in self.spool else str(self.path(self.spool))

    @property
    def dbt_project_dir(self) -> Path:
        """The dbt project shipped in the Meltano project."""
        return self.project_root / "dbt_project"

    @property
    def state_path(self) -> Path:
        """Bookmarks of the watch's taps (data/watch/state.json by default)."""
        return self.path(self.state_dir) / "state.json"

    @property
    def batches_dir(self) -> Path:
        """The BATCH files between tap-rudderstack and the loader: the watch's own folder."""
        return self.path(self.state_dir) / "batches"

    # -- plugin configurations -------------------------------------------------------------

    def tap_rudderstack_config(self) -> dict[str, Any]:
        """tap-rudderstack as meltano.yml configures it in `dev` and `prod`.

        BATCH files, which both bulk loaders read without parsing a Singer message per row,
        then delete.
        """
        batches = self.batches_dir
        return {
            **self.spool_access,
            "source": self.spool_location,
            "logs_folder": self.logs_folder,
            "late_file_window_minutes": self.late_file_minutes,
            # a catch-up (a day's outage, a first start on a long history) is loaded in steps, so
            # that a stop waits for one step, not for the whole backlog; the tick waits for the
            # last one (signalmail.watch.loop: no rule may see part of a backlog)
            "max_records_per_sync": CAPTURE_MAX_RECORDS,
            "batch_config": {
                "encoding": {"format": "jsonl", "compression": "none"},
                "storage": {"root": batches.as_uri()},
                "batch_size": 200_000,
            },
        }

    def loader_config(self) -> dict[str, Any]:
        """target-duckdb-bulk (dev) or target-postgres-bulk (prod), as the Meltano jobs load."""
        if self.engine == "duckdb":
            return {
                "filepath": str(self.path(self.duckdb_path)),
                "default_target_schema": RAW_SCHEMA,
                "delete_batch_files": True,
                # the watch keeps the database open across cycles and checkpoints it itself
                "checkpoint_at_end": False,
            }
        return {
            "sqlalchemy_url": sqlalchemy_postgres_url(self.pg_url or ""),
            "default_target_schema": RAW_SCHEMA,
            "delete_batch_files": True,
            "sanitize_null_text_characters": True,
            "validate_records": False,
            "add_record_metadata": False,
        }

    def warehouse_url(self) -> str:
        """SQLAlchemy URL of the warehouse (the marts tap-warehouse reads)."""
        if self.engine == "duckdb":
            return f"duckdb:///{self.path(self.duckdb_path)}"
        return sqlalchemy_postgres_url(self.pg_url or "")

    def warehouse_engine(self) -> Any:
        """Build a SQLAlchemy engine on the warehouse that also works inside the watch.

        DuckDB hands a second `connect()` in one process the database that is already open only
        when the configuration matches, and duckdb-engine's own connect differs: tap-warehouse's
        `shared_duckdb_connection` connects as the watch did. Outside a watch it simply opens
        the file.
        """
        import functools

        import sqlalchemy as sa

        if self.engine != "duckdb":
            return sa.create_engine(self.warehouse_url(), poolclass=sa.pool.NullPool)
        from tap_warehouse import shared_duckdb_connection

        connect = functools.partial(shared_duckdb_connection, str(self.path(self.duckdb_path)))
        return sa.create_engine("duckdb://", creator=connect, poolclass=sa.pool.NullPool)

    def tap_warehouse_config(self) -> dict[str, Any]:
        """tap-warehouse reading email_triggers, sharing the watch's open DuckDB database."""
        return {
            "sqlalchemy_url": self.warehouse_url(),
            "schema": self.dbt_schema,
            "tables": ["email_triggers"],
            # one process holds the DuckDB file read-write for dbt and the loader
            "duckdb_read_only": False,
        }

    def ledger_url(self) -> str:
        """Locate the send ledger: its own DuckDB file, or the Postgres warehouse itself."""
        if self.engine == "duckdb":
            return f"duckdb:///{self.path(self.ledger_path)}"
        return sqlalchemy_postgres_url(self.pg_url or "")

    def target_config(self) -> dict[str, Any]:
        """target-mailchimp-transactional as meltano.yml configures it."""
        if not self.mandrill_api_key:
            raise SettingsError(
                "no Mandrill API key: set SIGNALMAIL_MANDRILL_API_KEY (the watch sends email)"
            )
        config: dict[str, Any] = {
            "api_key": self.mandrill_api_key,
            "base_url": self.mandrill_base_url,
            "campaigns_dir": str(self.project_root / "templates" / "campaigns"),
            "blocks_dir": str(self.project_root / "templates" / "blocks"),
            "ledger_url": self.ledger_url(),
            "ledger_schema": LEDGER_SCHEMA,
        }
        if self.reconcile_grace_seconds is not None:
            config["reconcile_grace_seconds"] = self.reconcile_grace_seconds
        if self.mandrill_timeout is not None:
            config["timeout"] = self.mandrill_timeout
        if self.send_concurrency is not None:
            config["concurrency"] = self.send_concurrency
        if self.link_domains:
            config["link_domains"] = list(self.link_domains)
        if self.data_plane_url:
            if not self.write_key:
                raise SettingsError(
                    "SIGNALMAIL_DATA_PLANE_URL is set but SIGNALMAIL_WRITE_KEY is not "
                    "(Email Sent events need the source's write key)"
                )
            config["data_plane_url"] = self.data_plane_url
            config["write_key"] = self.write_key
        return config

    def watch_dbt_vars(self) -> dict[str, Any]:
        """Give the vars of the watch's ticks: its lookback, then the user's --vars."""
        return {"lookback_minutes": self.lookback_seconds / 60, **self.dbt_vars}

    def dbt_env(self) -> dict[str, str]:
        """Give what dbt's profiles.yml reads, plus where dbt may write its files."""
        dbt_dir = self.path(self.state_dir) / "dbt"
        env = {
            "SIGNALMAIL_DBT_TARGET": self.engine,
            "SIGNALMAIL_DBT_SCHEMA": self.dbt_schema,
            "DBT_TARGET_PATH": str(dbt_dir / "target"),
            "DBT_LOG_PATH": str(dbt_dir / "logs"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        if self.engine == "duckdb":
            env["SIGNALMAIL_DUCKDB_PATH"] = str(self.path(self.duckdb_path))
            env["SIGNALMAIL_LEDGER_PATH"] = str(self.path(self.ledger_path))
        else:
            env["SIGNALMAIL_PG_URL"] = self.pg_url or ""
        return env

    def describe(self) -> str:
        """One line for the start of the log: where everything is (no secrets)."""
        warehouse = (
            str(self.path(self.duckdb_path))
            if self.engine == "duckdb"
            else redact_url(self.pg_url or "")
        )
        return (
            f"engine={self.engine} spool={self.spool_location} warehouse={warehouse} "
            f"mandrill={self.mandrill_base_url} state={self.state_path}"
        )


def domain_list(text: str) -> tuple[str, ...]:
    """Read an array setting as Meltano passes it (a JSON array), or a comma-separated list."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            raise SettingsError(f"not a JSON array of domains: {text!r}") from None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise SettingsError(f"not a JSON array of domains: {text!r}")
    else:
        items = text.split(",")
    return tuple(item.strip() for item in items if item.strip())


def from_environment(project_root: Path, **overrides: Any) -> WatchSettings:
    """Read the documented environment variables; `overrides` (CLI options) win."""
    env = os.environ
    values: dict[str, Any] = {
        "engine": env.get("SIGNALMAIL_DBT_TARGET", "duckdb"),
        "spool": env.get("SIGNALMAIL_SPOOL", "data/spool"),
        # Meltano's own variable for the tap's setting, which it reads over meltano.yml
        "logs_folder": env.get("TAP_RUDDERSTACK_LOGS_FOLDER") or "rudder-logs",
        "spool_access": {
            setting: env[f"TAP_RUDDERSTACK_{setting.upper()}"]
            for setting in SPOOL_ACCESS_SETTINGS
            if env.get(f"TAP_RUDDERSTACK_{setting.upper()}")
        },
        "link_domains": domain_list(env.get("TARGET_MAILCHIMP_TRANSACTIONAL_LINK_DOMAINS", "")),
        "duckdb_path": Path(env.get("SIGNALMAIL_DUCKDB_PATH", "data/warehouse.duckdb")),
        "ledger_path": Path(env.get("SIGNALMAIL_LEDGER_PATH", "data/ledger.duckdb")),
        "pg_url": env.get("SIGNALMAIL_PG_URL") or None,
        "dbt_schema": env.get("SIGNALMAIL_DBT_SCHEMA", "signals"),
        "mandrill_api_key": env.get("SIGNALMAIL_MANDRILL_API_KEY") or None,
        "mandrill_base_url": env.get("SIGNALMAIL_MANDRILL_BASE_URL") or DEFAULT_MANDRILL_URL,
        "data_plane_url": env.get("SIGNALMAIL_DATA_PLANE_URL") or None,
        "write_key": env.get("SIGNALMAIL_WRITE_KEY") or None,
    }
    for name, key, kind, unit in (
        ("SIGNALMAIL_RECONCILE_GRACE_SECONDS", "reconcile_grace_seconds", int, "whole seconds"),
        ("SIGNALMAIL_MANDRILL_TIMEOUT", "mandrill_timeout", float, "seconds"),
        ("SIGNALMAIL_SEND_CONCURRENCY", "send_concurrency", int, "a whole number of calls"),
        ("SIGNALMAIL_RETENTION_DAYS", "retention_days", float, "a number of days"),
    ):
        text = env.get(name)
        if text:
            try:
                values[key] = kind(text)
            except ValueError:
                raise SettingsError(f"{name} must be {unit}, not {text!r}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return WatchSettings(project_root=project_root, **values)
