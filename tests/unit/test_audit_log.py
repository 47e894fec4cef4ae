"""The audit chain in a real database: concurrent writers, tampering found by verify."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from jitgate.audit.chain import GENESIS
from jitgate.audit.log import AuditLog, NewEvent
from jitgate.clock import FakeClock
from jitgate.core import Jitgate
from jitgate.store.db import Database


def fill(core: Jitgate, clock: FakeClock, n: int) -> None:
    for i in range(1, n + 1):
        core.audit.record(
            clock.now(), NewEvent("test.event", "tester", agent="agent-1", data={"n": i})
        )


def seqs(core: Jitgate) -> list[int]:
    with core.db.read() as connection:
        return [
            row[0] for row in connection.execute(text("SELECT seq FROM audit_events ORDER BY seq"))
        ]


def test_empty_log_verifies(core: Jitgate) -> None:
    result = core.audit.verify()
    assert result.ok and result.checked == 0
    assert core.audit.head() == (0, GENESIS)


def test_record_returns_contiguous_seqs_and_events_read_back(
    core: Jitgate, clock: FakeClock
) -> None:
    first = core.audit.record(clock.now(), NewEvent("a.one", "tester", data={"x": 1}))
    batch = core.audit.record(
        clock.now(),
        NewEvent("a.two", "tester", agent="agent-1", grant_id="gr-1"),
        NewEvent("b.three", "tester", agent="agent-2", grant_id="gr-1"),
    )
    assert first == [1]
    assert batch == [2, 3]
    assert [e.type for e in core.audit.events()] == ["a.one", "a.two", "b.three"]
    assert [e.seq for e in core.audit.events(after_seq=1)] == [2, 3]
    assert [e.seq for e in core.audit.events(grant_id="gr-1")] == [2, 3]
    assert [e.seq for e in core.audit.events(agent="agent-2")] == [3]
    assert [e.seq for e in core.audit.events(types=["a.one", "b.three"])] == [1, 3]
    assert [e.seq for e in core.audit.events(type_prefix="a.")] == [1, 2]
    assert [e.seq for e in core.audit.events(limit=2, newest_first=True)] == [3, 2]
    event = core.audit.events()[0]
    assert (event.ts, event.actor, event.data, event.prev_hash) == (
        "2026-11-28T12:00:00.000Z",
        "tester",
        {"x": 1},
        GENESIS,
    )
    assert core.audit.head() == (3, core.audit.events()[-1].hash)
    assert core.audit.verify().ok


def test_concurrent_writers_never_fork_the_chain(
    core: Jitgate, database_url: str, clock: FakeClock
) -> None:
    """Four writer threads, two of them on a second Database (as another process would be)."""
    other = Database(database_url)
    try:
        logs = [core.audit, core.audit, AuditLog(other), AuditLog(other)]
        per_writer = 20
        barrier = threading.Barrier(len(logs))
        errors: list[BaseException] = []

        def write(index: int, log: AuditLog) -> None:
            try:
                barrier.wait()
                for i in range(per_writer):
                    events = [NewEvent("test.event", f"writer-{index}", data={"i": i})]
                    if i % 5 == 0:  # some multi-event transactions too
                        events.append(NewEvent("test.extra", f"writer-{index}", data={"i": i}))
                    log.record(clock.now(), *events)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i, log)) for i, log in enumerate(logs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        total = len(logs) * (per_writer + per_writer // 5)
        assert seqs(core) == list(range(1, total + 1))
        result = core.audit.verify()
        assert result.ok, result.problem
        assert (result.checked, result.head_seq) == (total, total)
        assert AuditLog(other).verify().ok
    finally:
        other.dispose()


def test_verify_while_others_write_reports_intact(
    core: Jitgate, database_url: str, clock: FakeClock
) -> None:
    """A verify that runs while events are appended must not mistake new events for tampering."""
    fill(core, clock, 5)
    other = Database(database_url)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        log = AuditLog(other)
        try:
            while not stop.is_set():
                log.record(clock.now(), NewEvent("test.event", "writer"))
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        results = [core.audit.verify() for _ in range(30)]
    finally:
        stop.set()
        writer.join()
        other.dispose()
    assert errors == []
    assert [r.problem for r in results if not r.ok] == []


TAMPERING = {
    "edited": (
        ["UPDATE audit_events SET body = replace(body, 'tester', 'someone') WHERE seq = 3"],
        3,
        "event 3 was altered (hash mismatch)",
    ),
    "edited-hash": (
        ["UPDATE audit_events SET hash = '" + "a" * 64 + "' WHERE seq = 4"],
        4,
        "event 4 was altered (hash mismatch)",
    ),
    "deleted": (
        ["DELETE FROM audit_events WHERE seq = 3"],
        3,
        "event 3 is missing (next stored event is 4)",
    ),
    "truncated": (
        ["DELETE FROM audit_events WHERE seq >= 5"],
        5,
        "the chain ends at event 4 but the head records 6 (tail truncated)",
    ),
    "reordered": (
        [
            "UPDATE audit_events SET seq = -2 WHERE seq = 2",
            "UPDATE audit_events SET seq = 2 WHERE seq = 3",
            "UPDATE audit_events SET seq = 3 WHERE seq = -2",
        ],
        2,
        "event 2 does not link to event 1 (inserted, removed or reordered)",
    ),
    "inserted": (
        [
            "INSERT INTO audit_events (seq, ts, type, actor, body, prev_hash, hash) "
            "SELECT 7, ts, type, actor, body, hash, hash FROM audit_events WHERE seq = 6"
        ],
        7,
        "event 7 was altered (hash mismatch)",
    ),
    "appended-past-head": (
        ["UPDATE audit_head SET seq = 5, hash = (SELECT hash FROM audit_events WHERE seq = 5)"],
        6,
        "the chain head records event 5 but events run to 6",
    ),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampering_with_sql_is_caught_naming_the_seq(
    core: Jitgate, clock: FakeClock, kind: str
) -> None:
    fill(core, clock, 6)
    assert core.audit.verify().ok
    statements, bad_seq, problem = TAMPERING[kind]
    with core.db.write() as connection:
        for statement in statements:
            connection.execute(text(statement))
    result = core.audit.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert result.problem == problem
