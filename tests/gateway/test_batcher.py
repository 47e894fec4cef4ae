"""Group commit: durable before the waiter resumes, guards refuse inside the transaction.

Every contract test runs for each writer the gateway can use on the test's database: on
SQLite the event-loop writer in both durabilities and the thread writer; on PostgreSQL the
thread writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from jitgate.audit.batcher import AuditWriter
from jitgate.audit.log import NewEvent
from jitgate.audit.loop_writer import LoopAuditWriter
from jitgate.audit.thread_writer import AuditBatcher
from jitgate.core import Jitgate
from jitgate.errors import AuditNotDurable, AuditUnavailable
from jitgate.gateway.lookup import GrantLookup, refreshed
from jitgate.store.driver import DriverTxn

MakeWriter = Callable[[Jitgate], AuditWriter]

WRITERS: dict[str, MakeWriter] = {
    "loop-fsync": lambda core: LoopAuditWriter(core.db, core.clock, durability="fsync"),
    "loop-os": lambda core: LoopAuditWriter(core.db, core.clock, durability="os"),
    "thread": lambda core: AuditBatcher(core.db, core.clock),
}


@pytest.fixture(params=sorted(WRITERS))
def make_writer(request: pytest.FixtureRequest, core: Jitgate) -> MakeWriter:
    if request.param.startswith("loop") and core.db.dialect != "sqlite":
        pytest.skip("the event-loop writer is SQLite's")
    return WRITERS[request.param]


class Refused(Exception):
    pass


def run_with(writer: AuditWriter, make_coro):  # type: ignore[no-untyped-def]
    """Run ``make_coro()`` on a fresh event loop (in a thread of its own, whatever loop the
    test process may have running) with ``writer`` started, then stop it."""

    async def main():  # type: ignore[no-untyped-def]
        writer.start()
        try:
            return await make_coro()
        finally:
            writer.stop()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def test_waiters_resume_only_after_their_events_are_committed(
    core: Jitgate, make_writer: MakeWriter
) -> None:
    writer = make_writer(core)
    seen_by_others: list[int] = []

    async def many() -> list[int]:
        async def one(i: int) -> int:
            seq = await writer.record(NewEvent("call.allowed", "agent:a", data={"n": i}))
            # Another connection sees the event as soon as its waiter resumes.
            seen_by_others.append(core.audit.head()[0] >= seq)
            return seq

        return await asyncio.gather(*(one(i) for i in range(50)))

    seqs = run_with(writer, many)
    assert sorted(seqs) == list(range(1, 51))
    assert all(seen_by_others)
    assert core.audit.count() == 50
    assert core.audit.verify().ok
    assert writer.batches < 50  # grouped: fewer transactions than events


def test_a_guard_that_raises_refuses_only_its_own_event(
    core: Jitgate, make_writer: MakeWriter
) -> None:
    writer = make_writer(core)

    def refuse(txn: DriverTxn) -> None:
        raise Refused("grant was revoked")

    async def mixed() -> list[object]:
        return await asyncio.gather(
            writer.record(NewEvent("call.allowed", "agent:a", data={"n": 1})),
            writer.record(NewEvent("call.allowed", "agent:b", data={"n": 2}), guard=refuse),
            writer.record(NewEvent("call.allowed", "agent:c", data={"n": 3})),
            return_exceptions=True,
        )

    results = run_with(writer, mixed)
    assert isinstance(results[1], Refused)
    assert [e.actor for e in core.audit.events()] == ["agent:a", "agent:c"]
    assert core.audit.verify().ok


def test_a_guard_sees_state_committed_before_it(core: Jitgate, make_writer: MakeWriter) -> None:
    _, token = core.identity.create_agent("bot")
    principal = core.identity.authenticate(token)
    grant, _ = core.grants.request(
        principal, actions=["s3:GetObject"], resources=["arn:aws:s3:::b/k"], reason="r"
    )
    core.grants.revoke(principal, grant.id)
    writer = make_writer(core)

    def still_active(txn: DriverTxn) -> None:
        (status,) = txn.one("SELECT status FROM grants WHERE id = ?", (grant.id,))
        if status != "active":
            raise Refused(status)

    with pytest.raises(Refused, match="revoked"):
        run_with(
            writer,
            lambda: writer.record(
                NewEvent("call.allowed", "agent:bot", grant_id=grant.id), guard=still_active
            ),
        )
    assert core.audit.events(grant_id=grant.id, types=["call.allowed"]) == []


def test_when_the_log_cannot_be_written_every_waiter_fails(
    core: Jitgate, make_writer: MakeWriter
) -> None:
    with core.db.write() as connection:
        connection.execute(text("DROP TABLE audit_events"))
    writer = make_writer(core)

    async def two() -> list[object]:
        return await asyncio.gather(
            writer.record(NewEvent("call.allowed", "agent:a")),
            writer.record(NewEvent("call.allowed", "agent:b")),
            return_exceptions=True,
        )

    results = run_with(writer, two)
    assert all(isinstance(result, AuditUnavailable) for result in results)
    assert writer.failures >= 1


def test_outcomes_nobody_waits_for_are_written_in_order(
    core: Jitgate, make_writer: MakeWriter
) -> None:
    writer = make_writer(core)

    async def calls() -> None:
        for i in range(3):
            await writer.record(NewEvent("call.allowed", "agent:a", data={"n": i}))
            writer.record_nowait(NewEvent("call.completed", "agent:a", data={"n": i}))
        await asyncio.sleep(0.05)  # the last outcome lingers for company, then is written

    run_with(writer, calls)
    events = core.audit.events()
    assert [(e.type, e.data["n"]) for e in events] == [
        (kind, n) for n in range(3) for kind in ("call.allowed", "call.completed")
    ]


def test_stop_writes_what_is_still_pending(core: Jitgate, make_writer: MakeWriter) -> None:
    writer = make_writer(core)

    async def leave_one() -> None:
        writer.record_nowait(NewEvent("call.completed", "agent:a"))

    run_with(writer, leave_one)
    assert [e.type for e in core.audit.events()] == ["call.completed"]


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never came true")


def test_outcomes_whose_write_failed_are_written_once_the_log_is_back(
    core: Jitgate, make_writer: MakeWriter
) -> None:
    """A failed batch answers its waiters with 503, but the outcomes of calls already forwarded
    are not dropped: they are tried again until the log can be written."""
    writer = make_writer(core)
    writer.retry_seconds = 0.01  # type: ignore[attr-defined]

    def move_log(old: str, new: str) -> None:
        with core.db.write() as connection:
            connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))

    async def outage() -> object:
        move_log("audit_events", "audit_events_away")
        writer.record_nowait(NewEvent("call.completed", "agent:a", data={"n": 1}))
        try:
            await writer.record(NewEvent("call.allowed", "agent:b"))
        except AuditUnavailable as exc:
            refused: object = exc
        else:
            refused = None
        await until(lambda: writer.failures >= 2)  # the outcome was tried again, failed again
        move_log("audit_events_away", "audit_events")
        await until(lambda: core.audit.count() > 0)
        return refused

    refused = run_with(writer, outage)
    assert isinstance(refused, AuditUnavailable)
    assert [(e.type, e.data) for e in core.audit.events()] == [("call.completed", {"n": 1})]
    assert core.audit.verify().ok


def test_a_retry_keeps_its_schedule_while_new_outcomes_keep_failing(
    core: Jitgate, make_writer: MakeWriter
) -> None:
    """Each failed batch used to set the one retry time anew: outcomes failing every 20 ms
    postponed the first one's retry for as long as the outage lasted, and a fresh failure
    pulled a long-waiting retry forward (found in re-review)."""
    writer = make_writer(core)
    writer.retry_seconds = 0.1  # type: ignore[attr-defined]  # then 0.2, 0.4, ...

    def move_log(old: str, new: str) -> None:
        with core.db.write() as connection:
            connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))

    async def outage() -> int:
        move_log("audit_events", "audit_events_away")
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.2
            n = 0
            while loop.time() < end:
                writer.record_nowait(NewEvent("call.completed", "agent:a", data={"n": n}))
                n += 1
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)
            retried = writer._retry  # type: ignore[attr-defined]
            return next(item.attempts for item in retried if item.event.data == {"n": 0})
        finally:
            move_log("audit_events_away", "audit_events")

    attempts = run_with(writer, outage)
    assert attempts >= 3  # tried at about 0, 0.1, 0.3 and 0.7 s


def test_an_outcome_that_can_never_be_written_is_given_up_and_fails_no_waiter(
    core: Jitgate, make_writer: MakeWriter
) -> None:
    writer = make_writer(core)
    writer.retry_seconds = 0.001  # type: ignore[attr-defined]

    async def poisoned() -> list[int]:
        writer.record_nowait(NewEvent("call.completed", "agent:a", data={"x": object()}))
        await until(lambda: writer.failures >= 1)
        seqs = []
        for i in range(5):  # while the bad event is being retried, waiters' batches go through
            seqs.append(await writer.record(NewEvent("call.allowed", "agent:a", data={"n": i})))
            await asyncio.sleep(0.01)
        await until(lambda: writer.given_up >= 1)  # type: ignore[attr-defined]
        return seqs

    assert run_with(writer, poisoned) == [1, 2, 3, 4, 5]
    assert [e.type for e in core.audit.events()] == ["call.allowed"] * 5
    assert writer.given_up == 1  # type: ignore[attr-defined]


# --- the event-loop writer (SQLite) ------------------------------------------------------------
def sqlite_only(core: Jitgate) -> None:
    if core.db.dialect != "sqlite":
        pytest.skip("the event-loop writer is SQLite's")


def test_stopping_from_another_thread_as_jitgate_does_loses_nothing(
    core: Jitgate, make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
) -> None:
    """jitgate drains its writer on the loop, then stops it from a worker thread (stop blocks)
    while the loop runs on. Left in motion at that moment: an outcome lingering for company,
    and awaited events whose sync is under way. The loop writer's queue and timers used to be
    touched from both threads at once (found in re-review); every event is written, once."""
    writer = make_writer(core)

    async def shut_down_busy() -> list[int]:
        writer.start()
        waiters = [
            asyncio.ensure_future(writer.record(NewEvent("call.allowed", "agent:a", data={"n": i})))
            for i in range(20)
        ]
        writer.record_nowait(NewEvent("call.completed", "agent:a"))  # lingers
        await asyncio.sleep(0)  # the waiters' batch is under way
        await writer.drain()
        await asyncio.to_thread(writer.stop)
        return sorted(await asyncio.wait_for(asyncio.gather(*waiters), 10))

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        seqs = pool.submit(asyncio.run, shut_down_busy()).result(timeout=60)
    assert len(seqs) == 20 and core.audit.count() == 21
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert core.audit.verify().ok


def test_events_recorded_while_stop_runs_in_another_thread_are_all_answered(
    core: Jitgate, make_writer: MakeWriter
) -> None:
    """A call still in flight after drain() records while stop() runs in its thread. The loop
    writer committed such an event, then queued its sync behind the sync thread's end, and
    the call waited for ever (found in review). Every waiter now gets its sequence number
    (its event is then in the log) or a refusal (its event is not)."""
    writer = make_writer(core)

    async def record_while_stopping() -> tuple[list[object], int]:
        writer.start()
        await writer.drain()
        waiters = [  # a burst just before stop(): committed while stop() waits on the sync
            asyncio.ensure_future(writer.record(NewEvent("call.allowed", "agent:a", data={})))
            for _ in range(200)
        ]
        stopping = asyncio.ensure_future(asyncio.to_thread(writer.stop))
        while not stopping.done():
            event = NewEvent("call.allowed", "agent:a", data={"n": len(waiters)})
            waiters.append(asyncio.ensure_future(writer.record(event)))
            await asyncio.sleep(0.001)
        done, hanging = await asyncio.wait(waiters, timeout=5)
        return [w.exception() or w.result() for w in done], len(hanging)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        answers, hanging = pool.submit(asyncio.run, record_while_stopping()).result(timeout=60)
    assert hanging == 0
    seqs = [a for a in answers if isinstance(a, int)]
    assert all(isinstance(a, (int, AuditUnavailable)) for a in answers), answers
    # and no event is in the log whose call was told to go no further (it would have no
    # outcome: found in review, when stop() answered committed events "not durable")
    assert {e.seq for e in core.audit.events(limit=100_000)} == set(seqs)


def test_an_event_recorded_after_stop_is_refused_not_left_waiting(
    core: Jitgate, make_writer: MakeWriter
) -> None:
    """The thread writer queued it behind its stop signal, where nobody would ever write it:
    the call waited for ever (found writing the test above)."""
    writer = make_writer(core)

    async def late() -> object:
        writer.start()
        writer.stop()
        try:
            await asyncio.wait_for(writer.record(NewEvent("call.allowed", "agent:a")), 5)
        except AuditUnavailable as exc:
            return exc
        except TimeoutError:
            return "still waiting after 5 s"
        return "recorded after stop"

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        outcome = pool.submit(asyncio.run, late()).result(timeout=60)
    assert isinstance(outcome, AuditUnavailable), outcome
    assert core.audit.count() == 0


def test_while_another_writer_holds_the_database_the_loop_keeps_running(core: Jitgate) -> None:
    """A batch that finds SQLite's write lock taken waits in a thread, not on the event loop."""
    sqlite_only(core)
    database = core.db.engine.url.database
    assert database is not None
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    writer = LoopAuditWriter(core.db, core.clock)
    ticks = 0

    async def scenario() -> int:
        nonlocal ticks

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticker = asyncio.create_task(tick())
        recording = asyncio.create_task(writer.record(NewEvent("call.allowed", "agent:a")))
        await asyncio.sleep(0.2)
        assert not recording.done()  # still waiting for the lock...
        before = ticks
        holder.execute("COMMIT")  # ...which is released now
        seq = await recording
        ticker.cancel()
        assert before >= 10  # the loop kept serving while the batch waited
        return seq

    try:
        assert run_with(writer, scenario) == 1
    finally:
        holder.close()
    assert core.audit.count() == 1


