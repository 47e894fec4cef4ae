"""The asynchronous agent SDK: ``AsyncGate``, for asyncio agents using aiobotocore.

>>> from jitgate.client import AsyncGate
>>> async def main() -> None:
...     async with AsyncGate() as gate:
...         async with gate.grant(
...             actions=["dynamodb:GetItem"],
...             resources=["arn:aws:dynamodb:us-east-1:123456789012:table/orders"],
...             minutes=5,
...             reason="look up order o-1",
...         ) as aws:
...             async with aws.create_client("dynamodb") as ddb:
...                 item = await ddb.get_item(TableName="orders", Key={"id": {"S": "o-1"}})

``aws`` is an aiobotocore session wired to jitgate's AWS endpoint with the grant's credentials;
the grant is revoked when the block ends. Same behaviour and errors as :class:`Gate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx

from jitgate.client import _core, errors
from jitgate.client._core import GateSettings, Progress, stderr_progress
from jitgate.client.gate import _scope_args
from jitgate.client.models import Grant, PlannedScope
from jitgate.client.sessions import aio_session


class AsyncGate:
    """The asyncio twin of :class:`jitgate.client.Gate` (same arguments, awaitable methods)."""

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
        self._workload_lock = asyncio.Lock()
        self._http = httpx.AsyncClient(
            base_url=self.settings.url,
            headers=self.settings.headers(),
            timeout=timeout,
            verify=verify,
        )
        self._info: dict[str, Any] | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncGate:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _auth(self) -> dict[str, str]:
        workload = self.settings.workload
        if workload is None:
            return {}
        async with self._workload_lock:
            if workload.needs_exchange():
                body = await asyncio.to_thread(workload.body)
                try:
                    response = await self._http.post("/v1/auth/workload", json=body)
                except httpx.HTTPError as exc:
                    raise _core.unreachable(self.settings.url, exc) from None
                workload.accept(_core.read(response))
            return {"authorization": f"Bearer {workload.token}"}

    async def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        if path != "/v1/info":
            kwargs["headers"] = await self._auth()
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _core.unreachable(self.settings.url, exc) from None
        return _core.read(response)

    async def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = dict(await self._send("GET", "/v1/info"))
        return self._info

    async def aws_endpoint(self) -> str:
        endpoint = self.settings.aws_endpoint or (await self.info()).get("aws_endpoint")
        if not endpoint:
            raise errors.JitgateClientError(
                "jitgate did not report its AWS endpoint; pass aws_endpoint= "
                "or set JITGATE_AWS_ENDPOINT"
            )
        return str(endpoint)

    async def region(self) -> str:
        return self.settings.region or str((await self.info()).get("region") or "us-east-1")

    async def request(
        self,
        actions: Sequence[str],
        resources: Sequence[str],
        *,
        reason: str,
        minutes: float | None = None,
        seconds: int | None = None,
    ) -> Grant:
        body = _core.grant_body(actions, resources, minutes=minutes, seconds=seconds, reason=reason)
        return Grant.from_json(await self._send("POST", "/v1/grants", json=body))

    async def get(self, grant_id: str) -> Grant:
        return Grant.from_json(await self._send("GET", f"/v1/grants/{grant_id}"))

    async def list_grants(self, status: str | None = None, limit: int = 100) -> list[Grant]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        payload = await self._send("GET", "/v1/grants", params=params)
        return [Grant.from_json(g) for g in payload["grants"]]

    async def revoke(self, grant_id: str, reason: str = "") -> Grant:
        return Grant.from_json(
            await self._send("POST", f"/v1/grants/{grant_id}/revoke", json={"comment": reason})
        )

    async def usage(self, grant_id: str) -> dict[str, Any]:
        return dict(await self._send("GET", f"/v1/grants/{grant_id}/usage"))

    async def wait(
        self, grant: Grant | str, timeout: float | None = None, *, withdraw: bool = True
    ) -> Grant:
        current = await self.get(grant) if isinstance(grant, str) else grant
        if current.status == "pending":
            console = (await self.info()).get("console_url")
            self.settings.progress(_core.pending_message(current, console))
        waiter = _core.Waiter(self.settings, current, timeout)
        was_pending = current.status == "pending"
        while current.status == "pending":
            if waiter.timed_out():
                if withdraw:
                    with contextlib.suppress(errors.JitgateClientError):
                        waiter.grant = await self.revoke(current.id, "approval timed out")
                raise waiter.timeout_error()
            await asyncio.sleep(waiter.sleep_seconds())
            current = await self.get(current.id)
            waiter.tick(current)
        if current.status == "active" and was_pending:
            self.settings.progress(f"grant {current.id} approved")
        return _core.check_usable(current)

    async def session(self, grant: Grant, *, region: str | None = None) -> Any:
        """An aiobotocore session for an active grant."""
        usable = _core.check_usable(grant)
        assert usable.credentials is not None
        return aio_session(
            usable.credentials,
            endpoint_url=await self.aws_endpoint(),
            region_name=region or await self.region(),
            grant=usable,
            verify=self.settings.verify,
        )

    @contextlib.asynccontextmanager
    async def grant(
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
    ) -> AsyncIterator[Any]:
        """Request, wait, yield an aiobotocore session, revoke on exit (see ``Gate.grant``)."""
        actions, resources = _scope_args(actions, resources, scope)
        if seconds is not None:
            minutes = None
        grant = await self.request(
            actions, resources, reason=reason, minutes=minutes, seconds=seconds
        )
        try:
            if grant.status == "pending":
                grant = await self.wait(grant, timeout)
            yield await self.session(grant, region=region)
        finally:
            await self._end(grant)

    async def _end(self, grant: Grant) -> None:
        if grant.status not in ("active", "pending"):
            return
        try:
            await self.revoke(grant.id, "task finished")
        except errors.JitgateClientError as exc:
            if exc.status == 409:
                return
            message = f"could not revoke grant {grant.id}: {exc.message} (it expires on its own)"
            self.settings.progress(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    async def scope_for(
        self,
        service: str,
        operation: str,
        params: Mapping[str, Any] | None = None,
        *,
        region: str | None = None,
    ) -> PlannedScope:
        body = {
            "service": service,
            "operation": operation,
            "params": dict(params or {}),
            "region": region or self.settings.region,
        }
        return PlannedScope.from_json(
            await self._send(
                "POST", "/v1/scope", json={k: v for k, v in body.items() if v is not None}
            )
        )
