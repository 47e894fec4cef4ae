"""The composition root for a running server: both listeners and the background jobs.

Background jobs (the sweeper) are safe to run in several processes sharing one database:
every state change they make is a conditional UPDATE, so exactly one process wins each grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import uvicorn

from jitgate.api.app import create_control_app
from jitgate.core import Jitgate

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 0.5


async def sweep_forever(core: Jitgate, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
    """Expire and lapse grants on time; a failure is logged and retried, never fatal."""
    while True:
        try:
            await asyncio.to_thread(core.grants.sweep)
            await asyncio.to_thread(core.policy.reload_if_changed)
        except Exception:
            log.exception("sweeper pass failed; retrying")
        await asyncio.sleep(interval)


def _server(app: object, host: str, port: int, **kwargs: object) -> uvicorn.Server:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        **kwargs,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server


async def serve(
    core: Jitgate,
    control: tuple[str, int],
    *,
    extra: list[uvicorn.Server] | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    control_server = _server(create_control_app(core), *control)
    servers = [control_server, *(extra or [])]
    sweeper = asyncio.create_task(sweep_forever(core))
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    try:
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.02)
        if ready is not None and all(s.started for s in servers):
            ready()
        await asyncio.gather(*tasks)
    finally:
        for server in servers:
            server.should_exit = True
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
