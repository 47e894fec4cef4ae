"""The PostgreSQL audit writer: a thread, since each statement is a network round trip that
must not block the event loop. See jitgate.audit.batcher for the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass

from jitgate.audit.batcher import (
    NOT_DURABLE,
    NOT_RUNNING,
    RETRY_FIRST_SECONDS,
    UNAVAILABLE,
    WAIT_SECONDS,
    CommitUnconfirmed,
    Guard,
    Item,
    deliver_all,
    expire,
    log_given_up,
    log_refused_after_stop,
    retry_delay,
    to_retry,
    write_batch,
)
from jitgate.audit.log import NewEvent, chain_holds
from jitgate.clock import Clock
from jitgate.errors import AuditNotDurable, AuditUnavailable
from jitgate.store.db import Database
from jitgate.store.driver import SQLITE, DedicatedConnection, DriverTxn

log = logging.getLogger(__name__)

_STOP = object()


class _MaybeWritten(Exception):
    """A batch whose COMMIT went unanswered and whose fate could not be checked."""


@dataclass
class _Queued:
    item: Item
    loop: asyncio.AbstractEventLoop | None


class AuditBatcher:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        max_batch: int = 512,
        linger_seconds: float = 0.005,
        retry_seconds: float = RETRY_FIRST_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.db = db
        self.wait_seconds = wait_seconds  # the longest a waiter waits (then: not durable)
        self.clock = clock
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds  # how long outcomes wait for company
        self.retry_seconds = retry_seconds  # first wait before an unawaited event is retried
        self._retry: list[Item] = []  # unawaited events whose write failed (writer thread only)
        # When the retry list is next tried (monotonic); None: not scheduled. Set only when
        # nothing is scheduled, so new failures neither postpone nor hasten a waiting retry.
        self._retry_at: float | None = None
        self.given_up = 0
        self._queue: queue.SimpleQueue[_Queued | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._accepting = threading.Lock()  # orders record() against stop()
        self._stopped = False
        self._connection = DedicatedConnection(db, autocommit=False)
        # The server session (PostgreSQL's backend pid) of the DBAPI connection _session_of:
        # re-read whenever _connection has been replaced since.
        self._backend_pid: int | None = None
        self._session_of: object = None
        self.failures = 0
        self.batches = 0
        self.written = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    async def drain(self, timeout: float = 10.0) -> None:
        """Nothing to do on the loop: the thread writes all that is queued before _STOP."""

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        with self._accepting:  # nothing is queued behind _STOP, where no one would write it
            self._stopped = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        self._connection.close()

    async def record(self, event: NewEvent, guard: Guard | None = None) -> int:
        return await self.submit(event, guard)

    def submit(self, event: NewEvent, guard: Guard | None = None) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._accepting:
            if self._stopped:
                raise AuditUnavailable(NOT_RUNNING)
            self._queue.put(_Queued(Item(event, future, guard), loop))
        deadline = loop.call_later(self.wait_seconds, expire, future, self.wait_seconds)
        future.add_done_callback(lambda _: deadline.cancel())
        return future

    def record_nowait(self, event: NewEvent) -> None:
        with self._accepting:
            if not self._stopped:
                self._queue.put(_Queued(Item(event, None), None))
                return
        self.given_up += 1
        log_refused_after_stop(event)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                # In a batch of their own: one that cannot be written fails no waiter.
                self._retry_at = None
                batch, self._retry = self._retry[: self.max_batch], self._retry[self.max_batch :]
                self._write([_Queued(item, None) for item in batch])
                self._schedule_retry()  # what is left, if the write did not schedule it
                continue
            try:
                wait = None if self._retry_at is None else max(self._retry_at - time.monotonic(), 0)
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
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
        if self._retry:  # stopping: one last try
            batch, self._retry = self._retry, []
            self._write([_Queued(item, None) for item in batch])

    def _confirm(self, unconfirmed: CommitUnconfirmed) -> list[int | BaseException]:
        """The batch's results if a fresh connection finds it in the chain; else raises, and
        its waiters learn the events may be in the log (so they record forwarding nothing).

        The old session may still be committing (a synchronous standby, a slow disk): the
        chain is read only once that session is gone, so that what it shows is final."""
        old_session = self._backend_pid
        self._connection.drop()
        try:
            txn = self._connection.begin()
            try:
                ended = old_session is None or _session_ended(txn, old_session)
                landed = chain_holds(txn, unconfirmed.head) if ended else None
            finally:
                self._connection.rollback(txn)
        except Exception as exc:  # noqa: BLE001 - cannot tell: as unconfirmed
            log.error("audit write: could not check an unconfirmed COMMIT: %s", exc)
            landed = None
        if landed:
            log.warning("audit write: a COMMIT whose answer was lost had committed")
            return unconfirmed.results
        if landed is None:
            log.error("audit write: cannot tell whether a COMMIT whose answer was lost landed")
            raise _MaybeWritten(str(unconfirmed)) from unconfirmed
        raise unconfirmed

    def _note_session(self) -> None:
        """Remember the server session (PostgreSQL's backend pid) the next batch is written on,
        once per connection: after a lost COMMIT answer, _confirm waits for it to end."""
        if self.db.dialect == SQLITE:
            return
        raw = self._connection.raw()
        if raw is self._session_of:
            return
        self._backend_pid, self._session_of = None, raw
        cursor = raw.cursor()
        try:
            cursor.execute("SELECT pg_backend_pid()")
            self._backend_pid = int(cursor.fetchone()[0])
        finally:
            cursor.close()
            raw.rollback()  # no transaction left open before the batch's own

    def _schedule_retry(self) -> None:
        if self._retry and self._retry_at is None:
            delay = retry_delay(self._retry[0].attempts, self.retry_seconds)
            self._retry_at = time.monotonic() + delay

    def _write(self, batch: list[_Queued]) -> None:
        items = [queued.item for queued in batch]
        try:
            self._note_session()
            try:
                outcomes: list[int | BaseException] = write_batch(
                    self._connection, self.clock, items
                )
            except CommitUnconfirmed as unconfirmed:
                outcomes = self._confirm(unconfirmed)
        except Exception as exc:
            self.failures += 1
            self._connection.drop()  # it may be the connection that broke
            log.error("audit write failed for %d events: %s", len(batch), exc)
            error = AuditNotDurable(NOT_DURABLE) if isinstance(exc, _MaybeWritten) else None
            outcomes = [error or AuditUnavailable(UNAVAILABLE)] * len(batch)
            retry, given_up = to_retry(items)
            self.given_up += len(given_up)
            log_given_up(given_up)
            self._retry.extend(retry)
            self._schedule_retry()
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
                loop.call_soon_threadsafe(deliver_all, pairs)


SESSION_END_SECONDS = 5.0


def _session_ended(txn: DriverTxn, pid: int, seconds: float = SESSION_END_SECONDS) -> bool:
    """Ask PostgreSQL to end session ``pid`` and wait for it to be gone: a session that ends
    has committed or rolled back for good. False if it is still there after ``seconds``."""
    txn.execute("SELECT pg_terminate_backend(?)", (pid,))
    deadline = time.monotonic() + seconds
    while True:
        txn.execute("SELECT pg_stat_clear_snapshot()")  # else the first read is kept
        (count,) = txn.one("SELECT count(*) FROM pg_stat_activity WHERE pid = ?", (pid,))
        if count == 0:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
