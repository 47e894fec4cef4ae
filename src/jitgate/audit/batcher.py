"""Group commit for the hot path: many events, one transaction, one fsync.

The gateway awaits ``record`` before forwarding a call ("record before act"): the future
resolves only after the transaction holding the event has committed. Events that need no wait
(call outcomes) go through ``record_nowait``; they are still written, in order, by the same
writer thread. A failed write fails every waiter in that batch, so the gateway answers 503
and forwards nothing.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from jitgate.audit.log import NewEvent, append
from jitgate.clock import Clock
from jitgate.errors import AuditUnavailable
from jitgate.store.db import Database

log = logging.getLogger(__name__)


# A guard runs inside the write transaction, just before its event is appended. It raises to
# refuse the event (the waiter gets that exception and nothing is written for it); whatever it
# reads or changes commits together with the event.
Guard = Callable[[Connection], None]


@dataclass
class _Item:
    event: NewEvent
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[int] | None
    guard: Guard | None = None


_STOP = object()


class AuditBatcher:
    def __init__(
        self, db: Database, clock: Clock, max_batch: int = 512, linger_seconds: float = 0.005
    ) -> None:
        self.db = db
        self.clock = clock
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds  # how long outcomes wait for company
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
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

    async def record(self, event: NewEvent, guard: Guard | None = None) -> int:
        """Append an event and wait until it is committed; returns its seq.

        Raises AuditUnavailable when the write failed, or what ``guard`` raised.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put(_Item(event, loop, future, guard))
        return await future

    def record_nowait(self, event: NewEvent) -> None:
        self._queue.put(_Item(event, None, None))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Item] = [first]  # type: ignore[list-item]
            # Nobody waits on a batch of outcomes only (call.completed): give the next awaited
            # event a moment (at most linger_seconds in all) to join it and share one fsync.
            linger_until = time.monotonic() + self.linger_seconds
            while len(batch) < self.max_batch:
                try:
                    left = linger_until - time.monotonic()
                    if left <= 0 or any(item.future is not None for item in batch):
                        item = self._queue.get_nowait()
                    else:
                        item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        refused: list[tuple[_Item, Exception]] = []
        try:
            with self.db.write() as connection:
                accepted: list[_Item] = []
                for item in batch:
                    if item.guard is not None:
                        try:
                            item.guard(connection)
                        except Exception as exc:  # noqa: BLE001 - handed to the waiter
                            refused.append((item, exc))
                            continue
                    accepted.append(item)
                seqs = append(connection, self.clock.now(), [item.event for item in accepted])
        except Exception as exc:
            self.failures += 1
            log.error("audit write failed for %d events: %s", len(batch), exc)
            error = AuditUnavailable("the audit log cannot be written; nothing was forwarded")
            for item in batch:
                if item.future is not None and item.loop is not None:
                    item.loop.call_soon_threadsafe(_fail, item.future, error)
            return
        self.batches += 1
        self.written += len(accepted)
        for item, exc in refused:
            if item.future is not None and item.loop is not None:
                item.loop.call_soon_threadsafe(_fail, item.future, exc)
        for item, seq in zip(accepted, seqs, strict=True):
            if item.future is not None and item.loop is not None:
                item.loop.call_soon_threadsafe(_succeed, item.future, seq)


def _succeed(future: asyncio.Future[int], seq: int) -> None:
    if not future.done():
        future.set_result(seq)


def _fail(future: asyncio.Future[int], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
