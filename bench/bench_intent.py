"""Predicted intent against the hand-weighted intent_score, and best send hour against a fixed one.

A shop's history is simulated (`signalmail simulate`'s shoppers: heavy-tailed visit rates, carts
that are abandoned or ordered, quiet spells, email clicks) for `--days` days ending now and
loaded into a DuckDB warehouse's raw tables; the nightly models up to int_purchase_features are
built with dbt, and `signalmail intent train` runs on them: time split, model and baseline on
the same held-out week, then scoring.

Send time, offline: for every shopper with at least `min_engagements_for_send_hour` email
engagements before the last `--send-test-days` days, the best local hour from those engagements
(as int_user_send_preferences picks it) against the fixed `default_send_hour`, scored by the
share of the shopper's later engagements that fall within an hour of the chosen hour.

    python bench/bench_intent.py                       # 3,000 shoppers, 63 days
    python bench/bench_intent.py --users 800 --days 56 # quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import yaml
from signalmail.intent import train_and_score
from signalmail.progress import progress_bar
from signalmail.simulate.model import Simulation, SimulationConfig, iso
from testkit import raw_events
from testkit.harness import Warehouse, run_dbt

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "dbt_project"


CHUNK = 50_000


def stamped(events, now: datetime):
    """The collector's fields: receivedAt and timestamp a moment after the client's time."""
    for event in events:
        sent = datetime.fromisoformat(str(event["originalTimestamp"]).replace("Z", "+00:00"))
        if sent > now:
            continue
        received = iso(sent.timestamp() + 0.25)
        yield {**event, "sentAt": event["originalTimestamp"], "receivedAt": received,
               "timestamp": event["originalTimestamp"]}  # fmt: skip


def load(wh: Warehouse, args: argparse.Namespace, now: datetime) -> int:
    import duckdb

    config = SimulationConfig(
        seed=args.seed, users=args.users, days=args.days, start=now - timedelta(days=args.days)
    )
    total = 0
    with duckdb.connect(str(wh.duckdb_path)) as conn, progress_bar("simulating and loading") as bar:
        raw_events.create_raw_tables(conn, "duckdb", wh.raw_schema)
        batch: list[dict] = []
        for event in stamped(Simulation(config), now):
            batch.append(event)
            if len(batch) >= CHUNK:
                total += raw_events.load_events(conn, "duckdb", batch, wh.raw_schema, f"s{total}")
                bar.advance(len(batch))
                batch = []
        if batch:
            total += raw_events.load_events(conn, "duckdb", batch, wh.raw_schema, f"s{total}")
            bar.advance(len(batch))
    return total


def send_time(wh: Warehouse, args: argparse.Namespace, now: datetime) -> dict:
    """Best-hour rule against the default hour on later engagements (module docstring)."""
    project = yaml.safe_load((PROJECT / "dbt_project.yml").read_text())["vars"]
    default_hour = int(project["default_send_hour"])
    min_engagements = int(project["min_engagements_for_send_hour"])
    split = now - timedelta(days=args.send_test_days)
    engine = sa.create_engine(f"duckdb:///{wh.duckdb_path}")
    sql = (
        f"select e.user_id, e.event_at, coalesce(u.timezone, 'UTC') from \"{wh.schema}\"."
        f'stg_rudderstack__email_events e left join "{wh.schema}".int_user_send_preferences u '
        "on e.user_id = u.user_id where e.email_event_type in ('opened', 'clicked') "
        "and e.user_id is not null"
    )
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql)).fetchall()
    engine.dispose()
    before: dict[str, Counter[int]] = {}
    after: dict[str, list[int]] = {}
    for user_id, at, zone in rows:
        local = at.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).hour
        if at < split.replace(tzinfo=None):
            before.setdefault(user_id, Counter())[local] += 1
        else:
            after.setdefault(user_id, []).append(local)

    def near(hour: int, chosen: int) -> bool:
        return min((hour - chosen) % 24, (chosen - hour) % 24) <= 1

    def hit_rates(threshold: int) -> dict:
        users = [u for u, c in before.items() if sum(c.values()) >= threshold and u in after]
        hits_best = hits_default = total = 0
        for user_id in users:
            counts = before[user_id]
            best = min(counts, key=lambda h: (-counts[h], h))  # the mode; ties: the earliest
            for hour in after[user_id]:
                total += 1
                hits_best += near(hour, best)
                hits_default += near(hour, default_hour)
        return {
            "min_engagements": threshold,
            "users": len(users),
            "later_engagements": total,
            "best_hour_hit_rate": hits_best / total if total else None,
            "default_hour_hit_rate": hits_default / total if total else None,
        }

    return {
        "default_hour": default_hour,
        "project_min_engagements": min_engagements,
        "by_threshold": [hit_rates(n) for n in sorted({min_engagements, 1, 5, 8})],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--days", type=float, default=63.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--send-test-days", type=float, default=14.0)
    parser.add_argument("--workdir", default=str(ROOT / "bench" / "work" / "intent"))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    workdir = Path(args.workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    wh = Warehouse(
        dialect="duckdb",
        schema="bench_signals",
        duckdb_path=workdir / "warehouse.duckdb",
        ledger_path=workdir / "ledger.duckdb",
        target_dir=workdir / "dbt",
    )
    now = datetime.now(UTC).replace(microsecond=0)
    began = time.perf_counter()
    events = load(wh, args, now)
    loaded = time.perf_counter() - began
    as_of = {"as_of": now.replace(tzinfo=None).isoformat(sep=" ")}
    began = time.perf_counter()
    run_dbt(wh, "run", "--select", "+int_purchase_features +int_user_send_preferences",
            dbt_vars=as_of)  # fmt: skip
    run_dbt(wh, "test", "--select", "int_purchase_features", dbt_vars=as_of)
    built = time.perf_counter() - began

    engine = sa.create_engine(f"duckdb:///{wh.duckdb_path}", poolclass=sa.pool.NullPool)
    began = time.perf_counter()
    card = train_and_score(engine, wh.schema, card_path=workdir / "model.json", now=now)
    trained = time.perf_counter() - began
    engine.dispose()
    timing = send_time(wh, args, now)

    print(f"{events:,} events, {args.users:,} shoppers, {args.days:g} days "
          f"(load {loaded:.1f} s, dbt {built:.1f} s, train+score {trained:.1f} s)")  # fmt: skip
    for line in card.lines():
        print(line)
    m, b = card.model, card.baseline
    print(f"ratio model/baseline: ROC AUC {m.roc_auc / b.roc_auc:.3f}x, "
          f"PR AUC {m.pr_auc / b.pr_auc:.2f}x, Brier {m.brier / b.brier:.3f}x")  # fmt: skip
    print(f"send time (later engagements within an hour of the chosen local hour; default "
          f"{timing['default_hour']}:00):")  # fmt: skip
    for row in timing["by_threshold"]:
        if not row["later_engagements"]:
            continue
        mark = " (the project's min_engagements_for_send_hour)" if (
            row["min_engagements"] == timing["project_min_engagements"]) else ""  # fmt: skip
        print(f"  >= {row['min_engagements']} engagements before: {row['users']:,} shoppers, "
              f"{row['later_engagements']:,} later: best hour {row['best_hour_hit_rate']:.1%}, "
              f"default {row['default_hour_hit_rate']:.1%}, ratio "
              f"{row['best_hour_hit_rate'] / row['default_hour_hit_rate']:.2f}x{mark}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({
            "events": events, "users": args.users, "days": args.days,
            "seconds": {"load": loaded, "dbt": built, "train_and_score": trained},
            "card": card.to_dict(), "send_time": timing,
        }, indent=2, default=str) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
