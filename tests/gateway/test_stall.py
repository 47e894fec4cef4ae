"""StallWatch: a send to a client that stops reading ends in ClientStalled, nothing else does."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from jitgate.gateway.stall import ClientStalled, StallWatch


async def _quick(message: dict[str, Any]) -> None:
    await asyncio.sleep(0)


async def _never(message: dict[str, Any]) -> None:
    await asyncio.Event().wait()


async def _send_on_own_task(watch: StallWatch, send: Any, seconds: float) -> None:
    task = asyncio.current_task()
    assert task is not None
    await watch.send(send, {"type": "http.response.body"}, task, seconds)


def test_a_send_that_completes_leaves_nothing_behind() -> None:
    async def go() -> int:
        watch = StallWatch()
        for _ in range(100):
            await _send_on_own_task(watch, _quick, 0.05)
        return watch.waiting()

    assert asyncio.run(go()) == 0


def test_a_send_that_waits_past_the_limit_is_stalled_within_a_quarter_more() -> None:
    async def go() -> float:
        watch = StallWatch()
        started = time.monotonic()
        with pytest.raises(ClientStalled):
            await _send_on_own_task(watch, _never, 0.2)
        assert watch.waiting() == 0
        return time.monotonic() - started

    waited = asyncio.run(go())
    assert 0.2 <= waited < 0.2 * 1.25 + 0.1  # the sweep's period plus scheduling slack


def test_only_the_stalled_send_fails_while_others_keep_going() -> None:
    async def go() -> list[object]:
        watch = StallWatch()

        async def steady() -> str:
            for _ in range(30):
                await _send_on_own_task(watch, _quick, 0.1)
                await asyncio.sleep(0.01)
            return "done"

        results = await asyncio.gather(
            _send_on_own_task(watch, _never, 0.1), steady(), steady(), return_exceptions=True
        )
        return [type(r).__name__ if isinstance(r, BaseException) else r for r in results]

    assert asyncio.run(go()) == ["ClientStalled", "done", "done"]


def test_someone_elses_cancellation_is_not_mistaken_for_a_stall() -> None:
    """jitgate stopping cancels the call: that must stay a cancellation, even when it lands
    together with the watch's own."""

    async def go() -> None:
        watch = StallWatch()
        task = asyncio.ensure_future(_send_on_own_task(watch, _never, 0.05))
        await asyncio.sleep(0.01)
        task.cancel()  # before the limit
        with pytest.raises(asyncio.CancelledError):
            await task

        both = asyncio.ensure_future(_send_on_own_task(watch, _never, 0.05))
        while not watch._stalled:  # the sweep has cancelled it, the task has not run yet
            await asyncio.sleep(0)
        both.cancel()
        with pytest.raises(asyncio.CancelledError):
            await both
        assert watch.waiting() == 0

    asyncio.run(go())


def test_the_sweep_stops_when_nothing_waits() -> None:
    async def go() -> None:
        watch = StallWatch()
        await _send_on_own_task(watch, _quick, 0.04)
        await asyncio.sleep(0.05)  # one sweep finds nothing waiting and does not re-arm
        assert watch._timer is None

    asyncio.run(go())


def test_a_watch_used_again_on_a_new_loop_still_notices_stalls() -> None:
    """A sweep armed on a loop that ended never fires: the next loop's sends must arm their own
    (found in review: a stale timer left the watch blind for good)."""
    watch = StallWatch()

    async def leave_a_sweep_pending() -> None:
        await _send_on_own_task(watch, _quick, 5.0)  # its sweep is a second away

    asyncio.run(leave_a_sweep_pending())

    async def stall() -> None:
        with pytest.raises(ClientStalled):
            await asyncio.wait_for(_send_on_own_task(watch, _never, 0.1), 2)

    asyncio.run(stall())


def test_a_shorter_limit_than_the_running_sweeps_is_noticed_in_its_own_time() -> None:
    async def go() -> float:
        watch = StallWatch()
        slow = asyncio.ensure_future(_send_on_own_task(watch, _never, 120))  # sweeps 1 s apart
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(ClientStalled):
            await _send_on_own_task(watch, _never, 0.1)
        waited = time.monotonic() - started
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return waited

    assert asyncio.run(go()) < 0.1 * 1.25 + 0.1
