"""Group commit for the gateway: many events, one transaction, one sync to disk.

The gateway awaits ``record`` before forwarding a call ("record before act"): it resumes only
once the transaction holding the event has committed (and, with ``durability="fsync"``, once
that commit has reached the disk). Events nobody waits for (call outcomes) go through
``record_nowait``; they are written in order by the same writer. A failed write fails every
waiter in its batch, so the gateway answers 503 and forwards nothing. A guard runs inside the
write transaction just before its event is appended: it raises to refuse that event alone.

Two writers share that contract (see docs/decisions.md, D9):

- ``LoopAuditWriter`` (SQLite; jitgate.audit.loop_writer) writes on the event loop's own
  thread, one transaction per loop iteration, committing without an fsync; a separate thread
  then fsyncs the write-ahead log once for every commit made meanwhile (group fsync). A writer
  thread instead would have to win the GIL back from the busy event loop for every statement,
  which capped the gateway at a fraction of its CPU (benchmarks/gateway.py, session 2).
- ``AuditBatcher`` (PostgreSQL; jitgate.audit.thread_writer) is a writer thread, since each
  statement is a network round trip that must not block the loop.

This module holds what both share: the contract, one batch's transaction, and the factory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from jitgate.audit.log import NewEvent, append_driver, written_head
from jitgate.clock import Clock
from jitgate.errors import AuditNotDurable
from jitgate.store.db import Database
from jitgate.store.driver import SQLITE, DedicatedConnection, DriverTxn

log = logging.getLogger(__name__)

Durability = Literal["fsync", "os"]
DURABILITIES: tuple[str, ...] = ("fsync", "os")

# A guard runs inside the write transaction, just before its event is appended. It raises to
# refuse the event (the waiter gets that exception and nothing is written for it); whatever it
# reads or changes commits together with the event. ``txn.memo`` is shared by the batch.
Guard = Callable[[DriverTxn], None]

UNAVAILABLE = "the audit log cannot be written; nothing was forwarded"
NOT_DURABLE = "the audit log could not be synced to disk; nothing was forwarded"
NOT_RUNNING = "the audit writer is not running; nothing was forwarded"
STOPPED = "the audit writer stopped before this call could go on; nothing was forwarded"
BROKEN = (
    "an earlier fsync of the audit log failed, so nothing written since can be known to reach "
    "the disk; nothing was forwarded (restart jitgate once the disk is sound)"
)

# The longest a call waits for its event to be written (and synced) before it is answered 503:
# a hung disk or a lock held elsewhere must not hang every call. The event may still be written
# later, so the waiter is told it is not durable and records that it forwarded nothing.
WAIT_SECONDS = 10.0


def too_slow(seconds: float) -> str:
    return f"the audit log did not confirm the write within {seconds:g} s; nothing was forwarded"


def expire(future: asyncio.Future[int], seconds: float) -> None:
    """Answer a waiter whose event was not confirmed in time (see WAIT_SECONDS)."""
    if not future.done():
        future.set_exception(AuditNotDurable(too_slow(seconds)))


# Events nobody waits for (call outcomes) are not lost to a failed write: they are tried again
# in batches of their own (so one that cannot be written never fails a waiter's batch), after
# RETRY_FIRST_SECONDS, doubling up to RETRY_MAX_SECONDS, at most RETRY_ATTEMPTS times.
RETRY_ATTEMPTS = 8
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0


class AuditWriter(Protocol):
    batches: int
    written: int
    failures: int

    def start(self) -> None: ...

    async def drain(self, timeout: float = 10.0) -> None:
        """On the loop that records, before ``stop``: write what is queued and settle every
        waiter, so that ``stop`` (which blocks, and may run in another thread) finds nothing
        in motion."""
        ...

    def stop(self) -> None: ...

    async def record(self, event: NewEvent, guard: Guard | None = None) -> int: ...

    def submit(self, event: NewEvent, guard: Guard | None = None) -> asyncio.Future[int]:
        """``record`` in two steps: the event is queued now (refused at once, with
        AuditUnavailable, if it cannot be), and the future answers when it is durable. The
        caller must await the future before it acts on the event: work that only prepares
        (nothing sent, nothing changed) may run meanwhile."""
        ...

    def record_nowait(self, event: NewEvent) -> None: ...


@dataclass
class Item:
    event: NewEvent
    future: asyncio.Future[int] | None
    guard: Guard | None = None
    attempts: int = 0  # failed writes so far (only events nobody waits for are tried again)


def to_retry(batch: list[Item]) -> tuple[list[Item], list[Item]]:
    """Of a batch whose write failed: the unawaited events to try again, and those given up.

    Waiters are not retried: they were answered with the failure (503, nothing forwarded).
    """
    retry: list[Item] = []
    given_up: list[Item] = []
    for item in batch:
        if item.future is not None:
            continue
        item.attempts += 1
        (retry if item.attempts < RETRY_ATTEMPTS else given_up).append(item)
    return retry, given_up


def retry_delay(attempts: int, first: float = RETRY_FIRST_SECONDS) -> float:
    return min(first * 2 ** max(attempts - 1, 0), RETRY_MAX_SECONDS)


def log_given_up(given_up: list[Item], why: str = "") -> None:
    if given_up:
        log.error(
            "audit log: gave up writing %d event(s) (%s): %s",
            len(given_up),
            why or f"{RETRY_ATTEMPTS} attempts failed",
            ", ".join(sorted({item.event.type for item in given_up})),
        )


def log_refused_after_stop(event: NewEvent) -> None:
    """An unawaited event that came after its writer stopped (counted in ``given_up``)."""
    log_given_up([Item(event, None)], why="the audit writer had stopped")


def write_batch(
    connection: DedicatedConnection, clock: Clock, batch: list[Item]
) -> list[int | BaseException]:
    """One transaction for ``batch``: each item's seq, or what its guard raised.

    Raises (after rolling back) when the transaction itself fails.
    """
    txn = connection.begin()
    try:
        outcomes: list[int | BaseException] = []
        accepted: list[Item] = []
        for item in batch:
            if item.guard is not None:
                try:
                    item.guard(txn)
                except Exception as exc:  # noqa: BLE001 - handed to the waiter
                    outcomes.append(exc)
                    continue
            outcomes.append(0)
            accepted.append(item)
        seqs = iter(append_driver(txn, clock.now(), [item.event for item in accepted]))
        results = [next(seqs) if outcome == 0 else outcome for outcome in outcomes]
        head = written_head(txn) if accepted else None
        try:
            connection.commit(txn)
        except Exception as exc:
            if head is None:
                raise
            raise CommitUnconfirmed(results, head) from exc
    except BaseException:
        connection.rollback(txn)
        raise
    return results


class CommitUnconfirmed(Exception):
    """COMMIT raised: the transaction may or may not have committed (on PostgreSQL the server
    can commit and the connection die before it says so). ``head`` is the (seq, hash) the batch
    left at the chain's head, to look for; ``results`` what each item got if it did commit."""

    def __init__(self, results: list[int | BaseException], head: tuple[int, str]) -> None:
        super().__init__(f"COMMIT of the batch ending at seq {head[0]} was not confirmed")
        self.results = results
        self.head = head


def deliver(future: asyncio.Future[int] | None, outcome: int | BaseException) -> None:
    if future is None or future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def deliver_all(pairs: list[tuple[asyncio.Future[int] | None, int | BaseException]]) -> None:
    for future, outcome in pairs:
        deliver(future, outcome)


def audit_writer_for(db: Database, clock: Clock, durability: str = "fsync") -> AuditWriter:
    """The gateway's audit writer for this database (see the module docstring)."""
    from jitgate.audit.loop_writer import LoopAuditWriter
    from jitgate.audit.thread_writer import AuditBatcher

    if db.dialect == SQLITE:
        return LoopAuditWriter(db, clock, durability=durability)  # type: ignore[arg-type]
    return AuditBatcher(db, clock)
