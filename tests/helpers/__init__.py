"""What the tests share: plain functions, constants and small harnesses, imported by name.

One module per thing a test drives: `servers` (ports, readiness waits, the local S3 API),
`collector`, `spool` (tap-rudderstack's input), `warehouse` (tap-warehouse's input),
`singer` (a target run as a live process), `mailchimp_target`, `templates`, `meltano`, `watch`
and `browser`. Fixtures that use them live
in the `conftest.py` files, which pytest loads by itself; nothing here is a test.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
