"""Train, measure and score: the nightly purchase-propensity run.

1. Read the snapshots (`int_purchase_features`).
2. Time split: test on the newest week of labelled snapshots; train on snapshots whose
   horizon ended before the first test snapshot, so no training label saw the test period.
3. Measure the model and the hand-weighted intent_score on the test snapshots.
4. Retrain on every labelled snapshot and score the current one (days_back = 0).
5. Replace the scores table and write the model card (figures, version, features).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from signalmail.intent.evaluate import Evaluation, baseline_probability, evaluate_scores
from signalmail.intent.features import FEATURES, Snapshots, load_snapshots
from signalmail.intent.store import write_scores
from signalmail.watch.settings import INTENT_SCHEMA

log = logging.getLogger("signalmail.intent")

#: days of labelled snapshots held out for the measurement
TEST_DAYS = 7
#: fewer buyers than this in the training or test snapshots: no model is trained
MIN_POSITIVES = 20

#: the logistic regression's settings (C: inverse L2 strength)
PARAMS: dict[str, Any] = {"C": 1.0, "max_iter": 2000}


class NotEnoughHistory(RuntimeError):
    """Too little labelled history to train or to measure a model honestly."""


@dataclass
class ModelCard:
    """What was trained, on what, how it measured, and what it scored."""

    version: str
    trained_at: str
    horizon_days: int
    features: list[str]
    train_rows: int
    train_positives: int
    test_days_back: tuple[int, int]
    model: Evaluation
    baseline: Evaluation
    scored_users: int
    #: standardized coefficient per input (features, then "<feature> missing" indicators)
    weights: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=lambda: dict(PARAMS))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the card's JSON)."""
        return {
            "version": self.version,
            "trained_at": self.trained_at,
            "horizon_days": self.horizon_days,
            "features": self.features,
            "train_rows": self.train_rows,
            "train_positives": self.train_positives,
            "test_days_back": list(self.test_days_back),
            "model": self.model.to_dict(),
            "baseline_intent_score": self.baseline.to_dict(),
            "scored_users": self.scored_users,
            "weights": self.weights,
            "params": self.params,
        }

    def lines(self) -> list[str]:
        """Give the figures as the CLI and the bench print them."""
        m, b = self.model, self.baseline
        out = [
            f"model {self.version}: order within {self.horizon_days} days",
            f"trained on {self.train_rows:,} snapshots ({self.train_positives:,} with an order); "
            f"tested on {m.rows:,} (days_back {self.test_days_back[0]}-"
            f"{self.test_days_back[1]}, base rate {m.base_rate:.3f})",
            f"{'':24}{'ROC AUC':>8}{'PR AUC':>8}{'Brier':>8}{'ECE':>8}{'top 10%':>9}",
        ]
        for e in (m, b):
            out.append(
                f"{e.name:24}{e.roc_auc:8.3f}{e.pr_auc:8.3f}{e.brier:8.4f}"
                f"{e.calibration_error:8.4f}{e.top_decile_capture:9.1%}"
            )
        strongest = sorted(self.weights.items(), key=lambda kv: -abs(kv[1]))[:5]
        out.append("strongest inputs: " + ", ".join(f"{k} {v:+.2f}" for k, v in strongest))
        out.append(f"scored {self.scored_users:,} users")
        return out


def split(snapshots: Snapshots, horizon: int) -> tuple[Snapshots, Snapshots]:
    """Return (train, test) snapshots: see the module docstring, step 2."""
    labelled = snapshots.labelled
    days = labelled.days_back
    test_last = horizon + TEST_DAYS - 1
    test = labelled.where((days >= horizon) & (days <= test_last))
    train = labelled.where(days >= test_last + horizon)
    return train, test


def _signed_log(values: np.ndarray) -> np.ndarray:
    """Take the logarithm of heavy-tailed counts and durations, keeping the sign."""
    return np.sign(values) * np.log1p(np.abs(values))


