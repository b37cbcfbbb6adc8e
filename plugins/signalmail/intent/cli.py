"""`signalmail intent train`: the nightly purchase-propensity run (see signalmail.intent)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from signalmail.watch.options import project_options
from signalmail.watch.settings import SettingsError, from_environment

DEFAULT_CARD = Path("data/intent/model.json")


@click.group()
def intent() -> None:
    """Predicted intent: train the purchase-propensity model and score every active user."""


@intent.command()
@project_options
@click.option(
    "--card",
    type=click.Path(dir_okay=False, path_type=Path),
    default=str(DEFAULT_CARD),
    show_default=True,
    help="Where the model card (version, features, figures) is written; relative to the project.",
)
@click.option("--seed", default=0, show_default=True, help="The model's random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the model card as JSON.")
def train(project_root: Path, engine: str | None, card: Path, seed: int, as_json: bool) -> None:
    """Train on int_purchase_features, measure against intent_score, write purchase_scores.

    Run it after the nightly dbt build (the `nightly` Meltano job does; `signalmail watch`
    does after its own). Too little history is not an error: the previous scores stay and the
    reason is printed.
    """
    from signalmail.intent.train import NotEnoughHistory, train_and_score

    logging.basicConfig(level=logging.WARNING)
    try:
        settings = from_environment(project_root.resolve(), engine=engine)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    warehouse = settings.warehouse_engine()
    try:
        result = train_and_score(
            warehouse, settings.dbt_schema, card_path=settings.path(card), seed=seed
        )
    except NotEnoughHistory as exc:
        click.echo(f"no model trained: {exc}; the previous scores stay")
        return
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        warehouse.dispose()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.lines():
            click.echo(line)