def hold_fsync(writer: LoopAuditWriter) -> threading.Event:
    """A slow or hung disk: the writer's fsyncs wait (up to 10 s) until the event is set."""
    release = threading.Event()
    real_fsync = writer._fsync_wal

    def held() -> None:
        release.wait(10)
        real_fsync()

    writer._fsync_wal = held  # type: ignore[method-assign]
    return release


def test_fsync_durability_waits_for_the_disk(core: Jitgate) -> None:
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock, durability="fsync")
    on_disk = hold_fsync(writer)

    async def scenario() -> int:
        recording = asyncio.create_task(writer.record(NewEvent("call.allowed", "agent:a")))
        await asyncio.sleep(0.1)
        assert core.audit.count() == 1  # committed...
        assert not recording.done()  # ...but not yet on disk, so the call may not go on
        on_disk.set()
        return await recording

    assert run_with(writer, scenario) == 1
    assert writer.syncs >= 1


def test_a_failed_fsync_fails_its_waiters(core: Jitgate) -> None:
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock, durability="fsync")

    def broken_disk() -> None:
        raise OSError(5, "Input/output error")

    writer._fsync_wal = broken_disk  # type: ignore[method-assign]
    # Committed but not on disk: a distinct failure, so the caller can record what it did not do.
    with pytest.raises(AuditNotDurable):
        run_with(writer, lambda: writer.record(NewEvent("call.allowed", "agent:a")))
    assert writer.failures == 1


