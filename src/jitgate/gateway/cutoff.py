"""Answers jitgate leaves unfinished on purpose, kept out of uvicorn's error log.

When an allowed call must stop mid-answer (its grant ended, the client stopped reading, the
upstream broke off), the gateway returns without finishing the response: uvicorn then closes
the connection and the client sees a cut-off answer, never a complete one. uvicorn also logs
"ASGI callable returned without completing response." at ERROR, an alarm about something
jitgate did on purpose, has logged with its reason and has recorded in the audit log.

The gateway marks such a call in its task's context (uvicorn runs each request in a task of
its own, and logs that line from the same task once the app returns). A filter on uvicorn's
logger drops the line for marked calls only: from any other call it still gets through.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

UNFINISHED = "ASGI callable returned without completing response"
SERVER_LOGGER = "uvicorn.error"

_cut_off: ContextVar[bool] = ContextVar("jitgate_cut_off_on_purpose", default=False)


def cut_off_on_purpose() -> None:
    """The current call's answer is left unfinished on purpose (already logged and recorded)."""
    _cut_off.set(True)


class OnPurposeCutOffs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_cut_off.get() and record.getMessage().startswith(UNFINISHED))


def quiet_on_purpose_cut_offs(logger_name: str = SERVER_LOGGER) -> None:
    """Install the filter on uvicorn's logger (once)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, OnPurposeCutOffs) for f in logger.filters):
        logger.addFilter(OnPurposeCutOffs())
