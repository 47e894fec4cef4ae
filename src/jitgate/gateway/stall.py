"""Noticing a client that stops reading its answer, with one timer for every call.

A send to a client waits only when the client's socket buffer is full. Timing each send with
``asyncio.timeout`` cost two timer reschedules per piece (about 4% of a small call's CPU); here
each send only notes its deadline, and one sweep a fraction of the limit apart cancels the sends
that are past theirs. A stalled send is noticed between ``seconds`` and 1.25 x ``seconds``
(at most one second late).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientStalled(Exception):
    """The client read nothing for the whole limit while a piece of its answer waited."""


class StallWatch:
    def __init__(self) -> None:
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # sends now waiting, by task
        self._stalled: set[asyncio.Task[Any]] = set()  # cancelled by the sweep
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._period = 0.0

    async def send(
        self, send: Send, message: dict[str, Any], task: asyncio.Task[Any], seconds: float
    ) -> None:
        """``send(message)`` on ``task``, or ClientStalled once it has waited ``seconds``."""
        cancelling = task.cancelling()
        self._deadlines[task] = time.monotonic() + seconds
        loop = task.get_loop()
        if self._timer is None or self._timer_loop is not loop or seconds < 4 * self._period:
            self._arm(loop, seconds)
        try:
            await send(message)
        except asyncio.CancelledError:
            # Ours only if no one else cancelled the task too (jitgate stopping wins).
            if task in self._stalled and task.uncancel() <= cancelling:
                raise ClientStalled from None
            raise
        finally:
            del self._deadlines[task]
            self._stalled.discard(task)

    def waiting(self) -> int:
        return len(self._deadlines)

    def _arm(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """Sweep every quarter of the limit (at most a second apart); a shorter limit than the
        running sweep's, or a sweep armed on another loop (one that ended), arms it anew."""
        period = min(max(seconds / 4, 0.01), 1.0)
        if self._timer is not None:
            if self._timer_loop is loop and period >= self._period:
                return
            self._timer.cancel()
        self._timer_loop, self._period = loop, period
        self._timer = loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        for task, deadline in self._deadlines.items():
            if deadline <= now and task not in self._stalled:
                self._stalled.add(task)
                task.cancel()
        if self._deadlines and self._timer_loop is not None:
            self._timer = self._timer_loop.call_later(self._period, self._sweep)
