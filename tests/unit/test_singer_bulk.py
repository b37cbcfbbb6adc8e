"""singer_bulk, the machinery target-duckdb-bulk and target-postgres-bulk share.

The seams first: both loaders import the shared code only through `singer_bulk`'s public names
(its `__all__`), never a leading-underscore name or a submodule, and singer_bulk imports neither
loader (no import cycle). Then OrderedLoader's two ways of releasing STATE after commit, the one
of each loader (the loaders' own tests check them end to end).
"""

from __future__ import annotations

import ast
import importlib
import threading
from pathlib import Path

import pytest
import singer_bulk
from singer_bulk import OrderedLoader

TARGET_ROOT = Path(__file__).resolve().parents[2] / "target"
LOADERS = ("target_duckdb_bulk", "target_postgres_bulk")


def imports(package: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import statement in a package under target/."""
    found: list[tuple[str, list[str]]] = []
    for path in sorted((TARGET_ROOT / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found.extend((a.name, []) for a in node.names)
    return found


def test_public_names_are_exported_and_resolve():
    assert singer_bulk.__all__
    for name in singer_bulk.__all__:
        assert not name.startswith("_")
        assert getattr(singer_bulk, name) is not None


@pytest.mark.parametrize("loader", LOADERS)
def test_loaders_import_only_public_names_of_singer_bulk(loader):
    shared = [(m, names) for m, names in imports(loader) if m.split(".")[0] == "singer_bulk"]
    assert shared, f"{loader} does not use singer_bulk"
    for module, names in shared:
        assert module == "singer_bulk", f"{loader} imports the submodule {module}"
        assert set(names) <= set(singer_bulk.__all__), f"{loader} imports {names}"


@pytest.mark.parametrize("loader", LOADERS)
def test_loaders_never_import_each_other(loader):
    other = next(x for x in LOADERS if x != loader)
    assert all(m.split(".")[0] != other for m, _ in imports(loader))


def test_singer_bulk_imports_neither_loader():
    roots = {m.split(".")[0] for m, _ in imports("singer_bulk")}
    assert not roots & {*LOADERS, "target_mailchimp_transactional", "signalmail"}
    for name in ("singer_bulk", *LOADERS):
        importlib.import_module(name)  # each imports on its own: no cycle


class Loads:
    """An OrderedLoader with loads the test releases, and the STATE messages it wrote."""

    def __init__(self, *, hold_states: bool) -> None:
        self.written: list[dict] = []
        self.loader = OrderedLoader(
            self.written.append, thread_name_prefix="test-load", hold_states=hold_states
        )

    def submit_blocked(self, fail: bool = False) -> threading.Event:
        release = threading.Event()

        def load() -> None:
            release.wait(10)
            if fail:
                msg = "load failed"
                raise RuntimeError(msg)

        self.loader.submit(load)
        return release


def test_state_waits_for_the_pending_load_on_the_writing_thread():
    loads = Loads(hold_states=False)
    release = loads.submit_blocked()
    writer = threading.Thread(target=loads.loader.write_state, args=({"a": 1},))
    writer.start()
    writer.join(0.2)
    assert writer.is_alive()
    assert loads.written == []
    release.set()
    writer.join(10)
    assert loads.written == [{"a": 1}]
    loads.loader.write_state({"a": 1})  # written again: no deduplication in this mode
    assert loads.written == [{"a": 1}, {"a": 1}]
    loads.loader.shutdown()


def test_a_failed_load_raises_once_without_held_states():
    loads = Loads(hold_states=False)
    loads.submit_blocked(fail=True).set()
    with pytest.raises(RuntimeError, match="load failed"):
        loads.loader.wait()
    loads.loader.write_state({"a": 1})
    assert loads.written == [{"a": 1}]
    loads.loader.shutdown()


def test_held_state_is_written_when_its_load_commits():
    loads = Loads(hold_states=True)
    release = loads.submit_blocked()
    loads.loader.write_state({"a": 1})  # returns at once
    loads.loader.write_state({"a": 2})
    assert loads.written == []
    release.set()
    loads.loader.wait()
    assert loads.written == [{"a": 1}, {"a": 2}]
    loads.loader.write_state({"a": 2})  # equal to the last one written: not written again
    loads.loader.write_state({"a": 3})  # nothing pending: written at once
    assert loads.written == [{"a": 1}, {"a": 2}, {"a": 3}]
    loads.loader.shutdown()


def test_a_failed_load_holds_every_later_state():
    loads = Loads(hold_states=True)
    release = loads.submit_blocked(fail=True)
    loads.loader.write_state({"a": 1})
    release.set()
    for _ in range(2):
        with pytest.raises(RuntimeError, match="load failed"):
            loads.loader.wait()
    loads.loader.write_state({"a": 2})
    assert loads.written == []
    loads.loader.shutdown()
