"""Predicted intent: a purchase-propensity model trained on the warehouse's own history.

`signalmail intent train` (and the watch's nightly build) reads `int_purchase_features`,
measures a model on a time split against the hand-weighted `intent_score`, retrains it on every
labelled snapshot and writes each active user's purchase probability to
`signalmail_intent.purchase_scores`, which `user_signals` and the trigger decisions read.
docs/signals.md, "Predicted intent", explains the features, the label and the figures.
"""

from signalmail.intent.evaluate import Evaluation, evaluate_scores
from signalmail.intent.features import FEATURES, Snapshots, load_snapshots
from signalmail.intent.train import ModelCard, NotEnoughHistory, train_and_score

__all__ = [
    "FEATURES",
    "Evaluation",
    "ModelCard",
    "NotEnoughHistory",
    "Snapshots",
    "evaluate_scores",
    "load_snapshots",
    "train_and_score",
]
