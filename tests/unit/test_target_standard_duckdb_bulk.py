"""singer-sdk's standard target tests against target-duckdb-bulk, each checked in DuckDB after.

`get_target_test_class` builds the test class from singer-sdk's standard target tests. singer-sdk
itself only checks that a test raised nothing (or the exception it expects), so every test here
is the standard class with a `validate()` that opens the DuckDB file and compares the tables with
the test's own `.singer` input: one table per stream, its columns, one row per key with the last
record winning (every record when the stream has no key), the last STATE relayed, and no batch
file left behind, on disk or open (the SDK-path runs of TargetRecordMissingKeyProperty and
TargetRecordMissingRequiredProperty found a run that raised mid-batch leaving its batch file
open after `close()`; fixed in the loader). The suite runs on both paths through the loader:

- `fast`: the default settings. A record's raw JSON bytes go straight to the batch file and the
  key check moves to DuckDB (singer_bulk/records.py, `RawRecordTarget`).
- `sdk`: `validate_records: true`. singer-sdk decodes, jsonschema-validates and key-checks every
  record before the sink buffers it.

Every standard test runs as is, except these (and `test_every_standard_target_test_is_covered`
fails when a singer-sdk upgrade brings a test that is neither run nor listed here):

- TargetRecordMissingKeyProperty, `fast` path only: it expects singer-sdk's
  MissingKeyPropertiesError, raised by the per-record key check that the fast path skips by
  design. There the primary key's NOT NULL fails the load instead, so this test asserts that
  refusal: a RuntimeError naming the stream, the table and the column, and no row loaded. The
  `sdk` path runs the standard test as is.
- TargetRecordMissingRequiredProperty (not in singer-sdk's default suite) expects the run to
  succeed. It does on the `fast` path (no validation unless asked: the row lands with a NULL
  `id`, checked); on the `sdk` path singer-sdk's validation raises InvalidRecord (singer-sdk's
  default `fail_on_record_validation_exception`), so there that refusal is asserted.
- TargetMultipleStateMessages (not in singer-sdk's default suite, "fix behavior in SDK to make
  this pass"): it compares the emitted STATE dicts with JSON strings, so it fails for every
  target, and its list is singer-sdk's drain cadence, not the target's. Replaced by a test of
  what the loader promises: with drains forced every 2 records, each STATE written is one it
  received, in order (singer-sdk may repeat one), only once the rows before it are committed,
  and the last one is the input's.

TargetNoPrimaryKeys is followed by singer-sdk's `no_primary_keys_append.singer` (as MeltanoLabs'
targets do): without a key a second run appends rather than replaces.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from singer_sdk.exceptions import InvalidRecord
from singer_sdk.testing import get_target_test_class, target_test_streams
from singer_sdk.testing import target_tests as std
from singer_sdk.testing.runners import TargetTestRunner
from singer_sdk.testing.suites import SingerTestSuite, target_tests
from singer_sdk.testing.templates import TargetTestTemplate
from target_duckdb_bulk.target import TargetDuckDBBulk

SCHEMA = "rudderstack_raw"  # the loader's default_target_schema
PATHS: dict[str, dict[str, Any]] = {"fast": {}, "sdk": {"validate_records": True}}


def stream_file(name: str) -> Any:
    """One of singer-sdk's standard `.singer` inputs."""
    return importlib.resources.files(target_test_streams) / f"{name}.singer"


@dataclass
class Loader:
    """One test's DuckDB file, batch folder and settings (which path through the loader)."""

    path: str
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def batch_dir(self) -> Path:
        return self.root / "batches"

    def config(self, **over: Any) -> dict[str, Any]:
        return {
            "filepath": str(self.db),
            "temp_dir": str(self.batch_dir),
            **PATHS[self.path],
            **over,
        }


class ClosingRunner(TargetTestRunner):
    """singer-sdk's target runner, closing what it opens.

    It keeps every target it makes: a run that raised drops its target with the DuckDB file
    still open in this process, and DuckDB refuses a read-only connection next to a read-write
    one, so they are closed before looking. singer-sdk's runner also leaves its input file open.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.targets: list[Any] = []
        self.syncs = 0  # runs of the target so far
        self.read_after = -1  # the run after which `landed` was read
        self.landed: dict[str, tuple[dict[str, str], list[dict[str, Any]]]] = {}

    def new_target(self) -> Any:
        target = super().new_target()
        self.targets.append(target)
        return target

    def sync_all(self, **kwargs: Any) -> None:
        self.syncs += 1
        try:
            super().sync_all(**kwargs)
        finally:
            if self._input is not None:
                self._input.close()
                self._input = None

    def close_targets(self) -> None:
        for target in self.targets:
            target.close()


def open_files_under(folder: Path) -> list[str]:
    """Files under `folder` (deleted or not) that this process still holds open (Linux)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return []
    found = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # the fd of the listing itself is gone already
            path = os.readlink(fd)
            if path.startswith(f"{folder}/"):
                found.append(path)
    return found


