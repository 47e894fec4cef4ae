"""The synchronous agent SDK: ``Gate``.

>>> from jitgate.client import Gate
>>> gate = Gate()  # JITGATE_URL and JITGATE_TOKEN from the environment
>>> with gate.grant(
...     actions=["s3:GetObject"],
...     resources=["arn:aws:s3:::reports/2026/q3.csv"],
...     minutes=5,
...     reason="summarise the Q3 report",
... ) as aws:
...     body = aws.client("s3").get_object(Bucket="reports", Key="2026/q3.csv")["Body"].read()

Inside the block ``aws`` is a boto3 ``Session`` wired to jitgate's AWS endpoint with the grant's
credentials; when the block ends the grant is revoked, so access exists only while it is used.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from jitgate.client import _core, errors
from jitgate.client._core import GateSettings, Progress, stderr_progress
from jitgate.client.models import Grant, PlannedScope
from jitgate.client.sessions import JitgateSession


class Gate:
    """A connection to jitgate's control plane as one agent.

    ``url`` and ``token`` default to ``JITGATE_URL`` and ``JITGATE_TOKEN``. ``aws_endpoint``
    (default: what the control plane reports at ``GET /v1/info``, or ``JITGATE_AWS_ENDPOINT``)
    is where the AWS SDK is pointed. Instead of a token, ``workload_token`` (a callable returning
    a fresh OIDC JWT, e.g. :func:`jitgate.client.token_file` or
    :func:`jitgate.client.github_actions_token`) or ``JITGATE_WORKLOAD_TOKEN_FILE`` authenticates
    as the agent the token maps to. ``approval_timeout`` bounds the wait for a human approver;
    ``progress`` receives one-line messages while waiting (default: stderr; ``None``: silent).
    ``verify`` is passed to both HTTP clients (``False`` or a CA bundle path for private TLS).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        aws_endpoint: str | None = None,
        region: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        approval_timeout: float = _core.DEFAULT_APPROVAL_TIMEOUT,
        poll_interval: float = _core.POLL_SECONDS,
        progress: Progress | None = stderr_progress,
        workload_token: Callable[[], str] | None = None,
    ) -> None:
        self.settings = GateSettings.resolve(
            url,
            token,
            aws_endpoint=aws_endpoint,
            region=region,
            verify=verify,
            timeout=timeout,
            approval_timeout=approval_timeout,
            poll_interval=poll_interval,
            progress=progress,
            workload_token=workload_token,
        )
        self._http = httpx.Client(
            base_url=self.settings.url,
            headers=self.settings.headers(),
            timeout=timeout,
            verify=verify,
        )
        self._info: dict[str, Any] | None = None

    # --- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth(self) -> dict[str, str]:
        """Per-request auth for a workload identity: exchange (and renew) the agent session."""
        workload = self.settings.workload
        if workload is None:
            return {}
        with workload.lock:
            if workload.needs_exchange():
                try:
                    response = self._http.post("/v1/auth/workload", json=workload.body())
                except httpx.HTTPError as exc:
                    raise _core.unreachable(self.settings.url, exc) from None
                workload.accept(_core.read(response))
            return {"authorization": f"Bearer {workload.token}"}

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        if path != "/v1/info":
            kwargs["headers"] = self._auth()
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _core.unreachable(self.settings.url, exc) from None
        return _core.read(response)

    def info(self) -> dict[str, Any]:
        """The control plane's public facts: version, AWS endpoint URL, region, console URL."""
        if self._info is None:
            self._info = dict(self._send("GET", "/v1/info"))
        return self._info

    @property
    def aws_endpoint(self) -> str:
        """The URL AWS SDKs are pointed at (``endpoint_url``)."""
        endpoint = self.settings.aws_endpoint or self.info().get("aws_endpoint")
        if not endpoint:
            raise errors.JitgateClientError(
                "jitgate did not report its AWS endpoint; pass aws_endpoint= "
                "or set JITGATE_AWS_ENDPOINT"
            )
        return str(endpoint)

    @property
    def region(self) -> str:
        return self.settings.region or str(self.info().get("region") or "us-east-1")

    # --- grants -----------------------------------------------------------------------------
    def request(
        self,
        actions: Sequence[str],
        resources: Sequence[str],
        *,
        reason: str,
        minutes: float | None = None,
        seconds: int | None = None,
    ) -> Grant:
        """Ask for a grant and return it as decided: ``active``, ``pending`` or ``denied``.

        Raises :class:`~jitgate.client.errors.RequestRefused` when the request itself is invalid
        (unknown action, wrong ARN type, wildcard, duration above the maximum, ...).
        """
        body = _core.grant_body(actions, resources, minutes=minutes, seconds=seconds, reason=reason)
        return Grant.from_json(self._send("POST", "/v1/grants", json=body))

    def get(self, grant_id: str) -> Grant:
        """A grant's current state (with credentials while it is active)."""
        return Grant.from_json(self._send("GET", f"/v1/grants/{grant_id}"))

    def list_grants(self, status: str | None = None, limit: int = 100) -> list[Grant]:
        """This agent's grants, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return [
            Grant.from_json(g) for g in self._send("GET", "/v1/grants", params=params)["grants"]
        ]

    def revoke(self, grant_id: str, reason: str = "") -> Grant:
        """End a grant now (active or still pending)."""
        return Grant.from_json(
            self._send("POST", f"/v1/grants/{grant_id}/revoke", json={"comment": reason})
        )

    def usage(self, grant_id: str) -> dict[str, Any]:
        """What a grant allowed against what its calls used (the least-privilege report)."""
        return dict(self._send("GET", f"/v1/grants/{grant_id}/usage"))

    def wait(
        self, grant: Grant | str, timeout: float | None = None, *, withdraw: bool = True
    ) -> Grant:
        """Wait until a pending grant is decided; return it once active.

        Raises GrantDenied, GrantNotActive (lapsed, revoked) or ApprovalTimeout; on timeout the
        pending request is withdrawn (revoked) unless ``withdraw`` is False.
        """
        current = self.get(grant) if isinstance(grant, str) else grant
        if current.status == "pending":
            self.settings.progress(_core.pending_message(current, self.info().get("console_url")))
        waiter = _core.Waiter(self.settings, current, timeout)
        was_pending = current.status == "pending"
        while current.status == "pending":
            if waiter.timed_out():
                if withdraw:
                    with contextlib.suppress(errors.JitgateClientError):
                        waiter.grant = self.revoke(current.id, "approval timed out")
                raise waiter.timeout_error()
            time.sleep(waiter.sleep_seconds())
            current = self.get(current.id)
            waiter.tick(current)
        if current.status == "active" and was_pending:
            self.settings.progress(f"grant {current.id} approved")
        return _core.check_usable(current)

    def session(self, grant: Grant, *, region: str | None = None) -> JitgateSession:
        """A boto3 Session for an active grant (its credentials, jitgate's endpoint)."""
        usable = _core.check_usable(grant)
        assert usable.credentials is not None
        return JitgateSession(
            usable.credentials,
            endpoint_url=self.aws_endpoint,
            region_name=region or self.region,
            grant=usable,
            verify=self.settings.verify,
        )

    @contextlib.contextmanager
    def grant(
        self,
        actions: Sequence[str] | None = None,
        resources: Sequence[str] | None = None,
        *,
        reason: str,
        minutes: float | None = 5,
        seconds: int | None = None,
        scope: PlannedScope | None = None,
        region: str | None = None,
        timeout: float | None = None,
    ) -> Iterator[JitgateSession]:
        """Request a grant, wait for approval if needed, yield a boto3 Session, revoke on exit.

        ``scope`` (from :meth:`scope_for`) may stand in for ``actions`` and ``resources``.
        ``session.grant`` is the :class:`Grant`. Denial, lapse and timeout raise (see
        :meth:`wait`); a request jitgate finds invalid raises RequestRefused.
        """
        actions, resources = _scope_args(actions, resources, scope)
        if seconds is not None:
            minutes = None
        grant = self.request(actions, resources, reason=reason, minutes=minutes, seconds=seconds)
        try:
            if grant.status == "pending":
                grant = self.wait(grant, timeout)
            session = self.session(grant, region=region)
            yield session
        finally:
            self._end(grant)

    def _end(self, grant: Grant) -> None:
        if grant.status not in ("active", "pending"):
            return
        try:
            self.revoke(grant.id, "task finished")
        except errors.JitgateClientError as exc:
            if exc.status == 409:  # already expired or ended: nothing left to revoke
                return
            message = f"could not revoke grant {grant.id}: {exc.message} (it expires on its own)"
            self.settings.progress(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # --- scope ------------------------------------------------------------------------------
    def scope_for(
        self,
        service: str,
        operation: str,
        params: Mapping[str, Any] | None = None,
        *,
        region: str | None = None,
    ) -> PlannedScope:
        """The exact actions and ARNs a planned call needs (``POST /v1/scope``).

        ``service`` and ``operation`` are as boto3 names them (``"s3"``, ``"GetObject"`` or
        ``"get_object"``), ``params`` the call's keyword arguments.
        """
        body = {
            "service": service,
            "operation": operation,
            "params": dict(params or {}),
            "region": region or self.settings.region,
        }
        return PlannedScope.from_json(
            self._send("POST", "/v1/scope", json={k: v for k, v in body.items() if v is not None})
        )


def _scope_args(
    actions: Sequence[str] | None, resources: Sequence[str] | None, scope: PlannedScope | None
) -> tuple[list[str], list[str]]:
    if scope is not None:
        if actions is not None or resources is not None:
            raise TypeError("give scope= or actions= and resources=, not both")
        return list(scope.actions), list(scope.resources)
    if actions is None or resources is None:
        raise TypeError("actions= and resources= are required (or scope=)")
    return list(actions), list(resources)
