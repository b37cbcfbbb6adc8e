"""singer-sdk's standard target tests against target-mailchimp-transactional and the sandbox.

The target is a reverse-ETL sender, not a loader: it accepts only streams that carry the
`email_triggers` contract (docs/contracts.md section 4; it cannot send without `trigger_id`,
`campaign` and `email`) and sends each trigger once through Mandrill, recorded in its send
ledger (docs/activation.md). Here it talks to `signalmail sandbox` (the fake Mandrill, on
127.0.0.1, one per module) with a DuckDB ledger per test. singer-sdk only checks that a test
raised nothing (or the exception it expects); every test here then checks what reached the
sandbox and the ledger.

Run as is, then checked that nothing was sent and no ledger was opened (nothing claimed):

- TargetCliPrintsTest (and: the API key in the config appears nowhere in `--about`)
- TargetInvalidSchemaTest
- TargetRecordBeforeSchemaTest

Do not apply: all the other standard target tests feed streams of singer-sdk's own
(`test_array_data`, `TestCamelcase`, `test_strings`...) whose schemas lack the contract's columns.
Storing arbitrary rows is a loader's job; an email sent for one of them would be a bug. The
right behaviour is to refuse the stream at its SCHEMA, with an error naming the stream and the
missing columns, before anything is sent. For each of these tests, the same standard input runs
and the test asserts exactly that refusal, no STATE relayed, nothing in the sandbox and no
ledger: TargetArrayData, TargetCamelcaseComplexSchema, TargetCamelcaseTest,
TargetDuplicateRecords, TargetEncodedStringData, TargetNoPrimaryKeys, TargetOptionalAttributes,
TargetPrimaryKeyUpdates, TargetRecordMissingKeyProperty, TargetRecordMissingOptionalFields,
TargetSchemaNoProperties, TargetSchemaUpdates, TargetSpecialCharsInAttributes, and the two that
singer-sdk leaves out of its default suite, TargetMultipleStateMessages and
TargetRecordMissingRequiredProperty. `test_every_standard_target_test_is_covered` fails when a
singer-sdk upgrade brings a test that is in neither list.

What the inapplicable tests are about, on the contract's own stream instead (a custom suite):
a trigger repeated within a run and in the next run is sent once (duplicate records); a record
without `trigger_id` stops the run with singer-sdk's MissingKeyPropertiesError before anything is
sent (missing key property); a new `email_triggers` SCHEMA in the middle of a run sends the
triggers on both sides of it once, and each STATE is relayed only once the sends before it are
recorded in the ledger (schema updates, multiple state messages).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from singer_sdk.exceptions import MissingKeyPropertiesError
from singer_sdk.testing import get_target_test_class
from singer_sdk.testing import target_tests as std
from singer_sdk.testing.runners import TargetTestRunner
from singer_sdk.testing.suites import SingerTestSuite, target_tests
from singer_sdk.testing.templates import TargetTestTemplate
from target_mailchimp_transactional.target import TargetMailchimpTransactional

from tests.helpers.mailchimp_target import (
    API_KEY,
    SCHEMA,
    ledger_rows,
    sandbox_messages,
    seed_templates,
    singer_lines,
    target_config,
    trigger,
)

run_sandbox = pytest.importorskip("signalmail.sandbox.testing").run_sandbox

# docs/contracts.md section 4: the columns the target cannot send an email without
CONTRACT_COLUMNS = ("trigger_id", "campaign", "email")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("sandbox")
    with run_sandbox(root, api_keys=[API_KEY], search_calls_per_minute=600) as running:
        seed_templates(running)
        yield running


@dataclass
class Mandrill:
    """One test's view of the shared sandbox, and its own ledger."""

    sandbox: Any
    root: Path
    before: set[str] = field(init=False)  # ids of the messages sent by earlier tests

    def __post_init__(self) -> None:
        self.before = {m["_id"] for m in sandbox_messages(self.sandbox)}

    @property
    def config(self) -> dict[str, Any]:
        return target_config(self.sandbox, self.root)

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.duckdb"

    def sent(self) -> list[str]:
        """The trigger ids of the messages this test's runs sent, sorted."""
        return sorted(
            m["metadata"]["trigger_id"]
            for m in sandbox_messages(self.sandbox)
            if m["_id"] not in self.before
        )

    def ledger(self) -> dict[str, dict[str, Any]]:
        return ledger_rows(self.config)


