"""The composition root for a running server: both listeners and the background jobs.

Background jobs (the sweeper) are safe to run in several processes sharing one database:
every state change they make is a conditional UPDATE, so exactly one process wins each grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from botocore.credentials import Credentials as BotoCredentials

from jitgate.api.app import create_control_app
from jitgate.audit.batcher import audit_writer_for
from jitgate.audit.flood import FailureThrottle
from jitgate.awsapi import operations
from jitgate.bounded_http import AwsBoundedHeadProtocol, BoundedHeadProtocol
from jitgate.core import Jitgate
from jitgate.gateway.app import AwsEndpoint
from jitgate.gateway.cutoff import quiet_on_purpose_cut_offs
from jitgate.gateway.lookup import GrantLookup
from jitgate.gateway.roles import RoleSessions
from jitgate.gateway.upstream import Upstream, sts_assume_role, sts_client

log = logging.getLogger(__name__)
T = TypeVar("T")

SWEEP_INTERVAL_SECONDS = 0.5
# On stop, calls in flight get this long to finish; then they are cancelled, and each allowed
# one records its outcome ("jitgate stopped before the call finished") before the audit writer
# stops.
SHUTDOWN_GRACE_SECONDS = 10.0


async def sweep_forever(core: Jitgate, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
    """Expire and lapse grants on time; a failure is logged and retried, never fatal."""
    while True:
        try:
            await asyncio.to_thread(core.grants.sweep)
            await asyncio.to_thread(core.policy.reload_if_changed)
        except Exception:
            log.exception("sweeper pass failed; retrying")
        await asyncio.sleep(interval)


def discover_account_id(
    upstream_endpoint: str | None, credentials: BotoCredentials | None, region: str
) -> str:
    """The account jitgate's own identity belongs to (ARNs default to it)."""
    sts = sts_client(credentials, region, upstream_endpoint)
    return str(sts.get_caller_identity()["Account"])


def build_aws_endpoint(
    core: Jitgate,
    *,
    upstream_endpoint: str | None = None,
    credentials: BotoCredentials | None = None,
    account_id: str | None = None,
    failures: FailureThrottle | None = None,
    roles: dict[str, str] | None = None,
) -> AwsEndpoint:
    """The AWS endpoint as ``jitgate serve`` runs it; keyword arguments override settings."""
    settings = core.settings
    endpoint = upstream_endpoint or settings.upstream_endpoint
    roles = settings.aws_roles if roles is None else roles
    sessions = None
    if roles:
        assume = sts_assume_role(credentials, settings.aws_region, endpoint)
        sessions = RoleSessions(assume, core.clock)
    account = (
        account_id
        or settings.aws_account_id
        or discover_account_id(endpoint, credentials, settings.aws_region)
    )
    return AwsEndpoint(
        lookup=GrantLookup(core.db),
        master_key=core.master_key,
        batcher=audit_writer_for(core.db, core.clock, settings.audit_durability),
        upstream=Upstream(
            endpoint_override=endpoint,
            credentials=credentials,
            roles=roles,
            role_sessions=sessions,
            bucket_accounts=settings.aws_bucket_accounts,
        ),
        clock=core.clock,
        account_id=account,
        gateway_hosts=("localhost", settings.aws_listen[0]),
        failures=failures or FailureThrottle.from_settings(settings, core.clock, "aws"),
    )


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
    quiet_on_purpose_cut_offs()  # after uvicorn's logging set-up (in Config)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop's event loop (what uvicorn itself picks when uvloop is installed,
    and it comes with uvicorn[standard]); on asyncio's own loop where uvloop is missing."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(main)
    return uvloop.run(main)


def settle_for_serving() -> None:
    """What a long-running server does once before it serves (``jitgate serve``).

    Loads every supported service's botocore model now, then moves everything alive (the
    models, the policy, the libraries: most of the process's ~130 MiB) out of the cyclic
    garbage collector's way with ``gc.freeze()``. Without it a full collection walked all of
    that: one took 125 ms in the middle of a load test, about 60 us per call on average.
    """
    operations.warm_up()
    gc.collect()
    gc.freeze()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass
