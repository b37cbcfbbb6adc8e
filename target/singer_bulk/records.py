"""The per-RECORD path of a bulk loader: a record's raw JSON bytes go straight to its sink.

Why: a bulk loader lets its database parse, type, deduplicate and upsert each batch, so the
SDK's per-record work (decode, copy, stream map, validation, re-encode) would be most of its
Python time. MsgspecBytesReader (reader.py) keeps a RECORD's record as msgspec.Raw;
RawRecordTarget hands those bytes to the stream's sink whenever nothing in between could
change the record (no stream map, flattening, metadata columns or validation), which is how
tap-rudderstack's output is loaded. Any other record is decoded and takes the SDK's own path,
unchanged. The SDK's per-record key check moves to the database: each loader's docs say what a
record without its key does there.
"""

from __future__ import annotations

import abc
import typing as t

import msgspec
from singer_sdk import Target
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.sinks import BatchSink


class RawRecordSink(BatchSink):
    """A batch sink that takes a record as its raw JSON bytes (the fast path) or as a dict.

    On the SDK's path too it skips the per-record date-time parsing: the database parses them
    in bulk. `batch_size_rows` is read once, since the fast path asks `is_full` after every
    record.
    """

    def __init__(self, target: Target, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(target, *args, **kwargs)
        # Read once: is_full asks for it after every record.
        self._max_size = int(self.config.get("batch_size_rows") or 100_000)

    @property
    def max_size(self) -> int:
        """Records per batch: the `batch_size_rows` setting (the SDK's own default is 10,000)."""
        return self._max_size

    def _validate_and_parse(self, record: dict) -> dict:
        """Skip the SDK's per-record date-time parsing: the database parses them in bulk.

        With validate_records on, the SDK's jsonschema validation still runs first.
        """
        if self._validator is not None:
            return super()._validate_and_parse(record)
        return record

    def raw_object(self, raw: msgspec.Raw) -> bytes:
        """Give a raw record's JSON text, stripped; a ValueError if it is not an object.

        The record is not parsed: its first and last bytes are the only check, and the
        database refuses anything else that is wrong with it when the batch loads.
        """
        body = bytes(raw).strip()
        if not body.startswith(b"{") or not body.endswith(b"}"):
            msg = f"stream {self.stream_name!r}: a RECORD's record is not an object: {body[:200]!r}"
            raise ValueError(msg)
        return body

    @abc.abstractmethod
    def process_raw_record(self, raw: msgspec.Raw, context: dict) -> None:
        """Append a record given as its raw JSON bytes to the batch (as process_record does)."""


class RawRecordTarget(Target):
    """A target whose RECORD messages skip the SDK's per-record work when nothing needs it.

    Its sinks are RawRecordSinks and its message reader keeps records raw (MsgspecBytesReader).
    """

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_sinks: dict[str, RawRecordSink] = {}

    def _process_record_message(self, message_dict: dict) -> None:
        """RECORD: on the fast path the record's raw JSON goes straight to the sink's batch.

        The fast path applies when the stream has no stream map, flattening, metadata columns or
        validation. It skips the SDK's per-record decode, copy, map and re-encode; the key check
        moves to the database. Anything else is decoded and goes through the SDK's own path.
        """
        record = message_dict.get("record")
        if not isinstance(record, msgspec.Raw):
            super()._process_record_message(message_dict)
            return
        sink = self._fast_sink(message_dict.get("stream"))
        if sink is None:
            message_dict["record"] = msgspec.json.decode(record)
            super()._process_record_message(message_dict)
            return
        context = sink._get_context({})
        sink.tally_record_read()
        sink.process_raw_record(record, context)
        sink.record_counter_metric.increment()
        if sink.is_full:
            self.drain_one(sink)
        self._handle_max_record_age()

    def _fast_sink(self, stream_name: object) -> RawRecordSink | None:
        """Give the stream's active sink if its records take the fast path, else None."""
        if not isinstance(stream_name, str):
            return None
        sink = self._sinks_active.get(stream_name)
        if sink is None:
            return None
        known = self._fast_sinks.get(stream_name)
        if known is sink:
            return known
        # Decided once per sink (a new SCHEMA makes a new sink and a new decision).
        if not isinstance(sink, RawRecordSink) or not self._fast_path(stream_name, sink):
            return None
        self._fast_sinks[stream_name] = sink
        return sink

    def _process_batch_message(self, message_dict: dict) -> None:
        """BATCH: refused for a stream whose records the target must change or check.

        A BATCH file is loaded as it is, by the database: a stream map (a column hashed or
        dropped, a `__filter__`), flattening or `validate_records` would silently not apply,
        and a map that hashes an address would load it in the clear. (singer-sdk's own
        targets have the same gap.) The tap can send RECORD messages instead, or map itself.
        """
        stream = message_dict.get("stream")
        sink = self._sinks_active.get(stream) if isinstance(stream, str) else None
        if not (isinstance(stream, str) and self._records_unmapped(stream)) or (
            getattr(sink, "_validator", None) is not None
        ):
            msg = (
                f"BATCH message for stream {stream!r} refused: its files would load as they are,"
                " without the stream map, flattening or record validation configured for it."
                " Run the tap without batch_config (RECORD messages), or apply the map in the tap"
            )
            raise ValueError(msg)
        super()._process_batch_message(message_dict)

    def _records_unmapped(self, stream_name: str) -> bool:
        """Whether the stream's records reach its sink as sent: no stream map, no flattening."""
        maps = self.mapper.stream_maps.get(stream_name)
        return (
            maps is not None
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and maps[0].stream_alias == stream_name
            and not maps[0].flattening_enabled
        )

    def _fast_path(self, stream_name: str, sink: RawRecordSink) -> bool:
        return (
            self._records_unmapped(stream_name)
            and not sink.include_sdc_metadata_properties
            and sink._validator is None
        )
