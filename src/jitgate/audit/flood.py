"""Unauthenticated failures are recorded, without letting a flood of them fill the audit log.

Anyone who can reach a listener can send requests that fail before they are authenticated
(unknown access key, bad signature, missing bearer token). Recording each one in full would let
an anonymous caller grow the log without bound and keep the audit writer busy while real calls
wait behind it. So, per window (a minute by default), each source address gets its first
``per_source`` failures recorded one by one, and all sources together ``overall``; beyond that a
failure is only counted, and when the window closes one ``denials.suppressed`` event per source
records how many were not written singly, with their error codes. Nothing goes unrecorded: the
counts are in the log. Authenticated callers' denials never pass through here; they are always
recorded one by one.

:class:`FailureThrottle` is the pure counting; :class:`FailureRecorder` writes its summaries
from the event loop when a window closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jitgate.audit.log import NewEvent
from jitgate.clock import Clock, isoformat
from jitgate.config import Settings

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # how soon a summary that could not be written is tried again
OTHER_SOURCES = "*"  # counts of sources beyond max_sources are kept under this name


@dataclass
class Suppressed:
    """Failures from one source in one window that were counted instead of written singly."""

    listener: str
    source: str
    window_start: datetime
    window_end: datetime
    codes: Counter[str] = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return sum(self.codes.values())

    def event_data(self) -> dict[str, Any]:
        return {
            "listener": self.listener,
            "source": self.source,
            "count": self.count,
            "codes": dict(sorted(self.codes.items())),
            "window_start": isoformat(self.window_start),
            "window_end": isoformat(self.window_end),
        }


class FailureThrottle:
    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock, listener: str) -> FailureThrottle:
        return cls(
            clock,
            listener=listener,
            per_source=settings.failures_per_source,
            overall=settings.failures_overall,
        )

    def __init__(
        self,
        clock: Clock,
        *,
        listener: str,
        per_source: int = 20,
        overall: int = 200,
        window_seconds: float = 60.0,
        max_sources: int = 10_000,
    ) -> None:
        if per_source < 1 or overall < 1 or window_seconds <= 0 or max_sources < 1:
            raise ValueError("failure throttle limits must be positive")
        self.clock = clock
        self.listener = listener
        self.per_source = per_source
        self.overall = overall
        self.window = timedelta(seconds=window_seconds)
        self.max_sources = max_sources
        self._start: datetime | None = None
        self._written: Counter[str] = Counter()
        self._written_overall = 0
        self._suppressed: dict[str, Suppressed] = {}
        self._closed: list[Suppressed] = []

    def admit(self, source: str, code: str) -> bool:
        """True: write this failure in full. False: it has been counted for a summary."""
        now = self.clock.now()
        self._roll(now)
        if self._start is None:
            self._start = now
        if self._written[source] < self.per_source and self._written_overall < self.overall:
            self._written[source] += 1
            self._written_overall += 1
            return True
        key = source
        if key not in self._suppressed and len(self._suppressed) >= self.max_sources:
            key = OTHER_SOURCES
        summary = self._suppressed.get(key)
        if summary is None:
            summary = self._suppressed[key] = Suppressed(
                self.listener, key, self._start, self._start + self.window
            )
        summary.codes[code] += 1
        return False

    def deadline(self) -> datetime | None:
        """When the current window closes, if it holds anything counted and not yet drained."""
        if self._start is None or not self._suppressed:
            return None
        return self._start + self.window

    def drain(self, *, close_current: bool = False) -> list[Suppressed]:
        """The summaries of every window that has closed, each given once.

        ``close_current`` closes the open window now (a server stopping writes what it counted).
        """
        self._roll(self.clock.now(), force=close_current)
        closed, self._closed = self._closed, []
        return closed

    def has_closed(self) -> bool:
        """Whether a closed window's summaries wait to be drained."""
        return bool(self._closed)

    def give_back(self, summaries: list[Suppressed]) -> None:
        """Summaries that could not be written: :meth:`drain` gives them again."""
        self._closed[:0] = summaries

    def _roll(self, now: datetime, *, force: bool = False) -> None:
        if self._start is None or (not force and now < self._start + self.window):
            return
        for summary in self._suppressed.values():
            summary.window_end = min(summary.window_end, now)
        self._closed.extend(self._suppressed.values())
        self._start = None
        self._written.clear()
        self._written_overall = 0
        self._suppressed = {}


class FailureRecorder:
    """A throttle plus the timer that writes its summaries (``denials.suppressed`` events) when
    a window closes. Use it from the event loop; ``write`` must not block for long."""

    def __init__(self, throttle: FailureThrottle, write: Callable[[NewEvent], None]) -> None:
        self.throttle = throttle
        self._write = write
        self._timer: asyncio.TimerHandle | None = None

    def admit(self, source: str, code: str) -> bool:
        """True: record this failure in full. False: counted; its summary will be written."""
        admitted = self.throttle.admit(source, code)
        if self.throttle.has_closed():
            self.write_summaries()  # a window closed before its timer fired: write it now
        elif not admitted:
            self._write_later()
        return admitted

    def refusals(self, event_type: str) -> Callable[[str, str, str], None]:
        """A listener's report of requests it refused before any app saw them (``source``,
        ``code``, ``message``): each an anonymous ``event_type`` event, through this throttle."""

        def report(source: str, code: str, message: str) -> None:
            if self.admit(source, code):
                data = {"code": code, "message": message, "source": source}
                self._write(NewEvent(event_type, "anonymous", data=data))

        return report

    def write_summaries(self, *, closing: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        summaries = self.throttle.drain(close_current=closing)
        while summaries:
            try:
                self._write(
                    NewEvent("denials.suppressed", "jitgate", data=summaries[0].event_data())
                )
            except Exception as exc:
                if closing:
                    raise
                log.error("could not record suppressed denials yet (retrying): %s", exc)
                self.throttle.give_back(summaries)
                self._timer = asyncio.get_running_loop().call_later(
                    RETRY_SECONDS, self.write_summaries
                )
                return
            summaries.pop(0)
        if not closing:
            self._write_later()  # a timer may fire a little before the clock reaches the deadline

    def _write_later(self) -> None:
        deadline = self.throttle.deadline()
        if self._timer is not None or deadline is None:
            return
        delay = max(0.0, (deadline - self.throttle.clock.now()).total_seconds())
        self._timer = asyncio.get_running_loop().call_later(delay, self.write_summaries)
