"""Unauthenticated failures: recorded singly until a source floods, then counted (audit/flood.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from jitgate.audit.flood import OTHER_SOURCES, FailureRecorder, FailureThrottle
from jitgate.audit.log import NewEvent
from jitgate.clock import FakeClock, SystemClock


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """asyncio.run in a thread of its own: another test in this process may have left a loop
    running in the main thread (pytest-xdist runs many tests per worker)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario).result()


def throttle(clock: FakeClock, **kwargs: float) -> FailureThrottle:
    limits = {"per_source": 3, "overall": 5, "window_seconds": 60.0, **kwargs}
    return FailureThrottle(clock, listener="aws", **limits)  # type: ignore[arg-type]


def test_each_source_gets_its_first_failures_written_then_counted() -> None:
    clock = FakeClock()
    limiter = throttle(clock)
    assert [limiter.admit("10.0.0.1", "InvalidAccessKeyId") for _ in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert limiter.admit("10.0.0.2", "SignatureDoesNotMatch") is True  # a source of its own
    assert limiter.drain() == []  # nothing closed yet
    clock.advance(60)
    (summary,) = limiter.drain()
    assert summary.source == "10.0.0.1"
    assert summary.count == 2
    assert summary.event_data()["codes"] == {"InvalidAccessKeyId": 2}
    assert summary.window_start < summary.window_end
    assert limiter.drain() == []  # given once


def test_all_sources_together_are_capped() -> None:
    limiter = throttle(FakeClock())
    admitted = [limiter.admit(f"10.0.0.{i}", "InvalidAccessKeyId") for i in range(8)]
    assert admitted == [True] * 5 + [False] * 3  # per_source never reached, overall did


def test_sources_beyond_the_limit_are_counted_together() -> None:
    clock = FakeClock()
    limiter = throttle(clock, per_source=1, overall=1, max_sources=2)
    for i in range(6):
        limiter.admit(f"10.0.0.{i}", "x")
    clock.advance(61)
    summaries = {s.source: s.count for s in limiter.drain()}
    # 10.0.0.0 was written; .1 and .2 hold their own counts; the rest share one.
    assert summaries == {"10.0.0.1": 1, "10.0.0.2": 1, OTHER_SOURCES: 3}


def test_a_new_window_starts_afresh() -> None:
    clock = FakeClock()
    limiter = throttle(clock, per_source=1)
    assert limiter.admit("a", "x") is True
    assert limiter.admit("a", "x") is False
    clock.advance(60)
    assert limiter.admit("a", "x") is True  # the old window closed, its count waits in drain
    assert [s.count for s in limiter.drain()] == [1]


def test_closing_early_ends_the_window_now() -> None:
    clock = FakeClock()
    limiter = throttle(clock, per_source=1)
    limiter.admit("a", "x")
    limiter.admit("a", "x")
    assert limiter.deadline() == clock.now() + (limiter.window)
    clock.advance(5)
    (summary,) = limiter.drain(close_current=True)
    assert summary.window_end == clock.now()
    assert limiter.deadline() is None


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        FailureThrottle(FakeClock(), listener="aws", per_source=0)


# --- the recorder: when the summaries are written -------------------------------------------------


def test_summaries_are_written_when_the_window_closes() -> None:
    written: list[NewEvent] = []

    async def scenario() -> None:
        limiter = FailureThrottle(
            SystemClock(), listener="control", per_source=1, window_seconds=0.05
        )
        recorder = FailureRecorder(limiter, written.append)
        assert recorder.admit("a", "unauthorized") is True
        assert recorder.admit("a", "unauthorized") is False
        assert recorder.admit("a", "unauthorized") is False
        assert written == []
        await asyncio.sleep(0.2)  # the timer fires at the window's end

    run(scenario())
    (event,) = written
    assert event.type == "denials.suppressed"
    assert event.actor == "jitgate"
    assert event.data["count"] == 2
    assert event.data["listener"] == "control"
    assert event.data["source"] == "a"


def test_a_closed_window_is_written_by_the_next_failure_without_waiting_for_its_timer() -> None:
    clock = FakeClock()
    written: list[NewEvent] = []

    async def scenario() -> None:
        recorder = FailureRecorder(throttle(clock, per_source=1), written.append)
        recorder.admit("a", "x")
        recorder.admit("a", "x")
        clock.advance(61)
        assert recorder.admit("a", "x") is True
        assert [e.data["count"] for e in written] == [1]

    run(scenario())


def test_a_summary_that_cannot_be_written_is_kept_and_tried_again() -> None:
    clock = FakeClock()
    written: list[NewEvent] = []
    failures = [RuntimeError("database is locked")]

    def write(event: NewEvent) -> None:
        if failures:
            raise failures.pop()
        written.append(event)

    async def scenario() -> None:
        recorder = FailureRecorder(throttle(clock, per_source=1), write)
        recorder.admit("a", "x")
        recorder.admit("a", "x")
        clock.advance(61)
        recorder.write_summaries()  # fails: kept
        assert written == []
        recorder.write_summaries()
        assert [e.data["count"] for e in written] == [1]

    run(scenario())


def test_closing_writes_what_was_counted_so_far() -> None:
    clock = FakeClock()
    written: list[NewEvent] = []

    async def scenario() -> None:
        recorder = FailureRecorder(throttle(clock, per_source=1), written.append)
        recorder.admit("a", "x")
        recorder.admit("a", "y")
        recorder.write_summaries(closing=True)

    run(scenario())
    assert [e.data["codes"] for e in written] == [{"y": 1}]
