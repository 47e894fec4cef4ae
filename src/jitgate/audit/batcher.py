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
from dataclasses import dataclass

from jitgate.audit.log import NewEvent, append
from jitgate.clock import Clock
from jitgate.errors import AuditUnavailable
from jitgate.store.db import Database

log = logging.getLogger(__name__)


@dataclass
class _Item:
    event: NewEvent
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[int] | None


_STOP = object()


class AuditBatcher:
    def __init__(self, db: Database, clock: Clock, max_batch: int = 512) -> None:
        self.db = db
        self.clock = clock
        self.max_batch = max_batch
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

    async def record(self, event: NewEvent) -> int:
        """Append an event and wait until it is committed; returns its seq.

        Raises AuditUnavailable when the write failed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put(_Item(event, loop, future))
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
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        try:
            with self.db.write() as connection:
                seqs = append(connection, self.clock.now(), [item.event for item in batch])
        except Exception as exc:
            self.failures += 1
            log.error("audit write failed for %d events: %s", len(batch), exc)
            error = AuditUnavailable("the audit log cannot be written; nothing was forwarded")
            for item in batch:
                if item.future is not None and item.loop is not None:
                    item.loop.call_soon_threadsafe(_fail, item.future, error)
            return
        self.batches += 1
        self.written += len(batch)
        for item, seq in zip(batch, seqs, strict=True):
            if item.future is not None and item.loop is not None:
                item.loop.call_soon_threadsafe(_succeed, item.future, seq)


def _succeed(future: asyncio.Future[int], seq: int) -> None:
    if not future.done():
        future.set_result(seq)


def _fail(future: asyncio.Future[int], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
