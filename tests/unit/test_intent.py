"""Predicted intent: the split, the figures, and a train-and-score run on a DuckDB table.

The snapshots here are synthetic (int_purchase_features' columns, filled so that visit rate
and an open cart drive orders, as in the simulated shop); tests/integration/test_intent.py runs
the same code on the dbt model built from simulated events.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import numpy as np
import pytest
import sqlalchemy as sa
from signalmail.intent import FEATURES, NotEnoughHistory, evaluate_scores, train_and_score
from signalmail.intent.train import TEST_DAYS, split

NOW = dt.datetime(2026, 3, 1, 3, 0, tzinfo=dt.UTC)
HORIZON = 7


def _write_features(
    path, users: int, days: int, seed: int = 1, signal: bool = True, never: str | None = None
) -> None:
    """int_purchase_features for `users` shoppers over `days` daily snapshots.

    `never` names a feature that is null in every row (an event the shop never sends).
    """
    rng = np.random.default_rng(seed)
    rate = rng.lognormal(0.0, 0.8, users)  # sessions a week
    rows = []
    for days_back in range(days + 1):
        for user in range(users):
            cart = rng.random() < 0.3
            values = dict.fromkeys(FEATURES, 0.0)
            values["sessions_before"] = rng.poisson(rate[user] * 8)
            values["sessions_window"] = rng.poisson(rate[user] * 4)
            values["adds_since_last_order"] = float(cart)
            values["days_since_last_order"] = None if rng.random() < 0.5 else rng.uniform(1, 60)
            values["intent_score"] = 3.0 * cart + rng.exponential(1.0)
            if never is not None:
                values[never] = None
            chance = 1 - np.exp(-0.06 * rate[user] * (2.5 if cart else 1.0))
            if not signal:
                chance = 0.1
            label = None if days_back < HORIZON else int(rng.random() < chance)
            rows.append((days_back, f"u{user}", *values.values(), label))
    columns = ", ".join(f"{name} double" for name in FEATURES if name != "intent_score")
    with duckdb.connect(str(path)) as con:
        con.execute("create schema if not exists signals")
        con.execute(
            f"create or replace table signals.int_purchase_features (days_back integer, "
            f"user_id varchar, {columns}, intent_score double, ordered_in_horizon integer)"
        )
        names = ["days_back", "user_id", *FEATURES, "ordered_in_horizon"]
        data = {name: [row[i] for row in rows] for i, name in enumerate(names)}
        con.register("fixture", {k: np.array(v, dtype=object) for k, v in data.items()})
        con.execute(
            f"insert into signals.int_purchase_features ({', '.join(names)}) "
            f"select {', '.join(names)} from fixture"
        )


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    made = sa.create_engine(f"duckdb:///{path}", poolclass=sa.pool.NullPool)
    made.path = path  # type: ignore[attr-defined]
    yield made
    made.dispose()


def test_figures_separate_a_perfect_score_from_a_random_one():
    rng = np.random.default_rng(0)
    label = (rng.random(2000) < 0.1).astype(int)
    perfect = evaluate_scores("perfect", label, label * 0.9 + 0.05)
    assert perfect.roc_auc == 1.0
    assert perfect.pr_auc == 1.0
    assert perfect.top_decile_capture > 0.9
    noise = evaluate_scores("noise", label, rng.random(2000))
    assert 0.4 < noise.roc_auc < 0.6
    assert noise.calibration_error > perfect.calibration_error or noise.brier > perfect.brier
    with pytest.raises(ValueError, match="only one class"):
        evaluate_scores("none", np.zeros(10), np.zeros(10))


def test_the_split_keeps_training_labels_out_of_the_test_week(engine):
    _write_features(engine.path, users=50, days=40)
    from signalmail.intent import load_snapshots

    train, test = split(load_snapshots(engine, "signals"), HORIZON)
    assert set(test.days_back) == set(range(HORIZON, HORIZON + TEST_DAYS))
    # a training snapshot's horizon ends before the first (oldest) test snapshot begins
    assert train.days_back.min() - HORIZON >= test.days_back.max()
    assert not np.isnan(train.label).any()
    assert not np.isnan(test.label).any()


def test_training_scores_the_current_snapshot_and_beats_chance(engine, tmp_path):
    _write_features(engine.path, users=400, days=42)
    card_path = tmp_path / "intent" / "model.json"
    card = train_and_score(engine, "signals", card_path=card_path, now=NOW)

    assert card.horizon_days == HORIZON
    assert card.model.roc_auc > 0.6  # visit rate and carts drive the synthetic orders
    assert card.model.rows > 0
    assert card.model.positives > 0
    assert card.version.startswith("logreg-20260301T0300-")
    assert set(card.weights) >= set(FEATURES)
    assert "days_since_last_order missing" in card.weights  # null: no order yet, flagged
    saved = json.loads(card_path.read_text())
    assert saved["version"] == card.version
    assert saved["baseline_intent_score"]["name"] == "intent_score (baseline)"

    with duckdb.connect(str(engine.path), read_only=True) as con:
        rows = con.execute(
            "select user_id, purchase_probability, model_version, scored_at "
            "from signalmail_intent.purchase_scores"
        ).fetchall()
    assert len(rows) == 400 == card.scored_users  # every user of the current snapshot
    assert all(0.0 < p < 1.0 for _, p, _, _ in rows)
    assert {v for _, _, v, _ in rows} == {card.version}
    assert {s for _, _, _, s in rows} == {NOW.replace(tzinfo=None)}
    # users who visit more are scored higher on average (the synthetic truth)
    probabilities = dict((u, p) for u, p, _, _ in rows)
    assert len(set(probabilities.values())) > 50


def test_a_feature_null_in_every_row_is_kept_and_named(engine, tmp_path):
    """A shop that never sends `Product Added` has no days_since_last_add anywhere: the imputer
    used to drop the column, the weights no longer matched the feature names, and training
    failed after it had written the scores, every night, without a model card."""
    _write_features(engine.path, users=300, days=42, never="days_since_last_add")
    card_path = tmp_path / "model.json"
    card = train_and_score(engine, "signals", card_path=card_path, now=NOW)
    assert list(card.weights)[: len(FEATURES)] == list(FEATURES)
    assert "days_since_last_add missing" in card.weights
    assert json.loads(card_path.read_text())["version"] == card.version
    assert card.scored_users == 300


def test_a_new_training_replaces_every_score(engine):
    _write_features(engine.path, users=300, days=42)
    train_and_score(engine, "signals", now=NOW)
    _write_features(engine.path, users=200, days=42, seed=2)
    later = NOW + dt.timedelta(days=1)
    card = train_and_score(engine, "signals", now=later)
    with duckdb.connect(str(engine.path), read_only=True) as con:
        versions = con.execute(
            "select model_version, count(*) from signalmail_intent.purchase_scores group by 1"
        ).fetchall()
    assert versions == [(card.version, 200)]  # no score of the old model left behind


def test_too_little_history_is_refused_with_the_reason(engine):
    _write_features(engine.path, users=20, days=20)
    with pytest.raises(NotEnoughHistory, match="at least 20 of each class"):
        train_and_score(engine, "signals", now=NOW)
    _write_features(engine.path, users=20, days=5)  # no snapshot old enough to have a label
    with pytest.raises(NotEnoughHistory, match="no snapshot has a label"):
        train_and_score(engine, "signals", now=NOW)


def test_a_missing_features_model_says_to_run_the_nightly_build(engine):
    with pytest.raises(LookupError, match="run the nightly dbt build"):
        train_and_score(engine, "signals", now=NOW)