class Listeners:
    control: tuple[str, int]
    aws: tuple[str, int] | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None


async def serve(
    core: Jitgate,
    listeners: Listeners,
    *,
    endpoint: AwsEndpoint | None = None,
    ready: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
) -> None:
    """Run the control plane (and the AWS endpoint when given) until stopped."""
    aws_url = None
    if endpoint is not None and listeners.aws is not None:
        scheme = "https" if listeners.ssl_certfile else "http"
        aws_url = f"{scheme}://{_url_host(listeners.aws[0])}:{listeners.aws[1]}"
    control_app = create_control_app(
        core, aws_endpoint=aws_url, account_id=endpoint.account_id if endpoint else None
    )
    grace = {"timeout_graceful_shutdown": shutdown_grace}
    # Requests a listener refuses before its app are recorded like its failed authentications.
    control_refusals = control_app.state.auth_failures.refusals("request.refused")
    control_http = BoundedHeadProtocol.reporting_to(control_refusals)
    servers = [_server(control_app, *listeners.control, http=control_http, **grace)]
    if endpoint is not None and listeners.aws is not None:
        tls = {}
        if listeners.ssl_certfile:
            tls = {"ssl_certfile": listeners.ssl_certfile, "ssl_keyfile": listeners.ssl_keyfile}
        # Agents' SDKs connect to the AWS endpoint themselves: the peer address is the socket's,
        # never an X-Forwarded-For header a caller could write (it keys the failure throttle).
        servers.append(
            _server(
                endpoint,
                *listeners.aws,
                proxy_headers=False,
                http=AwsBoundedHeadProtocol.reporting_to(endpoint.failures.refusals("call.denied")),
                **grace,
                **tls,
            )
        )
        await endpoint.upstream.start()
        endpoint.batcher.start()
    sweeper = asyncio.create_task(sweep_forever(core))
    record_keeper = asyncio.create_task(core.integrity.run())  # checkpoints + shipping
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    try:
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.02)
        if ready is not None and all(s.started for s in servers):
            ready()
        if stop is not None:
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        else:
            await asyncio.gather(*tasks)
    finally:
        for server in servers:
            server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), timeout=shutdown_grace + 5
            )
        # uvicorn cancels the calls still running after the grace period but does not wait for
        # them: they settle (and queue their outcomes) before the audit writer stops.
        in_flight = [task for server in servers for task in server.server_state.tasks]
        if in_flight:
            await asyncio.wait(in_flight, timeout=5)
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        with contextlib.suppress(Exception):  # logged by the audit log; the stop goes on
            control_app.state.auth_failures.write_summaries(closing=True)
        if endpoint is not None:
            await endpoint.upstream.close()
            endpoint.failures.write_summaries(closing=True)
            await endpoint.batcher.drain()  # on this loop: settles waiters and timers
            await asyncio.to_thread(endpoint.batcher.stop)
        record_keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await record_keeper
        await asyncio.to_thread(core.integrity.shutdown)  # the last checkpoint, shipped


class ServerThread:
    """Run a server in a background thread (the demo, the sandbox and tests use this)."""

    def __init__(
        self,
        core: Jitgate,
        listeners: Listeners,
        endpoint: AwsEndpoint | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        self.core = core
        self.shutdown_grace = shutdown_grace
        self.listeners = listeners
        self.endpoint = endpoint
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="jitgate-server", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(
                self.core,
                self.listeners,
                endpoint=self.endpoint,
                ready=self._ready.set,
                stop=self._stop,
                shutdown_grace=self.shutdown_grace,
            )

        try:
            run_event_loop(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self.error = exc
            self._ready.set()

    def start(self, timeout: float = 20.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None:
            raise RuntimeError(f"jitgate server did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.shutdown_grace + 15)