def test_os_durability_resumes_at_commit_and_syncs_soon_after(core: Jitgate) -> None:
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock, durability="os", os_sync_seconds=0.01)
    real_fsync = writer._fsync_wal
    calls: list[str] = []

    def watched_fsync() -> None:
        calls.append("fsync")
        real_fsync()

    writer._fsync_wal = watched_fsync  # type: ignore[method-assign]

    async def scenario() -> None:
        await writer.record(NewEvent("call.allowed", "agent:a"))
        assert calls == []  # resumed at commit, before any fsync
        await asyncio.sleep(0.1)
        assert calls == ["fsync"]  # the disk caught up on its own

    run_with(writer, scenario)


def test_the_loop_writer_refuses_postgresql(core: Jitgate) -> None:
    if core.db.dialect == "sqlite":
        pytest.skip("PostgreSQL only")
    with pytest.raises(ValueError, match="SQLite only"):
        LoopAuditWriter(core.db, core.clock)


def test_what_one_batch_read_is_reused_only_while_nobody_else_wrote(core: Jitgate) -> None:
    """The event-loop writer carries the chain head and the grants it read from one batch to
    the next (PRAGMA data_version); a write by any other connection in between is seen."""
    sqlite_only(core)
    _, token = core.identity.create_agent("bot")
    agent = core.identity.authenticate(token)
    grant, _ = core.grants.request(
        agent, actions=["s3:GetObject"], resources=["arn:aws:s3:::b/k"], reason="r"
    )
    assert grant.access_key_id is not None
    remembered = GrantLookup(core.db).by_access_key(grant.access_key_id)
    assert remembered is not None
    writer = LoopAuditWriter(core.db, core.clock, durability="os")

    def live(txn: DriverTxn) -> None:
        if refreshed(txn, remembered).status != "active":
            raise Refused("revoked")

    async def scenario() -> list[object]:
        results: list[object] = []
        for step in range(2):
            results.append(
                await writer.record(NewEvent("call.allowed", "agent:bot", grant_id=grant.id), live)
            )
            if step == 0:  # another connection appends to the chain
                core.audit.record(core.clock.now(), NewEvent("note", "admin"))
        core.grants.revoke(agent, grant.id)  # ... and then revokes the grant
        with contextlib.suppress(Refused):
            await writer.record(NewEvent("call.allowed", "agent:bot", grant_id=grant.id), live)
            results.append("not refused")
        return results

    results = run_with(writer, scenario)
    assert results[1] == results[0] + 2  # the event between is the other connection's
    assert "not refused" not in results
    assert core.audit.verify().ok


