"""Group commit for the gateway: many events, one transaction, one sync to disk.

The gateway awaits ``record`` before forwarding a call ("record before act"): it resumes only
once the transaction holding the event has committed (and, with ``durability="fsync"``, once
that commit has reached the disk). Events nobody waits for (call outcomes) go through
``record_nowait``; they are written in order by the same writer. A failed write fails every
waiter in its batch, so the gateway answers 503 and forwards nothing. A guard runs inside the
write transaction just before its event is appended: it raises to refuse that event alone.

Two writers share that contract (see docs/decisions.md, D9):

- ``LoopAuditWriter`` (SQLite): writes on the event loop's own thread, one transaction per
  loop iteration, committing without an fsync; a separate thread then fsyncs the write-ahead
  log once for every commit made meanwhile (group fsync). A writer thread instead would have to
  win the GIL back from the busy event loop for every statement, which capped the gateway at a
  fraction of its CPU (benchmarks/gateway.py, session 2).
- ``AuditBatcher`` (PostgreSQL): a writer thread, since each statement is a network round trip
  that must not block the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from jitgate.audit.log import NewEvent, append_driver
from jitgate.clock import Clock
from jitgate.errors import AuditUnavailable
from jitgate.store.db import Database
from jitgate.store.driver import SQLITE, DedicatedConnection, DriverTxn

log = logging.getLogger(__name__)

Durability = Literal["fsync", "os"]
DURABILITIES: tuple[str, ...] = ("fsync", "os")

# A guard runs inside the write transaction, just before its event is appended. It raises to
# refuse the event (the waiter gets that exception and nothing is written for it); whatever it
# reads or changes commits together with the event. ``txn.memo`` is shared by the batch.
Guard = Callable[[DriverTxn], None]

_UNAVAILABLE = "the audit log cannot be written; nothing was forwarded"


class AuditWriter(Protocol):
    batches: int
    written: int
    failures: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    async def record(self, event: NewEvent, guard: Guard | None = None) -> int: ...

    def record_nowait(self, event: NewEvent) -> None: ...


_SyncRequest = tuple[asyncio.AbstractEventLoop, list[tuple["asyncio.Future[int] | None", int]]]


@dataclass
class _Item:
    event: NewEvent
    future: asyncio.Future[int] | None
    guard: Guard | None = None


def _write_batch(
    connection: DedicatedConnection, clock: Clock, batch: list[_Item]
) -> list[int | BaseException]:
    """One transaction for ``batch``: each item's seq, or what its guard raised.

    Raises (after rolling back) when the transaction itself fails.
    """
    txn = connection.begin()
    try:
        outcomes: list[int | BaseException] = []
        accepted: list[_Item] = []
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


def _deliver(future: asyncio.Future[int] | None, outcome: int | BaseException) -> None:
    if future is None or future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _deliver_all(pairs: list[tuple[asyncio.Future[int] | None, int | BaseException]]) -> None:
    for future, outcome in pairs:
        _deliver(future, outcome)


# --- SQLite: on the event loop, group fsync in a thread --------------------------------------
class LoopAuditWriter:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        durability: Durability = "fsync",
        max_batch: int = 512,
        linger_seconds: float = 0.005,
        os_sync_seconds: float = 0.05,
    ) -> None:
        if db.dialect != SQLITE:
            raise ValueError("LoopAuditWriter writes SQLite only (AuditBatcher for the rest)")
        if durability not in DURABILITIES:
            raise ValueError(f"audit durability must be one of {DURABILITIES}, not {durability!r}")
        self.db = db
        self.clock = clock
        self.durability = durability
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds  # how long outcomes wait for company
        self.os_sync_seconds = os_sync_seconds  # "os": the longest a commit waits for the disk
        self.batches = 0
        self.written = 0
        self.failures = 0
        self.syncs = 0
        # Commits reach the operating system at once and the disk through _fsync_wal, which one
        # fsync serves every commit made meanwhile (SQLite's FULL would fsync inside each
        # commit, on the event loop).
        # The loop's connection never waits for SQLite's lock (busy_timeout 0); a batch that
        # must wait does so in a worker thread on a connection of its own, so that no two
        # threads ever use one connection.
        self._connection = DedicatedConnection(
            db,
            autocommit=True,
            setup=("PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=0"),
            carry_memo=True,
        )
        self._waiting_connection = DedicatedConnection(
            db, autocommit=True, setup=("PRAGMA synchronous=NORMAL",)
        )
        self._lock = threading.Lock()  # one batch at a time on the connection, whoever writes
        self._pending: list[_Item] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._flush_urgent = False
        self._in_thread = False  # a batch waits for a lock held elsewhere, in a worker thread
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._unsynced: list[tuple[asyncio.Future[int] | None, int]] = []
        self._syncing = False
        self._sync_timer: asyncio.TimerHandle | None = None
        self._wal_fd: int | None = None
        self._wal_path: Path | None = None
        self._sync_requests: queue.SimpleQueue[_SyncRequest | None] | None = None
        self._syncer: threading.Thread | None = None

    # lifecycle
    def start(self) -> None:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="audit-wait"
            )
        if self._sync_requests is None:
            self._sync_requests = queue.SimpleQueue()
            self._syncer = threading.Thread(
                target=self._sync_thread, args=(self._sync_requests,), name="audit-sync"
            )
            self._syncer.daemon = True
            self._syncer.start()

    def stop(self) -> None:
        """Write what is still pending, make it durable, and release the connection."""
        if self._sync_requests is not None and self._syncer is not None:
            self._sync_requests.put(None)  # the sync thread finishes what it was asked, then ends
            self._syncer.join(10)
            self._sync_requests = None
        with self._lock:
            pending, self._pending = self._pending, []
            if pending:
                try:
                    outcomes = _write_batch(self._waiting_connection, self.clock, pending)
                    self.batches += 1
                    self.written += sum(1 for o in outcomes if not isinstance(o, BaseException))
                except Exception as exc:  # noqa: BLE001 - logged; nobody waits any more
                    self.failures += 1
                    log.error("audit write at shutdown failed for %d events: %s", len(pending), exc)
            try:
                self._fsync_wal()
            except OSError as exc:
                log.error("audit log fsync at shutdown failed: %s", exc)
            self._connection.close()
            self._waiting_connection.close()
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # recording
    async def record(self, event: NewEvent, guard: Guard | None = None) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append(_Item(event, future, guard))
        self._schedule(loop, urgent=True)
        return await future

    def record_nowait(self, event: NewEvent) -> None:
        self._pending.append(_Item(event, None))
        self._schedule(asyncio.get_running_loop(), urgent=False)

    def _schedule(self, loop: asyncio.AbstractEventLoop, *, urgent: bool) -> None:
        self._loop = loop
        if self._in_thread:
            return  # the thread's batch reschedules when it is done
        if self._syncing and self.durability == "fsync":
            # Whatever is committed now could only be released by the fsync after the one
            # running, so it waits and joins one commit made when this fsync ends (_synced):
            # bigger batches, fewer commits, no later release.
            return
        if self._flush_handle is not None:
            if not urgent or self._flush_urgent:
                return
            self._flush_handle.cancel()  # an awaited event: outcomes stop lingering
        self._flush_urgent = urgent
        if urgent:
            self._flush_handle = loop.call_soon(self._flush)
        else:
            self._flush_handle = loop.call_later(self.linger_seconds, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending:
            return
        loop = self._loop
        assert loop is not None
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        try:
            with self._lock:
                outcomes = self._write_now(batch)
        except _Busy:
            self._in_thread = True
            assert self._executor is not None, "audit writer not started"
            done = loop.run_in_executor(self._executor, self._write_waiting, batch)
            done.add_done_callback(lambda f: self._thread_done(batch, f))
            return
        self._after_write(batch, outcomes)
        if self._pending:
            self._schedule(loop, urgent=any(item.future is not None for item in self._pending))

    def _write_now(self, batch: list[_Item]) -> list[int | BaseException] | Exception:
        """The batch's transaction on the loop's thread, unless another writer holds the
        database (then _Busy: it waits in a worker thread instead of stalling the loop)."""
        try:
            return _write_batch(self._connection, self.clock, batch)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise _Busy from None
            return exc
        except Exception as exc:  # noqa: BLE001 - every waiter of the batch fails
            return exc

    def _write_waiting(self, batch: list[_Item]) -> list[int | BaseException] | Exception:
        with self._lock:
            try:
                return _write_batch(self._waiting_connection, self.clock, batch)
            except Exception as exc:  # noqa: BLE001 - every waiter of the batch fails
                return exc

    def _thread_done(
        self, batch: list[_Item], done: asyncio.Future[list[int | BaseException] | Exception]
    ) -> None:
        self._in_thread = False
        outcomes = done.result() if not done.cancelled() else RuntimeError("cancelled")
        self._after_write(batch, outcomes)
        if self._pending and self._loop is not None:
            self._schedule(self._loop, urgent=any(i.future is not None for i in self._pending))

    def _after_write(
        self, batch: list[_Item], outcomes: list[int | BaseException] | Exception
    ) -> None:
        if isinstance(outcomes, Exception):
            self.failures += 1
            log.error("audit write failed for %d events: %s", len(batch), outcomes)
            error = AuditUnavailable(_UNAVAILABLE)
            for item in batch:
                _deliver(item.future, error)
            return
        self.batches += 1
        committed: list[tuple[asyncio.Future[int] | None, int]] = []
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                _deliver(item.future, outcome)
            else:
                self.written += 1
                committed.append((item.future, outcome))
        if self.durability == "os":
            # Committed to the operating system: survives jitgate being killed. The disk
            # catches up within os_sync_seconds.
            for future, seq in committed:
                _deliver(future, seq)
            self._sync_later()
        else:
            self._unsynced.extend(committed)
            self._sync_soon()

    # group fsync
    def _sync_later(self) -> None:
        if self._sync_timer is None and self._loop is not None:
            self._sync_timer = self._loop.call_later(self.os_sync_seconds, self._sync_soon)

    def _sync_soon(self) -> None:
        self._sync_timer = None
        if self._syncing or self._sync_requests is None or self._loop is None:
            return  # the running sync starts the next one when it finishes
        self._syncing = True
        waiting, self._unsynced = self._unsynced, []
        self._sync_requests.put((self._loop, waiting))

    def _sync_thread(self, requests: queue.SimpleQueue[_SyncRequest | None]) -> None:
        """fsync the log for each request and hand the waiters back to their loop (a thread of
        its own: cheaper per sync than an executor's futures, which the loop pays for)."""
        while (request := requests.get()) is not None:
            loop, waiting = request
            error: OSError | None = None
            try:
                self._fsync_wal()
            except OSError as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(self._synced, waiting, error)

    def _synced(
        self, waiting: list[tuple[asyncio.Future[int] | None, int]], error: OSError | None
    ) -> None:
        self._syncing = False
        if error is not None:
            self.failures += 1
            log.error("audit log fsync failed: %s", error)
            _deliver_all([(future, AuditUnavailable(_UNAVAILABLE)) for future, _ in waiting])
        else:
            self.syncs += 1
            _deliver_all(list(waiting))  # type: ignore[arg-type]
        if self._unsynced:
            self._sync_soon()
        elif self._pending and self._loop is not None:
            self._schedule(self._loop, urgent=any(i.future is not None for i in self._pending))

    def _fsync_wal(self) -> None:
        """Flush the write-ahead log to disk: every commit made before this call is durable.

        fsync covers the file whichever descriptor it is called on, so a descriptor of our own
        flushes what the writer's connection wrote. The log is reopened if it was replaced.
        """
        path = self._wal()
        if not path.exists():  # nothing written since the log was last checkpointed away
            return
        if self._wal_fd is not None and os.fstat(self._wal_fd).st_ino != path.stat().st_ino:
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._wal_fd is None:
            self._wal_fd = os.open(path, os.O_RDONLY)
        os.fdatasync(self._wal_fd)

    def _wal(self) -> Path:
        if self._wal_path is None:
            database = self.db.engine.url.database
            if not database or database == ":memory:":
                raise RuntimeError("the audit log needs a database file")
            self._wal_path = Path(database + "-wal")
        return self._wal_path


class _Busy(Exception):
    """Another connection holds SQLite's write lock."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


# --- PostgreSQL: a writer thread ---------------------------------------------------------------
_STOP = object()


@dataclass
class _Queued:
    item: _Item
    loop: asyncio.AbstractEventLoop | None


class AuditBatcher:
    def __init__(
        self, db: Database, clock: Clock, max_batch: int = 512, linger_seconds: float = 0.005
    ) -> None:
        self.db = db
        self.clock = clock
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds  # how long outcomes wait for company
        self._queue: queue.SimpleQueue[_Queued | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._connection = DedicatedConnection(db, autocommit=False)
        self.failures = 0
        self.batches = 0
        self.written = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        self._connection.close()

    async def record(self, event: NewEvent, guard: Guard | None = None) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put(_Queued(_Item(event, future, guard), loop))
        return await future

    def record_nowait(self, event: NewEvent) -> None:
        self._queue.put(_Queued(_Item(event, None), None))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Queued] = [first]  # type: ignore[list-item]
            # Nobody waits on a batch of outcomes only (call.completed): give the next awaited
            # event a moment (at most linger_seconds in all) to join it and share one commit.
            linger_until = time.monotonic() + self.linger_seconds
            while len(batch) < self.max_batch:
                try:
                    left = linger_until - time.monotonic()
                    if left <= 0 or any(q.item.future is not None for q in batch):
                        queued = self._queue.get_nowait()
                    else:
                        queued = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if queued is _STOP:
                    stopping = True
                    break
                batch.append(queued)  # type: ignore[arg-type]
            self._write(batch)

    def _write(self, batch: list[_Queued]) -> None:
        items = [queued.item for queued in batch]
        try:
            outcomes: list[int | BaseException] = _write_batch(self._connection, self.clock, items)
        except Exception as exc:
            self.failures += 1
            self._connection.drop()  # it may be the connection that broke
            log.error("audit write failed for %d events: %s", len(batch), exc)
            outcomes = [AuditUnavailable(_UNAVAILABLE)] * len(batch)
        else:
            self.batches += 1
            self.written += sum(1 for o in outcomes if not isinstance(o, BaseException))
        by_loop: dict[
            asyncio.AbstractEventLoop,
            list[tuple[asyncio.Future[int] | None, int | BaseException]],
        ] = {}
        for queued, outcome in zip(batch, outcomes, strict=True):
            if queued.loop is not None:
                by_loop.setdefault(queued.loop, []).append((queued.item.future, outcome))
        for loop, pairs in by_loop.items():  # one wake-up per loop, not one per event
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_deliver_all, pairs)


def audit_writer_for(db: Database, clock: Clock, durability: str = "fsync") -> AuditWriter:
    """The gateway's audit writer for this database (see the module docstring)."""
    if db.dialect == SQLITE:
        return LoopAuditWriter(db, clock, durability=durability)  # type: ignore[arg-type]
    return AuditBatcher(db, clock)
