"""`signalmail forget` and `signalmail retention` on a pipeline the watch ran, DuckDB and Postgres.

Forget: a shopper who got an email asks to be erased. Afterwards no table, ledger row or
spool segment names any of their identifiers, Mandrill refuses their address, the others'
data is intact, and when they come back and abandon a cart, no email goes out while other
shoppers' do. Retention: events older than the limit leave the spool and the event tables.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter

import mailchimp_transactional
import pytest
import requests
import sqlalchemy as sa
from signalmail.collector.readback import read_spool
from signalmail.collector.webhooks import anonymous_id_for

from tests.helpers import REPO_ROOT
from tests.helpers.servers import wait_until
from tests.helpers.watch import (
    EXPECTED,
    run_watch,
    script_first_day,
    services,
    write_late_cart,
)

pytestmark = pytest.mark.slow


def signalmail(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signalmail", *args, "--project-root", str(REPO_ROOT)],
        cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def engines(env: dict[str, str]) -> list[tuple[sa.Engine, list[str]]]:
    """The warehouse (and on DuckDB the ledger file), with the schemas each holds."""
    if env["SIGNALMAIL_DBT_TARGET"] == "postgres":
        url = env["SIGNALMAIL_PG_URL"].replace("postgresql://", "postgresql+psycopg://")
        schemas = ["rudderstack_raw", "signals", "signalmail_ledger"]
        return [(sa.create_engine(url, poolclass=sa.pool.NullPool), schemas)]
    warehouse = sa.create_engine(f"duckdb:///{env['SIGNALMAIL_DUCKDB_PATH']}")
    ledger = sa.create_engine(f"duckdb:///{env['SIGNALMAIL_LEDGER_PATH']}")
    return [(warehouse, ["rudderstack_raw", "signals"]), (ledger, ["signalmail_ledger"])]


def _count(conn: sa.Connection, relation: str, cols: set[str], ids: set[str], emails: set[str]):
    parts, binds, params = [], [], {}
    if ids and cols & {"user_id", "anonymous_id"}:
        parts += [f"{c} in :ids" for c in ("user_id", "anonymous_id") if c in cols]
        binds.append(sa.bindparam("ids", expanding=True))
        params["ids"] = sorted(ids)
    if emails and "email" in cols:
        parts.append("lower(email) in :emails")
        binds.append(sa.bindparam("emails", expanding=True))
        params["emails"] = sorted(emails)
    merge_values = [c for c in ("merge_property_1_value", "merge_property_2_value") if c in cols]
    if merge_values and (ids or emails):
        parts += [f"lower({c}) in :idents" for c in merge_values]
        binds.append(sa.bindparam("idents", expanding=True))
        params["idents"] = sorted(i.lower() for i in ids | emails)
    if not parts:
        return 0
    sql = f"select count(*) from {relation} where " + " or ".join(parts)
    return conn.execute(sa.text(sql).bindparams(*binds), params).scalar_one()


def mentions(env: dict[str, str], ids: set[str], emails: set[str]) -> Counter[str]:
    """Rows per table whose user_id, anonymous_id or email is one of these."""
    found: Counter[str] = Counter()
    for engine, schemas in engines(env):
        with engine.connect() as conn:
            for schema in schemas:
                columns: dict[str, set[str]] = {}
                for table, column in conn.execute(sa.text(
                    "select c.table_name, c.column_name from information_schema.columns c "
                    "join information_schema.tables t using (table_schema, table_name) "
                    "where c.table_schema = :s and t.table_type = 'BASE TABLE'"
                ), {"s": schema}):  # fmt: skip
                    columns.setdefault(table, set()).add(column)
                for table, cols in columns.items():
                    n = _count(conn, f'"{schema}"."{table}"', cols, ids, emails)
                    if n:
                        found[f"{schema}.{table}"] = n
        engine.dispose()
    return found


def test_forget_erases_a_shopper_everywhere_and_they_are_never_mailed_again(tmp_path, engine_env):
    with services(tmp_path, engine_env) as svc:
        shop = svc.shop()
        script_first_day(shop)
        svc.wait_for_spool(shop.sent)
        first = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert first.returncode == 0, first.stdout + first.stderr
        assert Counter((m["email"], m["metadata"]["campaign"]) for m in svc.messages()) == Counter(
            EXPECTED.items()
        )
        # a CRM sync tells RudderStack that ann's address and her user id are one person
        merge = requests.post(
            f"{svc.collector.url}/v1/merge",
            json={"userId": "crm-sync", "mergeProperties": [
                {"type": "email", "value": "Ann@Example.com"}, {"type": "user_id", "value": "ann"},
            ]},
            auth=(svc.collector.write_key, ""), timeout=10,
        )  # fmt: skip
        assert merge.status_code == 200, merge.text
        wait_until(
            lambda: "crm-sync" in read_spool(svc.spool).user_ids, what="the merge in the spool"
        )
        loaded = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        spool_before = read_spool(svc.spool)
        ann_ids = {"ann", *(a for a in spool_before.anonymous_ids if "ann" in a)}
        ann_ids.add(anonymous_id_for("ann@example.com"))
        emails = {"ann@example.com"}
        assert mentions(svc.env, ann_ids, emails)["rudderstack_raw.tracks"] > 0
        assert mentions(svc.env, ann_ids, emails)["rudderstack_raw.merges"] == 1
        others_before = mentions(svc.env, {"bob", "carl"}, {"bob@example.com"})

        done = signalmail(svc.env, "forget", "--email", "ann@example.com")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ann" not in done.stdout  # the report says what, never who
        assert "Mandrill rejects list: 1 address(es)" in done.stdout

        assert mentions(svc.env, ann_ids, emails) == Counter()
        assert mentions(svc.env, {"bob", "carl"}, {"bob@example.com"}) == others_before
        spool_after = read_spool(svc.spool)
        assert not ann_ids & (spool_after.user_ids | spool_after.anonymous_ids)
        assert spool_after.events < spool_before.events
        assert {"bob", "carl"} <= spool_after.user_ids
        client = mailchimp_transactional.Client(svc.env["SIGNALMAIL_MANDRILL_API_KEY"])
        client.api_client.host = svc.env["SIGNALMAIL_MANDRILL_BASE_URL"]
        assert [r["email"] for r in client.rejects.list({"email": "ann@example.com"})] == [
            "ann@example.com"
        ]

        # ann comes back and abandons a cart; lea, new, does too
        write_late_cart(svc.spool, "ann", dt.timedelta(hours=2))
        write_late_cart(svc.spool, "lea", dt.timedelta(hours=2))
        again = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert again.returncode == 0, again.stdout + again.stderr
        sent = Counter((m["email"], m["metadata"]["campaign"]) for m in svc.messages())
        assert sent == Counter({**EXPECTED, "lea@example.com": "cart_abandonment"}.items())
        # forgetting twice finds nothing new to mark, and erases what came back
        twice = signalmail(svc.env, "forget", "--user-id", "ann", "--email", "ann@example.com")
        assert twice.returncode == 0, twice.stdout + twice.stderr
        assert "tombstones added: 0" in twice.stdout
        assert mentions(svc.env, ann_ids, emails) == Counter()


def test_retention_deletes_old_events_from_the_spool_and_the_event_tables(tmp_path, engine_env):
    """SIGNALMAIL_RETENTION_DAYS as the watch applies it after its nightly build (DuckDB), and
    `signalmail retention` as the nightly Meltano job runs it (PostgreSQL): one function."""
    by_watch = engine_env["SIGNALMAIL_DBT_TARGET"] == "duckdb"
    with services(tmp_path, engine_env) as svc:
        shop = svc.shop()
        script_first_day(shop)
        svc.wait_for_spool(shop.sent)
        # an archive: a cart received and published 40 days ago
        write_late_cart(
            svc.spool, "old", dt.timedelta(days=40), published_ago=dt.timedelta(days=40)
        )
        first = run_watch(svc, "--exit-when-idle", "--fail-fast")
        assert first.returncode == 0, first.stdout + first.stderr
        before = read_spool(svc.spool)
        assert "old" in before.user_ids
        assert mentions(svc.env, {"old"}, set())["rudderstack_raw.tracks"] == 1

        if by_watch:
            # the first run built today's nightly models itself; let the nightly come due now
            state = tmp_path / "watch" / "state.json"
            saved = json.loads(state.read_text())
            saved["bookmarks"].pop("nightly")
            state.write_text(json.dumps(saved))
            done = run_watch(
                svc, "--exit-when-idle", "--fail-fast", "--nightly-at", "00:00",
                extra_env={"SIGNALMAIL_RETENTION_DAYS": "30"},
            )  # fmt: skip
            assert " retention " in done.stdout, done.stdout  # the step ran in a cycle
        else:
            done = signalmail(svc.env, "retention", "--days", "30")
        assert done.returncode == 0, done.stdout + done.stderr
        after = read_spool(svc.spool)
        assert "old" not in after.user_ids
        # exactly its identify and cart went; the sandbox's webhooks for the emails the runs
        # sent may still be reaching the spool, so compare what was there, not counts
        assert len(before.message_ids - after.message_ids) == 2
        raw_and_events = {
            table: n for table, n in mentions(svc.env, {"old"}, set()).items()
            if table.startswith("rudderstack_raw.") or "stg_" in table or "int_events" in table
        }  # fmt: skip
        assert raw_and_events == {}
        assert mentions(svc.env, {"bob"}, set())["rudderstack_raw.tracks"] > 0