def test_a_writer_that_is_not_running_refuses_at_once(core: Jitgate) -> None:
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock)  # never started: nothing would ever sync

    async def attempt() -> int:
        return await writer.record(NewEvent("call.allowed", "agent:a"))

    with (
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
        pytest.raises(AuditUnavailable, match="not running"),
    ):
        pool.submit(asyncio.run, attempt()).result()
    assert core.audit.count() == 0


def test_without_a_write_ahead_log_the_database_file_itself_is_synced(core: Jitgate) -> None:
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock)
    database = core.db.engine.url.database
    assert database is not None
    writer._wal_path = Path(database + ".missing-wal")  # as if not in WAL mode
    synced: list[int] = []
    real = os.fdatasync
    try:
        os.fdatasync = lambda fd: synced.append(os.fstat(fd).st_ino) or real(fd)  # type: ignore[assignment]
        writer._fsync_wal()
    finally:
        os.fdatasync = real
    assert synced == [os.stat(database).st_ino]


def test_after_a_failed_fsync_nothing_is_claimed_durable_again(core: Jitgate) -> None:
    """Found in review: the first failed fsync failed its waiters, but the next call was told
    its event was on disk. On Linux a failed fsync marks the lost pages clean, so the next one
    succeeds without them, and SQLite's recovery drops every commit after the first bad frame."""
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock, durability="fsync")
    real_fsync = writer._fsync_wal
    failures = iter([OSError(5, "Input/output error")])

    def fails_once() -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real_fsync()

    writer._fsync_wal = fails_once  # type: ignore[method-assign]

    async def scenario() -> list[BaseException]:
        caught: list[BaseException] = []
        for _ in range(3):
            try:
                await writer.record(NewEvent("call.allowed", "agent:a"))
            except AuditUnavailable as exc:
                caught.append(exc)
        writer.record_nowait(NewEvent("call.denied", "agent:a"))  # refusals still recorded
        return caught

    caught = run_with(writer, scenario)
    assert [type(exc) for exc in caught] == [AuditNotDurable, AuditUnavailable, AuditUnavailable]
    assert "restart jitgate" in caught[1].message
    assert writer.broken is not None
    assert [e.type for e in core.audit.events(limit=10)] == ["call.allowed", "call.denied"]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_under_the_writer_fails_its_sync(
    core: Jitgate, how: str
) -> None:
    """Found in review: with only the database file unlinked (its -wal and -shm left), calls
    were forwarded while their events went to a file nobody could open again."""
    sqlite_only(core)
    database = core.db.engine.url.database
    assert database is not None
    writer = LoopAuditWriter(core.db, core.clock, durability="fsync")

    async def scenario() -> BaseException | None:
        await writer.record(NewEvent("call.allowed", "agent:a"))  # a sound sync first
        os.rename(database, database + ".moved")
        if how == "replaced":
            Path(database).write_bytes(b"")
        try:
            await writer.record(NewEvent("call.allowed", "agent:b"))
        except AuditNotDurable as exc:
            return exc
        return None

    try:
        assert isinstance(run_with(writer, scenario), AuditNotDurable)
    finally:
        os.replace(database + ".moved", database)
    assert writer.broken is not None