class ClosingRunner(TargetTestRunner):
    """singer-sdk's target runner, ending a failed run as the target's own `listen` does.

    singer-sdk's runner calls `process_lines` directly, so a run that raised would keep its
    lease and its ledger open; the target's `listen` abandons the dispatcher then. The runner
    also leaves its input file open.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.targets: list[Any] = []

    def new_target(self) -> Any:
        target = super().new_target()
        self.targets.append(target)
        return target

    def sync_all(self, **kwargs: Any) -> None:
        try:
            super().sync_all(**kwargs)
        except BaseException:
            target = self.targets[-1]
            if "dispatcher" in target.__dict__:
                target.dispatcher.abandon()
            raise
        finally:
            if self._input is not None:
                self._input.close()
                self._input = None


class NothingSent:
    """A standard test, then: no STATE relayed, no email sent, no ledger opened."""

    resource: Mandrill
    runner: ClosingRunner

    def validate(self) -> None:
        assert self.runner.state_messages == []
        assert self.resource.sent() == []
        assert not self.resource.ledger_path.exists()  # not opened: nothing claimed


# --- the standard tests that apply, as is ------------------------------------------------------


class CliPrints(NothingSent, std.TargetCliPrintsTest):
    def validate(self) -> None:
        text, about = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(text):
            self.target.print_version()
            self.target.print_about()
        with contextlib.redirect_stdout(about):
            self.target.print_about(output_format="json")
        settings = json.loads(about.getvalue())["settings"]["properties"]
        assert settings["api_key"]["secret"] is True
        assert {"base_url", "campaigns_dir", "ledger_url", "dry_run"} <= set(settings)
        assert "target-mailchimp-transactional" in text.getvalue()
        assert API_KEY not in text.getvalue() + about.getvalue()  # the configured key
        super().validate()


class InvalidSchema(NothingSent, std.TargetInvalidSchemaTest):
    pass


class RecordBeforeSchema(NothingSent, std.TargetRecordBeforeSchemaTest):
    pass


# --- the standard tests that do not apply: their streams are refused ---------------------------


class RefusedStream(NothingSent):
    """The standard input's first stream is not email_triggers: refused at its SCHEMA."""

    singer_filepath: Any

    def test(self) -> None:
        lines = self.singer_filepath.read_text(encoding="utf8").splitlines()
        first = next(m for m in map(json.loads, lines) if m["type"] == "SCHEMA")
        missing = [c for c in CONTRACT_COLUMNS if c not in first["schema"]["properties"]]
        assert missing, "this standard input would be an email_triggers stream"
        with pytest.raises(ValueError, match=r"not an email_triggers stream") as refused:
            self.runner.sync_all()
        assert str(refused.value) == (
            f"stream {first['stream']!r} is not an email_triggers stream (docs/contracts.md"
            f" section 4): its schema lacks {', '.join(missing)}"
        )


NOT_APPLICABLE = [
    std.TargetArrayData,
    std.TargetCamelcaseComplexSchema,
    std.TargetCamelcaseTest,
    std.TargetDuplicateRecords,
    std.TargetEncodedStringData,
    std.TargetMultipleStateMessages,
    std.TargetNoPrimaryKeys,
    std.TargetOptionalAttributes,
    std.TargetPrimaryKeyUpdates,
    std.TargetRecordMissingKeyProperty,
    std.TargetRecordMissingOptionalFields,
    std.TargetRecordMissingRequiredProperty,
    std.TargetSchemaNoProperties,
    std.TargetSchemaUpdates,
    std.TargetSpecialCharsInAttributes,
]
REFUSALS = [type(f"{cls.__name__}Refused", (RefusedStream, cls), {}) for cls in NOT_APPLICABLE]


# --- the same concerns on the contract's stream -----------------------------------------------


def singer_input(*messages: dict[str, Any]) -> io.StringIO:
    return io.StringIO("".join(json.dumps(m) + "\n" for m in messages))


def record(row: dict[str, Any]) -> dict[str, Any]:
    return {"type": "RECORD", "stream": "email_triggers", "record": row}


class DuplicateTriggers(TargetTestTemplate):
    """A trigger repeated in a run, and the whole input again in a second run: one email each."""

    name = "email_triggers_duplicate_records"

    def test(self) -> None:
        rows = [trigger("dup-1"), trigger("dup-2"), trigger("dup-1", first_name="Again")]
        rows.append(trigger("dup-1"))
        self.runner.input_io = io.StringIO(singer_lines(rows))
        self.runner.sync_all()
        assert self.resource.sent() == ["cart_abandonment:dup-1", "cart_abandonment:dup-2"]
        self.runner.input_io = io.StringIO(singer_lines(rows))
        self.runner.sync_all()

    def validate(self) -> None:
        assert self.resource.sent() == ["cart_abandonment:dup-1", "cart_abandonment:dup-2"]
        ledger = self.resource.ledger()
        assert {tid: row["state"] for tid, row in ledger.items()} == {
            "cart_abandonment:dup-1": "sent",
            "cart_abandonment:dup-2": "sent",
        }