def canonical(value: Any) -> Any:
    """Compare 101 and 101.0 alike (a `number` column is DOUBLE)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{k: canonical(v) for k, v in row.items()} for row in rows]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def expected_from(singer_file: Any) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """What a `.singer` input must leave: per table its columns and rows; the STATEs relayed.

    Table names are written out in the tests where the stream name is not already one
    (camelcase, special characters); here a stream's table is its lower-cased name with any
    other character made `_`.
    """
    tables: dict[str, dict[str, Any]] = {}
    last_state: dict[str, Any] | None = None
    for line in singer_file.read_text(encoding="utf8").splitlines():
        message = json.loads(line)
        table = re.sub(r"[^0-9A-Za-z_]", "_", message.get("stream", "")).lower()
        if message["type"] == "SCHEMA":
            entry = tables.setdefault(table, {"columns": [], "keys": [], "records": []})
            entry["columns"] += [
                c for c in message["schema"]["properties"] if c not in entry["columns"]
            ]
            entry["keys"] = message.get("key_properties") or []
        elif message["type"] == "RECORD":
            tables[table]["records"].append(message["record"])
        elif message["type"] == "STATE":
            last_state = message["value"]
    for entry in tables.values():
        rows = [{c: r.get(c) for c in entry["columns"]} for r in entry["records"]]
        if entry["keys"]:
            by_key = {tuple(r[k] for k in entry["keys"]): r for r in rows}  # the last one wins
            rows = list(by_key.values())
        entry["rows"] = ordered(rows)
    # The loader relays the latest STATE once its rows are loaded; an empty one is not relayed.
    return tables, [last_state] if last_state else []


def read_tables(db: Path) -> dict[str, tuple[dict[str, str], list[dict[str, Any]]]]:
    """Every table of the loader's schema: its columns (name -> DuckDB type) and its rows.

    Rows are dicts with JSON columns parsed, in a fixed order; one read-only connection.
    """
    if not db.exists():
        return {}
    con = duckdb.connect(str(db), read_only=True)
    try:
        columns: dict[str, dict[str, str]] = {}
        for table, column, kind in con.execute(
            "select table_name, column_name, data_type from information_schema.columns"
            " where table_schema = ? order by table_name, ordinal_position",
            [SCHEMA],
        ).fetchall():
            columns.setdefault(table, {})[column] = kind
        found = {}
        for table, kinds in columns.items():
            fetched = con.execute(f'select * from "{SCHEMA}"."{table}"').fetchall()
            rows = [
                {
                    name: json.loads(value) if kind == "JSON" and value is not None else value
                    for (name, kind), value in zip(kinds.items(), row, strict=True)
                }
                for row in fetched
            ]
            found[table] = (kinds, ordered(rows))
        return found
    finally:
        con.close()


class Checked:
    """A standard target test, then a look at the DuckDB file it left."""

    resource: Loader
    runner: ClosingRunner
    singer_filepath: Any

    def tables(self) -> dict[str, dict[str, str]]:
        """Every table of the loader's schema: column name -> DuckDB type, in column order."""
        return {table: columns for table, (columns, _) in self.landed().items()}

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The table's rows as dicts, JSON columns parsed, in a fixed order."""
        return self.landed()[table][1]

    def landed(self) -> dict[str, tuple[dict[str, str], list[dict[str, Any]]]]:
        """Every table's columns and rows, read once after each run of the target."""
        if self.runner.read_after != self.runner.syncs:
            self.runner.close_targets()
            self.runner.landed = read_tables(self.resource.db)
            self.runner.read_after = self.runner.syncs
        return self.runner.landed

    def assert_no_batch_files(self) -> None:
        """The targets, once closed, left no batch file behind, on disk or open."""
        self.runner.close_targets()
        batch_dir = self.resource.batch_dir
        assert not batch_dir.exists() or not any(batch_dir.iterdir())
        assert open_files_under(batch_dir) == []

    def validate(self) -> None:
        """The tables, columns, rows and STATEs that the input calls for, nothing else."""
        expected, states = expected_from(self.singer_filepath)
        tables = self.tables()
        assert set(tables) == set(expected)
        for table, entry in expected.items():
            assert list(tables[table]) == entry["columns"], table
            assert self.rows(table) == entry["rows"], table
        assert self.runner.state_messages == states
        self.assert_no_batch_files()


class Refused(Checked):
    """A standard test that expects the run to fail: nothing of the input may have landed."""

    def validate(self) -> None:
        for table in self.tables():
            assert self.rows(table) == [], table
        assert self.runner.state_messages == []
        self.assert_no_batch_files()