async def refusal_of(writer: AuditWriter, event: NewEvent) -> AuditUnavailable | None:
    """What ``writer`` refused ``event`` with (None: it was written)."""
    try:
        await writer.record(event)
    except AuditUnavailable as exc:
        return exc
    return None


def test_a_waiter_is_answered_when_the_disk_hangs(core: Jitgate) -> None:
    """Found in review: a hung fsync left every call hanging with no answer."""
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock, durability="fsync", wait_seconds=0.2)
    release = hold_fsync(writer)

    async def scenario() -> AuditUnavailable | None:
        try:
            return await refusal_of(writer, NewEvent("call.allowed", "agent:a"))
        finally:
            release.set()

    answered = run_with(writer, scenario)
    assert isinstance(answered, AuditNotDurable)
    assert "did not confirm the write within 0.2 s" in answered.message
    assert writer.broken is None  # slow, not failed: later calls go on


def test_a_waiter_is_answered_while_another_session_holds_the_chain(core: Jitgate) -> None:
    """Found in review (PostgreSQL): another session holding the chain head's row lock left
    every call hanging. The same holds for SQLite's write lock past the wait."""
    writer: AuditWriter
    if core.db.dialect == "sqlite":
        database = core.db.engine.url.database
        assert database is not None
        holder: Any = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        writer = LoopAuditWriter(core.db, core.clock, wait_seconds=0.3)
    else:
        holder = core.db.engine.connect()
        holder.begin()
        holder.execute(text("SELECT * FROM audit_head FOR UPDATE"))
        writer = AuditBatcher(core.db, core.clock, wait_seconds=0.3)

    async def scenario() -> AuditUnavailable | None:
        try:
            return await refusal_of(writer, NewEvent("call.allowed", "agent:a"))
        finally:
            if core.db.dialect == "sqlite":
                holder.execute("COMMIT")
            else:
                holder.rollback()

    try:
        assert isinstance(run_with(writer, scenario), AuditNotDurable)
    finally:
        holder.close()


