"""The SQLite audit writer: on the event loop, with a group fsync in a thread of its own.

See jitgate.audit.batcher for the contract and docs/decisions.md (D9) for why.
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
from pathlib import Path

from jitgate.audit.batcher import (
    BROKEN,
    DURABILITIES,
    NOT_DURABLE,
    NOT_RUNNING,
    RETRY_FIRST_SECONDS,
    STOPPED,
    UNAVAILABLE,
    WAIT_SECONDS,
    Durability,
    Guard,
    Item,
    deliver,
    deliver_all,
    log_given_up,
    log_refused_after_stop,
    retry_delay,
    to_retry,
    too_slow,
    write_batch,
)
from jitgate.audit.log import NewEvent
from jitgate.clock import Clock
from jitgate.errors import AuditNotDurable, AuditUnavailable
from jitgate.store.db import Database
from jitgate.store.driver import SQLITE, DedicatedConnection

log = logging.getLogger(__name__)

_SyncRequest = tuple[asyncio.AbstractEventLoop, list[tuple["asyncio.Future[int] | None", int]]]


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
        retry_seconds: float = RETRY_FIRST_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
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
        self.retry_seconds = retry_seconds  # first wait before an unawaited event is retried
        self.wait_seconds = wait_seconds  # the longest a waiter waits (then: not durable)
        self.given_up = 0  # unawaited events dropped after every retry failed
        self.batches = 0
        self.written = 0
        self.failures = 0
        self.syncs = 0
        # Commits reach the operating system at once and the disk through _fsync_wal, one
        # fsync serving every commit made meanwhile (SQLite's FULL would fsync inside each
        # commit, on the event loop). The loop's connection never waits for SQLite's lock (busy_timeout 0); a batch that
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
        # One batch at a time on the connection, whoever writes; also orders the loop's writes
        # and sync requests against stop() in another thread (re-entrant: _write holds it
        # while _after_write asks for a sync).
        self._lock = threading.RLock()
        self._pending: list[Item] = []
        self._retry: list[Item] = []  # unawaited events whose write failed, tried again later
        self._retry_handle: asyncio.TimerHandle | None = None
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
        self._database_inode: int | None = None  # the file the connections write, at start
        # What may hang (a sync, a batch waiting for a lock held elsewhere) is watched by one
        # timer each, not one per waiter: past wait_seconds every waiter is answered.
        self._in_sync: list[tuple[asyncio.Future[int] | None, int]] = []
        self._in_thread_batch: list[Item] = []
        self._sync_watch: asyncio.TimerHandle | None = None
        self._thread_watch: asyncio.TimerHandle | None = None
        # Set once an fsync fails: on Linux the pages that failed are marked clean, so a later
        # fsync "succeeds" without them, and SQLite's recovery stops at the first bad frame,
        # losing every later commit too. Nothing written after that is claimed durable again.
        self.broken: str | None = None
        # Set while a sync or a locked batch is past wait_seconds: awaited events are refused.
        self.overdue: str | None = None
        self._sync_requests: queue.SimpleQueue[_SyncRequest | None] | None = None
        self._syncer: threading.Thread | None = None
        self._stopped = False
        self._accepting = threading.Lock()  # orders record() against stop()

    # lifecycle
    def start(self) -> None:
        if self._database_inode is None:
            with contextlib.suppress(OSError, RuntimeError):  # checked at each sync when known
                self._database_inode = os.stat(self._database()).st_ino
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

    async def drain(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._retry_handle is not None:  # the failed outcomes get one more try now
            self._retry_handle.cancel()
            self._retry_handle = None
        self._pending, self._retry = self._retry + self._pending, []
        while loop.time() < deadline:
            if self._pending and not self._in_thread and not self._syncing:
                if self._flush_handle is not None:
                    self._flush_handle.cancel()
                    self._flush_handle = None
                self._flush()
            if self._sync_timer is not None:  # "os" durability: sync now, not in 50 ms
                self._sync_timer.cancel()
                self._sync_soon()
            if not (self._pending or self._in_thread or self._syncing or self._unsynced):
                break
            await asyncio.sleep(0.001)
        for handle in (
            self._flush_handle,
            self._retry_handle,
            self._sync_timer,
            self._sync_watch,
            self._thread_watch,
        ):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._retry_handle = self._sync_timer = None
        self._sync_watch = self._thread_watch = None

    def stop(self) -> None:
        """Write what is still pending, make it durable, and release the connection.

        Call ``drain`` first on the writer's loop: ``stop`` may then run in another thread.
        A call still waiting then (one that outlived the server's grace) is told the writer
        stopped and forwards nothing; its event is not written, unless it already was."""
        with self._accepting:  # record() and record_nowait() refuse from here on
            self._stopped = True
        with self._lock:  # the loop writes and asks for syncs no more (see _write, _sync_soon)
            pending, self._pending, self._retry = self._retry + self._pending, [], []
            unsynced, self._unsynced = self._unsynced, []
        if self._sync_requests is not None and self._syncer is not None:
            self._sync_requests.put(None)  # the sync thread finishes what it was asked, then ends
            self._syncer.join(10)
            self._sync_requests = None
        outcomes = [item for item in pending if item.future is None]
        refused = [item.future for item in pending if item.future is not None]
        with self._lock:
            if outcomes:
                try:
                    results = write_batch(self._waiting_connection, self.clock, outcomes)
                    self.batches += 1
                    self.written += sum(1 for r in results if not isinstance(r, BaseException))
                except Exception as exc:  # noqa: BLE001 - logged; nobody waits for outcomes
                    self.failures += 1
                    log.error(
                        "audit write at shutdown failed for %d events: %s", len(outcomes), exc
                    )
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
        waiting = refused + [future for future, _ in unsynced if future is not None]
        if waiting and self._loop is not None:
            answers = [(future, AuditUnavailable(STOPPED)) for future in waiting]
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                self._loop.call_soon_threadsafe(deliver_all, answers)

    # recording
    async def record(self, event: NewEvent, guard: Guard | None = None) -> int:
        return await self.submit(event, guard)

    def submit(self, event: NewEvent, guard: Guard | None = None) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._accepting:  # stop() in another thread takes _pending after it refuses
            if self._stopped or self._sync_requests is None:
                raise AuditUnavailable(NOT_RUNNING)
            if self.broken is not None:
                raise AuditUnavailable(self.broken)
            if self.overdue is not None:
                raise AuditUnavailable(self.overdue)
            self._pending.append(Item(event, future, guard))
        self._schedule(loop, urgent=True)
        return future

    def record_nowait(self, event: NewEvent) -> None:
        with self._accepting:
            stopped = self._stopped
            if not stopped:
                self._pending.append(Item(event, None))
        if stopped:
            self.given_up += 1
            log_refused_after_stop(event)
            return
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
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        self._write(batch)

    def _flush_retry(self) -> None:
        """Try again, in a batch of their own, the unawaited events whose write failed."""
        self._retry_handle = None
        if not self._retry:
            return
        if self._in_thread:
            self._retry_later()
            return
        batch, self._retry = self._retry[: self.max_batch], self._retry[self.max_batch :]
        self._write(batch)
        if self._retry:
            self._retry_later()

    def _retry_later(self) -> None:
        if self._retry_handle is None and self._loop is not None and self._retry:
            delay = retry_delay(self._retry[0].attempts, self.retry_seconds)
            self._retry_handle = self._loop.call_later(delay, self._flush_retry)

    def _write(self, batch: list[Item]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            with self._lock:
                if self._stopped:  # stop() took everything else: this batch is refused
                    outcomes: list[int | BaseException] | Exception = AuditUnavailable(STOPPED)
                else:
                    outcomes = self._write_now(batch)
                self._after_write(batch, outcomes)
        except _Busy:
            self._in_thread = True
            self._in_thread_batch = batch
            self._thread_watch = loop.call_later(self.wait_seconds, self._answer_overdue)
            assert self._executor is not None, "audit writer not started"
            done = loop.run_in_executor(self._executor, self._write_waiting, batch)
            done.add_done_callback(lambda f: self._thread_done(batch, f))
            return
        if self._pending:
            self._schedule(loop, urgent=any(item.future is not None for item in self._pending))

    def _write_now(self, batch: list[Item]) -> list[int | BaseException] | Exception:
        """The batch's transaction on the loop's thread, unless another writer holds the
        database (then _Busy: it waits in a worker thread instead of stalling the loop)."""
        try:
            return write_batch(self._connection, self.clock, batch)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise _Busy from None
            return exc
        except Exception as exc:  # noqa: BLE001 - every waiter of the batch fails
            return exc

    def _write_waiting(self, batch: list[Item]) -> list[int | BaseException] | Exception:
        with self._lock:
            try:
                return write_batch(self._waiting_connection, self.clock, batch)
            except Exception as exc:  # noqa: BLE001 - every waiter of the batch fails
                return exc

    def _thread_done(
        self, batch: list[Item], done: asyncio.Future[list[int | BaseException] | Exception]
    ) -> None:
        self._in_thread = False
        self._in_thread_batch = []
        if self._thread_watch is not None:
            self._thread_watch.cancel()
            self._thread_watch = None
        self._overdue_over()
        outcomes = done.result() if not done.cancelled() else RuntimeError("cancelled")
        with self._lock:
            self._after_write(batch, outcomes)
        if self._pending and self._loop is not None:
            self._schedule(self._loop, urgent=any(i.future is not None for i in self._pending))

    def _after_write(
        self, batch: list[Item], outcomes: list[int | BaseException] | Exception
    ) -> None:
        if isinstance(outcomes, Exception):
            self.failures += 1
            log.error("audit write failed for %d events: %s", len(batch), outcomes)
            error = AuditUnavailable(UNAVAILABLE)
            for item in batch:
                deliver(item.future, error)
            retry, given_up = to_retry(batch)
            if self._stopped:  # nothing will be written any more
                given_up, retry = given_up + retry, []
            self.given_up += len(given_up)
            log_given_up(given_up)
            self._retry.extend(retry)
            self._retry_later()
            return
        self.batches += 1
        committed: list[tuple[asyncio.Future[int] | None, int]] = []
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                deliver(item.future, outcome)
            else:
                self.written += 1
                committed.append((item.future, outcome))
        if self.durability == "os":
            # Committed to the operating system: survives jitgate being killed. The disk
            # catches up within os_sync_seconds, unless a sync has failed since the event was
            # handed in (found in review): then it is not known to get there.
            for future, seq in committed:
                deliver(future, AuditNotDurable(NOT_DURABLE) if self.broken else seq)
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
        if self._syncing:
            return  # the running sync starts the next one when it finishes
        with self._lock:  # never behind the sync thread's end (stop() holds it to take over)
            if self._stopped or self._sync_requests is None or self._loop is None:
                return  # stop() answers what is left in _unsynced
            self._syncing = True
            waiting, self._unsynced = self._unsynced, []
            if self.durability == "fsync":  # "os": nobody waits for the disk
                self._in_sync = waiting
                self._sync_watch = self._loop.call_later(self.wait_seconds, self._answer_overdue)
            self._sync_requests.put((self._loop, waiting))

    def _sync_thread(self, requests: queue.SimpleQueue[_SyncRequest | None]) -> None:
        """fsync the log for each request and hand the waiters back to their loop (a thread of
        its own: cheaper per sync than an executor's futures, which the loop pays for)."""
        while (request := requests.get()) is not None:
            loop, waiting = request
            error: Exception | None = None
            try:
                self._fsync_wal()
            except Exception as exc:  # noqa: BLE001 - every waiter of this sync fails
                error = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(self._synced, waiting, error)

    def _synced(
        self, waiting: list[tuple[asyncio.Future[int] | None, int]], error: Exception | None
    ) -> None:
        self._syncing = False
        self._in_sync = []
        if self._sync_watch is not None:
            self._sync_watch.cancel()
            self._sync_watch = None
        self._overdue_over()
        if error is not None:
            self.failures += 1
            if self.broken is None:
                log.critical(
                    "audit log fsync failed: %s; calls are refused until jitgate restarts", error
                )
            self.broken = BROKEN
        if self.broken is not None:
            # Committed, so the events are in the log, but a crash could still lose them: the
            # waiters are told so (the gateway then records that it did not forward).
            deliver_all([(future, AuditNotDurable(NOT_DURABLE)) for future, _ in waiting])
        else:
            self.syncs += 1
            deliver_all(list(waiting))  # type: ignore[arg-type]
        if self._unsynced:
            self._sync_soon()
        elif self._pending and self._loop is not None:
            self._schedule(self._loop, urgent=any(i.future is not None for i in self._pending))

    def _answer_overdue(self) -> None:
        """A sync or a locked batch has taken longer than wait_seconds: answer every waiter.

        Events already committed or being written may still reach the log, so their waiters
        are told "not durable" (they record forwarding nothing). Awaited events not yet written
        never will be: they leave the queue and are told "unavailable", so nothing of theirs
        is written later (a one-call grant stays unused). Until the sync or batch ends, new
        awaited events are refused at once (``overdue``)."""
        self.overdue = too_slow(self.wait_seconds)
        maybe_written = [future for future, _ in self._in_sync + self._unsynced]
        maybe_written += [item.future for item in self._in_thread_batch]
        not_written = [item.future for item in self._pending if item.future is not None]
        self._pending = [item for item in self._pending if item.future is None]
        not_durable = AuditNotDurable(self.overdue)
        unavailable = AuditUnavailable(self.overdue)
        answers: list[tuple[asyncio.Future[int] | None, int | BaseException]] = [
            (future, not_durable) for future in maybe_written if future is not None
        ]
        answers += [(future, unavailable) for future in not_written]
        deliver_all(answers)

    def _overdue_over(self) -> None:
        """The sync or locked batch that was overdue has ended: awaited events are taken again
        (unless the other of the two is still overdue)."""
        if self._sync_watch is None and self._thread_watch is None:
            self.overdue = None

    def _fsync_wal(self) -> None:
        """Flush the write-ahead log to disk: every commit made before this call is durable.

        fsync covers the file whichever descriptor it is called on, so a descriptor of our own
        flushes what the writer's connection wrote. The log is reopened if it was replaced.
        Fails if the database file was deleted or replaced under the writer, whose connections
        would go on writing a file no one can open again.
        """
        database = self._database()
        if self._database_inode is not None and os.stat(database).st_ino != self._database_inode:
            raise OSError(f"the audit database {database} was replaced while jitgate wrote it")
        path = self._wal()
        if not path.exists():  # not in WAL mode after all: the commits went to the file itself
            descriptor = os.open(database, os.O_RDONLY)
            try:
                os.fdatasync(descriptor)
            finally:
                os.close(descriptor)
            return
        if self._wal_fd is not None and os.fstat(self._wal_fd).st_ino != path.stat().st_ino:
            os.close(self._wal_fd)
            self._wal_fd = None
        if self._wal_fd is None:
            self._wal_fd = os.open(path, os.O_RDONLY)
        os.fdatasync(self._wal_fd)

    def _database(self) -> str:
        database = self.db.engine.url.database
        if not database or database == ":memory:":
            raise RuntimeError("the audit log needs a database file")
        return database

    def _wal(self) -> Path:
        if self._wal_path is None:
            self._wal_path = Path(self._database() + "-wal")
        return self._wal_path


class _Busy(Exception):
    """Another connection holds SQLite's write lock."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)
