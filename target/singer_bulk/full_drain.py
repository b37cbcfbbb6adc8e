"""A full sink drains every sink, so that a STATE message follows a full batch.

Why: singer-sdk writes STATE only from drain_all (end of input, a schema change, the record-age
limit), and drain_one, which the SDK calls for a full sink, writes none. A long run would then
resume from its very first bookmark after a crash. With this, a sink that drained for being full
asks for a full drain (the other sinks loaded, then the latest STATE), which runs after the
message being processed.
"""

from __future__ import annotations

import typing as t

from singer_sdk import Target


class FullDrainTarget(Target):
    """A target that honours request_full_drain() after the current RECORD or BATCH message."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._drain_requested = False

    def request_full_drain(self) -> None:
        """Ask for a full drain (others loaded, then STATE) after a sink drained for being full.

        The SDK only emits STATE from drain_all (end of input, schema change, record age), so a
        long run would otherwise resume from its very first bookmark after a crash.
        """
        self._drain_requested = True

    def drain_replaced_sinks(self) -> None:
        """Load the buffered records of sinks a new SCHEMA replaced, before the new sink's DDL.

        The SDK loads them only at the next full drain, so a new sink that fills up first would
        load its (newer) copies of the same keys before the old sink's: the older copy would
        win, and a column the new schema adds would be null for rows that carried it.
        """
        for sink in list(self._sinks_to_clear):
            self.drain_one(sink)

    def _handle_max_record_age(self) -> None:
        # Runs after every RECORD/BATCH message: the cheapest place to honour a drain request
        # outside the sink's own drain (drain_all from inside drain_one would recurse).
        if self._drain_requested:
            self._drain_requested = False
            self.drain_all()
        super()._handle_max_record_age()