@pytest.mark.parametrize("committed", [True, False], ids=["it committed", "it did not"])
def test_a_commit_whose_answer_is_lost_is_checked_against_the_chain(
    core: Jitgate, committed: bool
) -> None:
    """Found in review (PostgreSQL): when the server committed and the connection died before
    saying so, the waiter answered 503 with its call.allowed in the log and no outcome, and the
    batch's outcomes were retried and written twice. The writer now reads the chain on a new
    connection: a batch that landed is delivered as written, one that did not is retried."""
    if core.db.dialect == "sqlite":
        pytest.skip("SQLite commits locally: there is no answer to lose")
    writer = AuditBatcher(core.db, core.clock, retry_seconds=0.01)
    connection = writer._connection
    real_commit = connection.commit
    lost = iter([True])

    def commit_then_lose_the_answer(txn: DriverTxn) -> None:
        if next(lost, False):
            if committed:
                real_commit(txn)
            raise ConnectionError("server closed the connection unexpectedly")
        real_commit(txn)

    connection.commit = commit_then_lose_the_answer  # type: ignore[method-assign]

    async def scenario() -> int | BaseException:
        writer.record_nowait(NewEvent("call.completed", "agent:a", data={"n": 1}))
        try:
            result: int | BaseException = await writer.record(NewEvent("call.allowed", "agent:b"))
        except AuditUnavailable as exc:
            result = exc
        await until(lambda: core.audit.count() >= 1)
        await asyncio.sleep(0.1)  # time for any (wrong) second copy
        return result

    result = run_with(writer, scenario)
    types = [e.type for e in core.audit.events()]
    if committed:
        assert result == 2  # its seq: the call may go on
        assert sorted(types) == ["call.allowed", "call.completed"]
    else:
        assert isinstance(result, AuditUnavailable)
        assert types == ["call.completed"]  # retried once, written once
    assert core.audit.verify().ok


