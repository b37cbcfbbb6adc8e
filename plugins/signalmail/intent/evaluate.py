"""How well a score predicts an order: ranking, precision where it matters, and calibration.

The same figures for the model and for the hand-weighted `intent_score`, on the same held-out
snapshots. `intent_score` is not a probability, so for calibration it is first mapped to one by
isotonic regression fitted on the training snapshots: the baseline gets its best calibration,
and the comparison is about what each score knows, not about its scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


@dataclass(frozen=True)
class Evaluation:
    """One score's figures on one set of labelled snapshots."""

    name: str
    rows: int
    positives: int
    roc_auc: float
    pr_auc: float
    brier: float
    #: expected calibration error: mean |predicted - observed| over ten equal-size bins
    calibration_error: float
    #: share of all buyers among the 10% of rows the score ranks highest
    top_decile_capture: float
    #: (mean predicted, observed rate, rows) per bin, lowest scores first
    calibration: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def base_rate(self) -> float:
        """Share of rows with an order in the horizon."""
        return self.positives / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the model card."""
        return {**asdict(self), "base_rate": self.base_rate}


def evaluate_scores(
    name: str,
    label: np.ndarray,
    probability: np.ndarray,
    ranking: np.ndarray | None = None,
    bins: int = 10,
) -> Evaluation:
    """Measure `probability` (values in 0..1) against `label` (0/1).

    Ranking figures (ROC AUC, PR AUC, top decile) use `ranking` when given: the baseline's own
    score, whose ties a fitted mapping must not add to.
    """
    ranking = probability if ranking is None else ranking
    label = label.astype(int)
    positives = int(label.sum())
    if positives == 0 or positives == len(label):
        raise ValueError(f"{name}: the test snapshots hold only one class; nothing to measure")
    order = np.argsort(-ranking, kind="stable")
    top = order[: max(1, len(order) // 10)]
    calibration = []
    for chunk in np.array_split(np.argsort(probability, kind="stable"), bins):
        if len(chunk):
            calibration.append(
                (float(probability[chunk].mean()), float(label[chunk].mean()), len(chunk))
            )
    error = sum(abs(p - o) * n for p, o, n in calibration) / len(label)
    return Evaluation(
        name=name,
        rows=len(label),
        positives=positives,
        roc_auc=float(roc_auc_score(label, ranking)),
        pr_auc=float(average_precision_score(label, ranking)),
        brier=float(brier_score_loss(label, probability)),
        calibration_error=float(error),
        top_decile_capture=float(label[top].sum() / positives),
        calibration=calibration,
    )


def baseline_probability(
    train_score: np.ndarray, train_label: np.ndarray, test_score: np.ndarray
) -> np.ndarray:
    """Map intent_score to a probability, fitted on the training snapshots (monotone)."""
    mapping = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    mapping.fit(train_score, train_label)
    return np.asarray(mapping.predict(test_score), dtype=float)