class TriggerWithoutKey(TargetTestTemplate):
    """An email_triggers record without trigger_id: the run stops before anything is sent."""

    name = "email_triggers_record_missing_key_property"

    def test(self) -> None:
        keyless = trigger("nokey-2")
        del keyless["trigger_id"]
        self.runner.input_io = io.StringIO(singer_lines([trigger("nokey-1"), keyless]))
        with pytest.raises(MissingKeyPropertiesError, match=r"\['trigger_id'\]"):
            self.runner.sync_all()

    def validate(self) -> None:
        assert self.resource.sent() == []
        assert not self.resource.ledger_path.exists()


class StateRecordingTarget(TargetMailchimpTransactional):
    """The target, noting at each STATE it writes the ledger's state of the triggers before it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ledger_at_state: list[tuple[dict[str, Any], dict[str, tuple[str, int]]]] = []

    def _write_state_message(self, state: dict) -> None:
        super()._write_state_message(state)  # flushes the sends in flight first
        before = [f"cart_abandonment:upd-{n}" for n in range(1, state["sent_through"] + 1)]
        dispatcher = self.__dict__.get("dispatcher")
        recorded = dispatcher.ledger.states(before) if dispatcher else {}
        self.ledger_at_state.append((state, recorded))


class TriggerSchemaUpdates(TargetTestTemplate):
    """A new email_triggers SCHEMA (one more column) mid-run; STATE between the triggers."""

    name = "email_triggers_schema_updates"

    def test(self) -> None:
        wider = json.loads(json.dumps(SCHEMA))
        wider["schema"]["properties"]["segment"] = {"type": ["string", "null"]}
        self.runner.singer_class = StateRecordingTarget
        self.runner.input_io = singer_input(
            SCHEMA,
            record(trigger("upd-1")),
            record(trigger("upd-2")),
            {"type": "STATE", "value": {"sent_through": 2}},
            wider,
            record(trigger("upd-3", segment="vip")),
            record(trigger("upd-4", segment=None)),
            {"type": "STATE", "value": {"sent_through": 4}},
        )
        self.runner.sync_all()

    def validate(self) -> None:
        expected = [f"cart_abandonment:upd-{n}" for n in range(1, 5)]
        assert self.resource.sent() == expected
        assert {tid: row["state"] for tid, row in self.resource.ledger().items()} == dict.fromkeys(
            expected, "sent"
        )
        written = self.runner.state_messages
        assert written
        assert written[-1] == {"sent_through": 4}
        (target,) = [t for t in self.runner.targets if isinstance(t, StateRecordingTarget)]
        assert [state for state, _ in target.ledger_at_state] == written
        for state, recorded in target.ledger_at_state:  # each STATE follows its recorded sends
            assert len(recorded) == state["sent_through"], (state, recorded)
            assert {s for s, _ in recorded.values()} == {"sent"}, (state, recorded)


SUITE = SingerTestSuite(
    kind="target",
    tests=[
        CliPrints,
        InvalidSchema,
        RecordBeforeSchema,
        *REFUSALS,
        DuplicateTriggers,
        TriggerWithoutKey,
        TriggerSchemaUpdates,
    ],
)

# The config is per test (the `runner` fixture below: the module's sandbox, a ledger in tmp_path).
StandardTargetTests = get_target_test_class(
    TargetMailchimpTransactional,
    custom_suites=[SUITE],
    include_target_tests=False,  # the applicable standard tests are in SUITE, with their checks
    parse_env_config=False,
)


class TestTargetMailchimpTransactionalStandard(StandardTargetTests):
    """singer-sdk's standard target tests (module docstring) against the sandbox."""

    @pytest.fixture
    def resource(self, sandbox, tmp_path):
        return Mandrill(sandbox, tmp_path)

    @pytest.fixture
    def runner(self, resource):
        return ClosingRunner(
            TargetMailchimpTransactional, config=resource.config, parse_env_config=False
        )


def test_every_standard_target_test_is_covered() -> None:
    """Each standard target test of singer-sdk runs here: as is, or as a refusal."""
    standard = {
        cls
        for cls in vars(std).values()
        if isinstance(cls, type) and issubclass(cls, TargetTestTemplate) and cls.name
    }
    assert set(target_tests.tests) <= standard
    as_is = {std.TargetCliPrintsTest, std.TargetInvalidSchemaTest, std.TargetRecordBeforeSchemaTest}
    covered = {base for test in SUITE.tests for base in test.__mro__ if base in standard}
    assert covered == standard
    assert as_is.isdisjoint(NOT_APPLICABLE)
    assert as_is | set(NOT_APPLICABLE) == standard
    names = [test.name for test in SUITE.tests]
    assert len(names) == len(set(names))  # one test method per standard test
    assert not any(re.search("[^a-z_]", n) for n in names)