def test_while_the_disk_stays_hung_later_calls_are_refused_at_once(core: Jitgate) -> None:
    """Found in review: the wait limit fired once per sync, so a call arriving after it, with
    the disk still hung, waited with no limit at all."""
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock, durability="fsync", wait_seconds=0.2)
    release = hold_fsync(writer)

    async def scenario() -> list[object]:
        answers: list[object] = []
        for _ in range(2):
            try:
                answers.append(await writer.record(NewEvent("call.allowed", "agent:a")))
            except AuditUnavailable as exc:
                answers.append(exc)
        release.set()
        await until(lambda: writer.overdue is None)
        answers.append(await writer.record(NewEvent("call.allowed", "agent:b")))
        return answers

    first, second, third = run_with(writer, scenario)
    assert isinstance(first, AuditNotDurable)  # committed: it may reach the log
    assert type(second) is AuditUnavailable  # refused unwritten, without waiting again
    assert "did not confirm the write within 0.2 s" in second.message
    assert third == 2  # the disk is back: calls go on


def test_an_event_not_yet_written_when_the_wait_ends_is_never_written(core: Jitgate) -> None:
    """Found in review: an event still queued when its waiter was answered 503 was written
    later, its guard included, so a one-call grant was used up by a call never forwarded."""
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock, durability="fsync", wait_seconds=0.3)
    release = hold_fsync(writer)
    guarded: list[str] = []

    async def scenario() -> list[BaseException]:
        syncing = asyncio.ensure_future(writer.record(NewEvent("call.allowed", "agent:a")))
        await asyncio.sleep(0.1)  # its sync hangs; the next event waits behind it, unwritten
        queued = asyncio.ensure_future(
            writer.record(
                NewEvent("call.allowed", "agent:b"), guard=lambda txn: guarded.append("b")
            )
        )
        answers = await asyncio.gather(syncing, queued, return_exceptions=True)
        release.set()
        await until(lambda: writer.overdue is None)
        await writer.record(NewEvent("call.allowed", "agent:c"))
        return answers  # type: ignore[return-value]

    syncing, queued = run_with(writer, scenario)
    assert isinstance(syncing, AuditNotDurable)
    assert type(queued) is AuditUnavailable
    assert guarded == []
    assert [e.actor for e in core.audit.events()] == ["agent:a", "agent:c"]