class ArrayData(Checked, std.TargetArrayData):
    def validate(self) -> None:
        super().validate()
        assert self.tables()["test_array_data"] == {"id": "BIGINT", "fruits": "JSON"}


class CamelcaseComplexSchema(Checked, std.TargetCamelcaseComplexSchema):
    def validate(self) -> None:
        super().validate()  # only SCHEMA messages: the second one adds three columns
        columns = self.tables()["forecastingtypetocategory"]
        assert {"NewCamelCasedAttribute", "_attribute_startswith_underscore", "age"} <= set(columns)


class Camelcase(Checked, std.TargetCamelcaseTest):
    def validate(self) -> None:
        super().validate()
        assert self.rows("testcamelcase") == [
            {"Id": "1", "clientName": "Gitter Windows Desktop App"},
            {"Id": "2", "clientName": "Gitter iOS App"},
        ]


class CliPrints(std.TargetCliPrintsTest):
    def validate(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.target.print_about(output_format="json")
        about = json.loads(out.getvalue())
        assert about["name"] == "target-duckdb-bulk"
        assert about["settings"]["required"] == ["filepath"]
        assert {"filepath", "batch_size_rows", "temp_dir"} <= set(about["settings"]["properties"])


class DuplicateRecords(Checked, std.TargetDuplicateRecords):
    def validate(self) -> None:
        super().validate()
        assert self.rows("test_duplicate_records") == [
            {"id": 1, "metric": 100},
            {"id": 2, "metric": 20},
        ]


class EncodedStringData(Checked, std.TargetEncodedStringData):
    def validate(self) -> None:
        super().validate()
        rows = {r["id"]: r["info"] for r in self.rows("test_strings")}
        assert rows[3] == "简单的字串"
        assert rows[6] == 'various " \\ / \n escape sequences'
        assert rows[11] == "Control Characters in string: \x00 A \x01"
        nested = {r["id"]: r["info"]["value"] for r in self.rows("test_strings_in_objects")}
        assert nested[11] == "\x00 A \x01"


class InvalidSchema(Refused, std.TargetInvalidSchemaTest):
    def validate(self) -> None:
        super().validate()
        assert self.tables() == {}


class NoPrimaryKeys(Checked, std.TargetNoPrimaryKeys):
    def test(self) -> None:
        super().test()
        Checked.validate(self)  # the standard input alone
        self.runner.target_input = stream_file("no_primary_keys_append").open(encoding="utf8")
        self.runner.sync_all()

    def validate(self) -> None:
        """After the append input as well: 3 + 5 rows, the first three not replaced."""
        assert sorted((r["id"], r["metric"]) for r in self.rows("test_no_pk")) == [
            (1, 11), (1, 101), (2, 22), (2, 202), (3, 33), (3, 303), (4, 404), (5, 505),
        ]  # fmt: skip
        assert self.runner.state_messages == [{"test_no_pk": 3}, {"test_no_pk": 5}]
        self.assert_no_batch_files()


class OptionalAttributes(Checked, std.TargetOptionalAttributes):
    pass


class PrimaryKeyUpdates(Checked, std.TargetPrimaryKeyUpdates):
    # (the file puts key_properties inside the schema, so the stream has no key: appended)
    pass


class RecordBeforeSchema(Refused, std.TargetRecordBeforeSchemaTest):
    def validate(self) -> None:
        super().validate()
        assert self.tables() == {}


class RecordMissingKeyProperty(Refused, std.TargetRecordMissingKeyProperty):
    def test(self) -> None:
        if self.resource.path == "sdk":
            super().test()  # singer-sdk's key check: MissingKeyPropertiesError
            return
        table = '"rudderstack_raw"."test_record_missing_key_property"'
        with pytest.raises(
            RuntimeError,
            match=rf"stream 'test_record_missing_key_property' into {re.escape(table)} failed:"
            r".*NOT NULL constraint failed: test_record_missing_key_property\.id",
        ):
            self.runner.sync_all()

    def validate(self) -> None:
        super().validate()
        assert list(self.tables()) == ["test_record_missing_key_property"]


class RecordMissingOptionalFields(Checked, std.TargetRecordMissingOptionalFields):
    pass


class RecordMissingRequiredProperty(Checked, std.TargetRecordMissingRequiredProperty):
    def test(self) -> None:
        if self.resource.path == "fast":
            super().test()
            return
        with pytest.raises(InvalidRecord, match="'id' is a required property"):
            super().test()

    def validate(self) -> None:
        rows = self.rows("test_record_missing_required_property")
        assert rows == ([{"id": None, "metric": 3215}] if self.resource.path == "fast" else [])
        self.assert_no_batch_files()


class SchemaNoProperties(Checked, std.TargetSchemaNoProperties):
    def validate(self) -> None:
        super().validate()
        assert self.tables()["test_object_schema_no_properties"] == {"object_store": "JSON"}


class SchemaUpdates(Checked, std.TargetSchemaUpdates):
    def validate(self) -> None:
        super().validate()
        assert list(self.tables()["test_schema_updates"].values()) == [
            "BIGINT", "DOUBLE", "VARCHAR", "BOOLEAN", "JSON", "JSON", "BIGINT",
        ]  # fmt: skip


class SpecialCharsInAttributes(Checked, std.TargetSpecialCharsInAttributes):
    def validate(self) -> None:
        super().validate()
        assert self.rows("test_specialchars_in_attributes") == [
            {
                "_id": "a2e98886",
                "d": {"env": "prod", "agent:type": "desktop", "agent:os:version": "10.13.1"},
            }
        ]


class StateRecordingTarget(TargetDuckDBBulk):
    """The loader, noting at each STATE it writes the highest id committed per stream."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.committed_at_state: list[tuple[dict[str, Any], dict[str, int | None]]] = []

    def _write_state_message(self, state: dict) -> None:
        super()._write_state_message(state)  # waits for the pending load first
        committed = {
            stream: self.connection.execute(
                f'select max(id) from "{SCHEMA}"."{stream}"'
            ).fetchone()[0]
            for stream in state
        }
        self.committed_at_state.append((state, committed))


class StateFollowsLoads(Checked, std.TargetMultipleStateMessages):
    """Replaces TargetMultipleStateMessages (module docstring)."""

    def test(self) -> None:
        self.runner.singer_class = StateRecordingTarget
        self.runner.config = self.resource.config(batch_size_rows=2)
        self.runner.sync_all()

    def validate(self) -> None:
        lines = self.singer_filepath.read_text(encoding="utf8").splitlines()
        received = [m["value"] for m in map(json.loads, lines) if m["type"] == "STATE"]
        written = self.runner.state_messages
        # singer-sdk writes the latest STATE at every drain, so one may repeat; the distinct
        # ones are received ones, in order, and the input's last comes last.
        distinct = [s for i, s in enumerate(written) if i == 0 or s != written[i - 1]]
        assert len(distinct) > 1  # drains in the middle of the input relay STATE too
        assert distinct == [s for s in received if s in distinct]
        assert distinct[-1] == received[-1]
        # Each STATE was written only once the records before it were committed (the ids in
        # this input's STATE are those of the last record of each stream before it).
        (target,) = [t for t in self.runner.targets if isinstance(t, StateRecordingTarget)]
        assert [state for state, _ in target.committed_at_state] == written
        for state, committed in target.committed_at_state:
            for stream, last_id in state.items():
                assert last_id == 0 or (committed[stream] or 0) >= last_id, (state, committed)
        for stream in ("test_multiple_state_messages_a", "test_multiple_state_messages_b"):
            assert [r["id"] for r in self.rows(stream)] == [1, 2, 3, 4, 5, 6]
        self.assert_no_batch_files()


SUITE = SingerTestSuite(
    kind="target",
    tests=[
        ArrayData,
        CamelcaseComplexSchema,
        Camelcase,
        CliPrints,
        DuplicateRecords,
        EncodedStringData,
        InvalidSchema,
        NoPrimaryKeys,
        OptionalAttributes,
        PrimaryKeyUpdates,
        RecordBeforeSchema,
        RecordMissingKeyProperty,
        RecordMissingOptionalFields,
        RecordMissingRequiredProperty,
        SchemaNoProperties,
        SchemaUpdates,
        SpecialCharsInAttributes,
        StateFollowsLoads,
    ],
)

# The config is per test (the `runner` fixture below: a DuckDB file in tmp_path).
StandardTargetTests = get_target_test_class(
    TargetDuckDBBulk,
    custom_suites=[SUITE],
    include_target_tests=False,  # each standard test is in SUITE, with its DuckDB check
    parse_env_config=False,
)


class TestTargetDuckDBBulkStandard(StandardTargetTests):
    """singer-sdk's standard target tests (module docstring), on the fast and the SDK path."""

    @pytest.fixture(params=sorted(PATHS))
    def resource(self, request, tmp_path):
        return Loader(request.param, tmp_path)

    @pytest.fixture
    def runner(self, resource):
        runner = ClosingRunner(TargetDuckDBBulk, config=resource.config(), parse_env_config=False)
        yield runner
        runner.close_targets()


def test_every_standard_target_test_is_covered() -> None:
    """Each standard target test of singer-sdk is run here, as is or as documented above."""
    standard = {
        cls
        for cls in vars(std).values()
        if isinstance(cls, type) and issubclass(cls, TargetTestTemplate) and cls.name
    }
    assert set(target_tests.tests) <= standard
    covered = {base for test in SUITE.tests for base in test.__mro__ if base in standard}
    assert covered == standard
    names = [test.name for test in SUITE.tests]
    assert len(names) == len(set(names))  # one test method per standard test
