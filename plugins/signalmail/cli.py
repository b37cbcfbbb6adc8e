"""One `signalmail` entry point; each subcommand lives beside the code it drives.

Subcommands are imported lazily so `signalmail --help` stays fast and one subcommand's optional
dependencies (uvicorn for `collect`, say) never slow down or break another.
"""

from __future__ import annotations

import importlib

import click

#: subcommand name -> "module:attribute" of its click command
SUBCOMMANDS: dict[str, str] = {
    "collect": "signalmail.collector.cli:collect",
    "simulate": "signalmail.simulate.cli:simulate",
    "replay": "signalmail.replay.cli:replay",
    "sandbox": "signalmail.sandbox.cli:sandbox",
    "templates": "signalmail.templates:templates",
    "demo": "signalmail.demo:demo",
    "watch": "signalmail.watch.cli:watch",
    "report": "signalmail.report.cli:report",
    "forget": "signalmail.privacy.cli:forget",
    "intent": "signalmail.intent.cli:intent",
    "retention": "signalmail.privacy.cli:retention",
    "storefront": "signalmail.storefront.cli:storefront",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand only when it is invoked or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Name every subcommand without importing any of them."""
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import the module behind `cmd_name` now that it is needed."""
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup)
@click.version_option(package_name="signalmail")
def main() -> None:
    """Signalmail: behavioral events in, well-timed personalized email out."""