def test_with_os_durability_a_commit_after_a_failed_sync_is_not_durable(core: Jitgate) -> None:
    """Found in review: with "os" durability an event handed in just before a sync failed was
    committed after it and still answered with its seq, so its call went on."""
    sqlite_only(core)
    writer = LoopAuditWriter(core.db, core.clock, durability="os", os_sync_seconds=0.01)
    fail_now = threading.Event()

    def failing_disk() -> None:
        fail_now.wait(5)
        raise OSError(5, "Input/output error")

    writer._fsync_wal = failing_disk  # type: ignore[method-assign]

    async def scenario() -> object:
        await writer.record(NewEvent("call.allowed", "agent:a"))  # answered at commit
        await asyncio.sleep(0.05)  # its background sync is under way
        late = asyncio.ensure_future(writer.record(NewEvent("call.allowed", "agent:b")))
        fail_now.set()
        time.sleep(0.2)  # the sync fails while the loop is busy: b is handed in (past the
        # broken check) just before the failure is heard, and committed just after
        try:
            return await late
        except AuditUnavailable as exc:
            return exc

    assert isinstance(run_with(writer, scenario), AuditNotDurable)
    assert writer.broken is not None


def test_a_lost_commit_still_in_progress_is_waited_for_before_the_chain_is_read(
    core: Jitgate,
) -> None:
    """Found in review of the first version: the chain was read while the old session was
    still committing (a synchronous standby, a slow disk: here a deferred trigger that sleeps),
    found nothing, and so the waiter was told "not written" and the outcomes retried; then the
    commit landed: call.allowed without an outcome, and the outcome written twice. The writer
    now ends the old session and waits for it to be gone before it reads the chain."""
    if core.db.dialect == "sqlite":
        pytest.skip("SQLite commits locally: there is no answer to lose")
    with core.db.engine.begin() as ddl:
        ddl.execute(
            text(
                "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(0.4); RETURN NULL; END $$"
            )
        )
        ddl.execute(
            text(
                "CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON audit_events "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
            )
        )
    writer = AuditBatcher(core.db, core.clock, retry_seconds=0.01)
    connection = writer._connection
    real_commit, real_rollback, real_drop = connection.commit, connection.rollback, connection.drop
    lost: list[DriverTxn] = []

    def commit_whose_answer_is_lost(txn: DriverTxn) -> None:
        if lost:
            return real_commit(txn)
        lost.append(txn)
        # COMMIT is sent (libpq's asynchronous send: no thread) and the server starts on it;
        # the client gives up before any answer comes.
        txn.connection.driver_connection.pgconn.send_query(b"COMMIT")
        time.sleep(0.1)
        raise ConnectionError("server closed the connection unexpectedly")

    def rollback(txn: DriverTxn) -> None:
        if txn not in lost:  # the client's side of that connection is gone
            real_rollback(txn)

    forgotten: list[Any] = []

    def drop() -> None:
        if lost and connection._raw is lost[0].connection:
            # Forgotten by the client; its server session lives on. Kept here to be closed at
            # the end, on this thread: a pooled connection freed by the garbage collector logs
            # a traceback from whichever thread collects it.
            forgotten.append(connection._raw)
            connection._raw = None
            return
        real_drop()

    connection.commit = commit_whose_answer_is_lost  # type: ignore[method-assign]
    connection.rollback = rollback  # type: ignore[method-assign]
    connection.drop = drop  # type: ignore[method-assign]

    async def scenario() -> int | BaseException:
        writer.record_nowait(NewEvent("call.completed", "agent:a", data={"n": 1}))
        try:
            return await writer.record(NewEvent("call.allowed", "agent:b"))
        except AuditUnavailable as exc:
            return exc

    result = run_with(writer, scenario)
    for raw in forgotten:
        with contextlib.suppress(Exception):
            raw.invalidate()
    types = sorted(e.type for e in core.audit.events())
    assert core.audit.verify().ok
    if isinstance(result, int):
        assert types == ["call.allowed", "call.completed"]  # it landed: delivered as written
    else:
        assert type(result) is AuditUnavailable  # it did not: nothing of it is in the log
        assert types == ["call.completed"]
