"""`signalmail templates`: lint, sync and preview the Mandrill templates campaigns send with.

lint.py checks templates against campaigns, sync.py pushes starter templates as drafts,
preview.py renders real triggers; source.py fetches template code, cli.py is the click group.
"""

from __future__ import annotations

from signalmail.templates.cli import templates

__all__ = ["templates"]
