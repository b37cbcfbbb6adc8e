"""The send ledger on DuckDB and PostgreSQL: claims are atomic, final states stick."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from target_mailchimp_transactional.ledger import Ledger, LedgerEntry
from target_mailchimp_transactional.runs import RunLease

from tests.helpers.servers import wait_until


@pytest.fixture(params=["duckdb", "postgres"])
def ledger(request, tmp_path):
    if request.param == "duckdb":
        led = Ledger(f"duckdb:///{tmp_path / 'ledger.duckdb'}")
    else:
        pg_url = request.getfixturevalue("pg_url")
        schema = request.getfixturevalue("pg_schema")
        led = Ledger(pg_url.replace("postgresql://", "postgresql+psycopg://"), schema)
    yield led
    led.close()


RUN = "host:1:run"


def entry(tid: str, state: str = "claimed", **kw) -> LedgerEntry:
    kw.setdefault("claimed_by", RUN)  # the run whose claim a final state settles
    return LedgerEntry(trigger_id=tid, campaign="c", user_id="u", email="a@b.c", variant="v",
                       template="t", state=state, **kw)  # fmt: skip


def test_transitions_claim_to_final(ledger):
    assert ledger.claim([entry("a"), entry("b")], max_attempts=3, run_id=RUN) == {"a", "b"}
    assert ledger.states(["a", "b", "zzz"]) == {"a": ("claimed", 1), "b": ("claimed", 1)}
    assert {r["claimed_by"] for r in ledger.in_flight()} == {RUN}
    assert ledger.mark_sending(["a", "b"], "another-run") == set()  # only its claimer moves it
    assert ledger.states(["a"]) == {"a": ("claimed", 1)}
    assert ledger.mark_sending(["a", "b"], RUN) == {"a", "b"}
    assert ledger.states(["a", "b"]) == {"a": ("sending", 1), "b": ("sending", 1)}
    ledger.settle([entry("a", "sent", mandrill_id="m1"),
                   entry("b", "rejected", reject_reason="hard-bounce")])  # fmt: skip
    a, b = ledger.get("a"), ledger.get("b")
    assert (a["state"], a["mandrill_id"], a["attempts"]) == ("sent", "m1", 1)
    assert a["sent_at"] is not None
    assert a["created_at"] <= a["updated_at"]
    assert (b["state"], b["reject_reason"], b["sent_at"]) == ("rejected", "hard-bounce", None)
    assert ledger.in_flight() == []


def test_final_states_are_never_claimed_again(ledger):
    ledger.claim([entry(t) for t in "abcd"], max_attempts=3, run_id=RUN)
    ledger.settle([entry("a", "sent"), entry("b", "queued"), entry("c", "invalid"),
                   entry("d", "failed", error="boom")])  # fmt: skip
    assert ledger.claim([entry(t) for t in "abcd"], max_attempts=3, run_id=RUN) == {"d"}
    assert ledger.get("d")["attempts"] == 2
    assert ledger.get("d")["error"] is None
    ledger.settle([entry("d", "failed", error="again")])
    assert ledger.claim([entry("d")], max_attempts=2, run_id=RUN) == set()  # attempts exhausted
    assert ledger.claim([entry("e")], max_attempts=2, run_id=RUN) == {"e"}


def test_claim_is_atomic_between_racing_claimers(ledger):
    ids = [f"t{i}" for i in range(300)]
    won: list[set[str]] = []
    lock = threading.Lock()

    errors: list[Exception] = []

    def claim():
        try:
            got = ledger.claim([entry(t) for t in ids], max_attempts=3, run_id=RUN)
        except Exception as exc:  # DuckDB refuses the conflicting commit outright
            errors.append(exc)
            return
        with lock:
            won.append(got)

    threads = [threading.Thread(target=claim) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(w) for w in won) == 300  # no trigger claimed twice
    assert set().union(*won) == set(ids)
    if ledger.dialect == "postgresql":
        assert errors == []
    assert all(s == ("claimed", 1) for s in ledger.states(ids).values())


def test_record_new_never_overwrites(ledger):
    ledger.claim([entry("a")], max_attempts=3, run_id=RUN)
    ledger.settle([entry("a", "sent")])
    inserted = ledger.record_new([entry("a", "held_out"), entry("b", "held_out")])
    assert inserted == {"b"}
    assert ledger.get("a")["state"] == "sent"
    assert ledger.get("b")["attempts"] == 0


def test_a_settled_or_reclaimed_trigger_is_never_overwritten(ledger):
    """A slow reconciliation must not undo what another run did meanwhile (a resend risk)."""
    ledger.claim([entry("a"), entry("b")], max_attempts=3, run_id="dead-run")
    assert ledger.mark_sending(["a", "b"], "dead-run") == {"a", "b"}
    # run C settles both, claims `a` again and sends it
    assert ledger.settle([entry("a", "failed", claimed_by="dead-run"),
                          entry("b", "failed", claimed_by="dead-run")]) == {"a", "b"}  # fmt: skip
    assert ledger.claim([entry("a")], max_attempts=3, run_id="run-c") == {"a"}
    assert ledger.mark_sending(["a"], "run-c") == {"a"}
    # run B, which read the dead run's rows before C acted, writes its verdict late
    late = [entry("a", "failed", claimed_by="dead-run"), entry("b", "sent", claimed_by="dead-run")]
    assert ledger.settle(late) == set()
    assert ledger.states(["a", "b"]) == {"a": ("sending", 2), "b": ("failed", 1)}
    assert ledger.mark_sending(["a"], "dead-run") == set()  # nor can the old owner send it
    # record() (triggers no run holds) leaves a held row alone too
    ledger.record([entry("a", "held_out")])
    assert ledger.states(["a"]) == {"a": ("sending", 2)}
    assert ledger.settle([entry("a", "sent", mandrill_id="m2", claimed_by="run-c")]) == {"a"}
    assert ledger.get("a")["mandrill_id"] == "m2"


def test_record_settles_only_what_is_still_failed(ledger):
    """A run reads `a` and `b` as failed and re-settles them; meanwhile another run sent `a`.
    Overwriting that `sent` would make `a` sendable again (or hide that it went out)."""
    ledger.claim([entry("a"), entry("b")], max_attempts=3, run_id="run-a")
    ledger.settle(
        [entry("a", "failed", claimed_by="run-a"), entry("b", "failed", claimed_by="run-a")]
    )
    assert ledger.claim([entry("a")], max_attempts=3, run_id="run-b") == {"a"}
    assert ledger.settle([entry("a", "sent", mandrill_id="m1", claimed_by="run-b")]) == {"a"}
    ledger.record(
        [entry("a", "failed", error="late"), entry("b", "invalid"), entry("c", "invalid")]
    )
    assert ledger.states(["a", "b", "c"]) == {
        "a": ("sent", 2), "b": ("invalid", 1), "c": ("invalid", 0)
    }  # fmt: skip
    assert ledger.get("a")["mandrill_id"] == "m1"


def test_record_refuses_sending_and_unknown_states(ledger):
    for in_flight in ("claimed", "sending"):
        with pytest.raises(ValueError, match="not a final ledger state"):
            ledger.record([entry("a", in_flight)])
    with pytest.raises(ValueError, match="not a final ledger state"):
        ledger.record([entry("a", "delivered")])


def test_table_matches_the_contract(ledger):
    ledger.claim([entry("x'; drop table x; --")], max_attempts=3, run_id=RUN)  # values are bound
    row = ledger.get("x'; drop table x; --")
    assert set(row) == {
        "trigger_id", "campaign", "user_id", "email", "variant", "template", "state",
        "reject_reason", "error", "mandrill_id", "attempts", "created_at", "updated_at",
        "sent_at", "due_at", "claimed_by",
    }  # fmt: skip
    assert len(ledger.states([f"n{i}" for i in range(1200)] + ["x'; drop table x; --"])) == 1


def test_schema_name_must_be_an_identifier(tmp_path):
    with pytest.raises(ValueError, match="plain identifier"):
        Ledger(f"duckdb:///{tmp_path / 'l.duckdb'}", "x; drop")


def test_due_at_from_the_claim_and_sent_at_from_the_answer(ledger):
    due = dt.datetime(2026, 3, 10, 11, 0, 0)
    answered = dt.datetime(2026, 3, 10, 11, 0, 4, 250000)
    ledger.claim([entry("a", due_at=due), entry("b", due_at=due)], max_attempts=3, run_id=RUN)
    # the final state carries no due time of its own: the claim's stays
    ledger.settle([entry("a", "sent", mandrill_id="m1", sent_at=answered),
                   entry("b", "rejected", reject_reason="unsub")])  # fmt: skip
    a, b = ledger.get("a"), ledger.get("b")
    assert (a["due_at"], a["sent_at"]) == (due, answered)
    assert (b["due_at"], b["sent_at"]) == (due, None)
    rows = ledger.sent_between(dt.datetime(2026, 3, 10, 11, 0, 4))
    assert [(r["trigger_id"], r["due_at"], r["sent_at"]) for r in rows] == [("a", due, answered)]
    assert ledger.sent_between(dt.datetime(2026, 3, 10, 11, 0, 5)) == []
    assert ledger.sent_between(due, dt.datetime(2026, 3, 10, 11, 0, 4)) == []


def test_a_ledger_from_before_due_at_and_claimed_by_gains_them(tmp_path):
    url = f"duckdb:///{tmp_path / 'old.duckdb'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create schema signalmail_ledger"))
        conn.execute(sa.text(
            "create table signalmail_ledger.send_ledger (trigger_id varchar primary key, "
            "campaign varchar, user_id varchar, email varchar, variant varchar, "
            "template varchar, state varchar not null, reject_reason varchar, error varchar, "
            "mandrill_id varchar, attempts integer not null default 0, "
            "created_at timestamp not null, updated_at timestamp not null, sent_at timestamp)"
        ))  # fmt: skip
        conn.execute(sa.text(
            "insert into signalmail_ledger.send_ledger values ('old', 'c', 'u', 'a@b.c', 'v', "
            "'t', 'sent', null, null, 'm0', 1, now(), now(), now())"
        ))  # fmt: skip
    engine.dispose()
    led = Ledger(url)
    try:
        assert led.get("old")["due_at"] is None
        assert led.get("old")["claimed_by"] is None
        led.claim([entry("new", due_at=dt.datetime(2026, 1, 1))], max_attempts=3, run_id=RUN)
        assert led.get("new")["due_at"] == dt.datetime(2026, 1, 1)
    finally:
        led.close()


def test_controls_are_the_first_sends_accepted_after_a_time(ledger):
    t0 = dt.datetime(2026, 3, 10, 11, 0, 0)
    ledger.claim([entry(t) for t in "abcd"], max_attempts=3, run_id=RUN)
    ledger.settle([
        entry("a", "sent", mandrill_id="ma", sent_at=t0),
        entry("b", "sent", mandrill_id="mb", sent_at=t0 + dt.timedelta(minutes=5)),
        entry("c", "queued", mandrill_id="mc", sent_at=t0 + dt.timedelta(minutes=6)),
        entry("d", "sent", sent_at=t0 + dt.timedelta(minutes=7)),  # no Mandrill id: useless
    ])  # fmt: skip
    after = ledger.controls(t0 + dt.timedelta(minutes=1))
    assert [c["trigger_id"] for c in after] == ["b", "c"]  # queued counts: Mandrill took it
    assert [c["trigger_id"] for c in ledger.controls(t0)] == ["a", "b", "c"]
    assert ledger.controls(t0 + dt.timedelta(minutes=6, seconds=1)) == []


def test_a_run_is_alive_while_its_lease_is_held(ledger):
    first, second = RunLease(ledger.engine), RunLease(ledger.engine)
    try:
        assert first.run_id != second.run_id
        assert first.alive(first.run_id) is True
        assert second.alive(None) is None  # a row claimed before runs had ids
        if ledger.dialect == "postgresql":
            assert second.alive(first.run_id) is True
            first.close()
            assert second.alive(first.run_id) is False
        else:  # one writing process per DuckDB file, one run at a time in it
            assert second.alive(first.run_id) is False
    finally:
        first.close()
        second.close()


def test_a_killed_runs_lease_ends_with_its_process(pg_url, pg_schema):
    url = pg_url.replace("postgresql://", "postgresql+psycopg://")
    with subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, sqlalchemy as sa\n"
            "from target_mailchimp_transactional.runs import RunLease\n"
            f"lease = RunLease(sa.create_engine({url!r}))\n"
            "print(lease.run_id, flush=True)\n"
            "sys.stdin.read()\n"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:  # fmt: skip
        try:
            assert holder.stdout is not None
            run_id = holder.stdout.readline().strip()
            led = Ledger(url, pg_schema)
            lease = RunLease(led.engine)
            assert lease.alive(run_id) is True
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
            wait_until(lambda: lease.alive(run_id) is False, timeout=10, what="the lease released")
            lease.close()
            led.close()
        finally:
            if holder.poll() is None:
                holder.kill()


def test_a_claim_settled_as_never_sent_must_still_be_claimed(ledger):
    """A run taken for dead may mark its claim `sending` and post it after being read."""
    ledger.claim([entry("a"), entry("b")], max_attempts=3, run_id="lost-lease")
    assert ledger.mark_sending(["a"], "lost-lease") == {"a"}
    unsent = [entry("a", "failed", claimed_by="lost-lease"),
              entry("b", "failed", claimed_by="lost-lease")]  # fmt: skip
    assert ledger.settle(unsent, seen=("claimed",)) == {"b"}
    assert ledger.get("a")["state"] == "sending"
    with pytest.raises(ValueError, match="in-flight"):
        ledger.settle(unsent, seen=("sent",))
