"""uvicorn's "returned without completing response" ERROR is dropped only for calls jitgate
cut off on purpose; from any other call (a real fault) it still gets through."""

from __future__ import annotations

import contextvars
import logging

from jitgate.gateway.cutoff import OnPurposeCutOffs, cut_off_on_purpose

LINE = "ASGI callable returned without completing response."


def passes(message: str, *, marked: bool) -> bool:
    def in_a_call() -> bool:
        if marked:
            cut_off_on_purpose()
        record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, message, (), None)
        return OnPurposeCutOffs().filter(record)

    return contextvars.copy_context().run(in_a_call)  # each call's task has its own context


def test_the_line_is_dropped_for_a_call_cut_off_on_purpose() -> None:
    assert passes(LINE, marked=True) is False


def test_the_line_gets_through_for_any_other_call() -> None:
    assert passes(LINE, marked=False) is True


def test_other_errors_of_a_marked_call_get_through() -> None:
    assert passes("Exception in ASGI application\n", marked=True) is True


def test_a_mark_does_not_leak_into_the_next_call() -> None:
    assert passes(LINE, marked=True) is False
    assert passes(LINE, marked=False) is True