def fit(train: Snapshots, seed: int = 0) -> Pipeline:
    """Fit a logistic regression on log-scaled, standardized features.

    Chosen over gradient-boosted trees, which measured worse on the same split (docs/bench.md,
    "Predicted intent"): daily snapshots of the same shoppers overlap, so a few thousand
    buyers are fewer independent examples than the row count suggests, and a linear model
    overfits them least. Its probabilities are calibrated by construction (log loss), and
    its weights say what drives a score. A missing value (no order yet, no add to cart) is
    filled with the median and flagged by an indicator input of its own. A feature missing in
    every row (a shop that sends no `Product Added`) is kept, as a constant, rather than dropped:
    the model's inputs then stay the FEATURES by position, which the weights are named after.
    """
    model = Pipeline([
        ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
        ("log", FunctionTransformer(_signed_log)),
        ("scale", StandardScaler()),
        ("classify", LogisticRegression(**PARAMS, random_state=seed)),
    ])  # fmt: skip
    model.fit(train.features, train.label.astype(int))
    return model


def weights_of(model: Pipeline) -> dict[str, float]:
    """Name each standardized coefficient: the features, then their missing-value flags."""
    impute: SimpleImputer = model.named_steps["impute"]
    names = list(FEATURES)
    if impute.indicator_ is not None:
        names += [f"{FEATURES[i]} missing" for i in impute.indicator_.features_]
    coefficients = model.named_steps["classify"].coef_[0]
    return {name: round(float(c), 4) for name, c in zip(names, coefficients, strict=True)}


def _check(name: str, rows: Snapshots) -> None:
    positives = int(np.nansum(rows.label))
    if positives < MIN_POSITIVES or len(rows) - positives < MIN_POSITIVES:
        raise NotEnoughHistory(
            f"{name}: {len(rows):,} labelled snapshots with {positives:,} orders; at least "
            f"{MIN_POSITIVES} of each class are needed (more history: purchase_training_days)"
        )


def horizon_of(snapshots: Snapshots) -> int:
    """Give the label horizon dbt used: the newest snapshot that has a label."""
    known = snapshots.days_back[~np.isnan(snapshots.label)]
    if not len(known):
        raise NotEnoughHistory("no snapshot has a label yet: the warehouse's history is too short")
    return int(known.min())


def train_and_score(
    engine: sa.Engine,
    schema: str,
    scores_schema: str = INTENT_SCHEMA,
    card_path: Path | None = None,
    seed: int = 0,
    now: dt.datetime | None = None,
) -> ModelCard:
    """Run steps 1-5 of the module docstring; raise NotEnoughHistory with the reason."""
    now = now or dt.datetime.now(dt.UTC)
    snapshots = load_snapshots(engine, schema)
    horizon = horizon_of(snapshots)
    train, test = split(snapshots, horizon)
    _check("training snapshots", train)
    _check("test snapshots", test)

    measured = fit(train, seed)
    model_eval = evaluate_scores(
        "purchase_probability", test.label, measured.predict_proba(test.features)[:, 1]
    )
    baseline_eval = evaluate_scores(
        "intent_score (baseline)",
        test.label,
        baseline_probability(train.intent_score, train.label, test.intent_score),
        ranking=test.intent_score,
    )

    labelled = snapshots.labelled
    final = fit(labelled, seed)
    current = snapshots.current
    version = _version(now, labelled)
    probability = final.predict_proba(current.features)[:, 1] if len(current) else np.empty(0)
    scored = write_scores(engine, scores_schema, current.user_ids, probability, version, now)
    card = ModelCard(
        version=version,
        trained_at=now.isoformat(timespec="seconds"),
        horizon_days=horizon,
        features=list(FEATURES),
        train_rows=len(train),
        train_positives=int(train.label.sum()),
        test_days_back=(horizon, horizon + TEST_DAYS - 1),
        model=model_eval,
        baseline=baseline_eval,
        scored_users=scored,
        weights=weights_of(final),
    )
    if card_path is not None:
        card_path.parent.mkdir(parents=True, exist_ok=True)
        card_path.write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    for line in card.lines():
        log.info("%s", line)
    return card


def _version(now: dt.datetime, rows: Snapshots) -> str:
    """Name a model by when it was trained and what it saw (features, settings, rows)."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(json.dumps([FEATURES, PARAMS], sort_keys=True).encode())
    digest.update(f"{len(rows)}:{int(rows.label.sum())}".encode())
    return f"logreg-{now:%Y%m%dT%H%M}-{digest.hexdigest()[:8]}"
