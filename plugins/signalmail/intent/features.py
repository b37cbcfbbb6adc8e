"""The model's rows: `int_purchase_features`, read into arrays.

The features are computed in dbt, where an analytics engineer can read and change them; this
module only reads them. Adding a feature means a column in the model and a name here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

#: the columns of int_purchase_features the model learns from, in order
FEATURES: tuple[str, ...] = (
    "sessions_7d",
    "sessions_window",
    "engaged_minutes_7d",
    "read_seconds_7d",
    "days_since_last_session",
    "sessions_before",
    "days_since_first_session",
    "views_7d",
    "views_window",
    "adds_7d",
    "adds_window",
    "adds_since_last_order",
    "days_since_last_add",
    "cart_views_7d",
    "checkouts_7d",
    "searches_7d",
    "email_opens_window",
    "email_clicks_window",
    "orders_before",
    "revenue_before",
    "days_since_last_order",
    # the baseline is a feature too: the model starts from what the hand weights know
    "intent_score",
)

FEATURES_MODEL = "int_purchase_features"


@dataclass(frozen=True)
class Snapshots:
    """Every (user, snapshot) row: features, the baseline score and the label (NaN: unknown)."""

    days_back: np.ndarray
    user_ids: np.ndarray
    features: np.ndarray
    intent_score: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.days_back)

    def where(self, mask: np.ndarray) -> Snapshots:
        """Keep the rows `mask` selects."""
        return Snapshots(
            self.days_back[mask],
            self.user_ids[mask],
            self.features[mask],
            self.intent_score[mask],
            self.label[mask],
        )

    @property
    def labelled(self) -> Snapshots:
        """Snapshots whose horizon has passed."""
        return self.where(~np.isnan(self.label))

    @property
    def current(self) -> Snapshots:
        """The newest snapshot (as of the build): the rows the model scores."""
        return self.where(self.days_back == 0)


def load_snapshots(engine: sa.Engine, schema: str) -> Snapshots:
    """Read int_purchase_features from the warehouse (`schema`: the dbt schema)."""
    columns = ", ".join(FEATURES)
    table = f'"{schema}"."{FEATURES_MODEL}"'
    sql = (
        f"select days_back, user_id, {columns}, intent_score, ordered_in_horizon "  # noqa: S608
        f"from {table} order by days_back, user_id"
    )
    with engine.connect() as conn:
        try:
            rows = conn.execute(sa.text(sql)).fetchall()
        except sa.exc.ProgrammingError as exc:
            raise LookupError(
                f"{table} is not in the warehouse: run the nightly dbt build first ({exc.orig})"
            ) from None
        except sa.exc.DBAPIError as exc:
            if "does not exist" in str(exc) or "Catalog Error" in str(exc):
                raise LookupError(
                    f"{table} is not in the warehouse: run the nightly dbt build first"
                ) from None
            raise
    n = len(FEATURES)
    if not rows:
        empty = np.empty(0)
        return Snapshots(empty.astype(int), empty.astype(object), np.empty((0, n)), empty, empty)
    data = np.array([tuple(row) for row in rows], dtype=object)
    return Snapshots(
        days_back=data[:, 0].astype(int),
        user_ids=data[:, 1],
        # null features (no order yet: days since last order) stay NaN: the model handles them
        features=_floats(data[:, 2 : 2 + n]),
        intent_score=_floats(data[:, 2 + n]),
        label=_floats(data[:, 3 + n]),
    )


def _floats(values: np.ndarray) -> np.ndarray:
    out = np.where(values == None, np.nan, values)  # noqa: E711 - elementwise on objects
    return out.astype(float)
