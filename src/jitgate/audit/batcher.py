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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from jitgate.audit.log import NewEvent, append_driver
from jitgate.clock import Clock
from jitgate.store.db import Database
from jitgate.store.driver import SQLITE, DedicatedConnection, DriverTxn

Durability = Literal["fsync", "os"]
DURABILITIES: tuple[str, ...] = ("fsync", "os")

# A guard runs inside the write transaction, just before its event is appended. It raises to
# refuse the event (the waiter gets that exception and nothing is written for it); whatever it
# reads or changes commits together with the event. ``txn.memo`` is shared by the batch.
Guard = Callable[[DriverTxn], None]

UNAVAILABLE = "the audit log cannot be written; nothing was forwarded"


class AuditWriter(Protocol):
    batches: int
    written: int
    failures: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    async def record(self, event: NewEvent, guard: Guard | None = None) -> int: ...

    def record_nowait(self, event: NewEvent) -> None: ...


@dataclass
class Item:
    event: NewEvent
    future: asyncio.Future[int] | None
    guard: Guard | None = None


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
        connection.commit(txn)
    except BaseException:
        connection.rollback(txn)
        raise
    return [next(seqs) if outcome == 0 else outcome for outcome in outcomes]


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
