"""Control-plane routes for agents' tools: discovery, scope planning, least-privilege reports.

- ``GET /v1/info`` (no token): where the AWS endpoint is, the default region, the console URL;
  the SDK, ``jitgate credentials`` and the MCP server read it so an agent needs only the
  control plane's URL and its token.
- ``POST /v1/scope``: the exact (action, ARN) pairs planned calls need, from the gateway's own
  mapping (:mod:`jitgate.scope_for`).
- ``GET /v1/grants/{id}/usage``: granted against used for one grant (:mod:`jitgate.usage`).
- ``GET /v1/agents/{name}/report``: the same over an agent's recent grants, with suggestions.
- ``POST /v1/auth/workload`` (no token): exchange a workload's OIDC JWT for an agent session
  (:mod:`jitgate.identity.workload`).

Installed by :func:`jitgate.api.app.create_control_app`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from jitgate import __version__, scope_for, usage
from jitgate.core import Jitgate
from jitgate.errors import Forbidden, InvalidRequest, JitgateError, NotYours
from jitgate.identity.service import Principal

_WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - compared, never bound


class AccountUnknown(JitgateError):
    code = "account_unknown"
    status = 503


def aws_endpoint_url(core: Jitgate, configured: str | None, request: Request) -> str | None:
    """The URL agents point AWS SDKs at.

    ``[server] aws_endpoint_url`` in jitgate.toml wins (behind a load balancer or TLS proxy);
    else the URL the server was started with; for a wildcard listen address the host the caller
    used to reach the control plane, with the AWS endpoint's port.
    """
    explicit = core.settings.raw.get("server", {}).get("aws_endpoint_url")
    if isinstance(explicit, str) and explicit:
        return explicit.rstrip("/")
    if configured is None:
        return None
    parts = urlsplit(configured)
    if parts.hostname in _WILDCARD_HOSTS:
        host = request.url.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{parts.scheme}://{host}:{parts.port}"
    return configured


def console_url(core: Jitgate, request: Request) -> str:
    public = core.settings.raw.get("server", {}).get("public_url")
    base = public.rstrip("/") if isinstance(public, str) and public else str(request.base_url)
    return base.rstrip("/") + "/ui"


def install(
    app: FastAPI,
    core: Jitgate,
    principal_of: Callable[[Request], Principal],
    read_json: Callable[[Request], Any],
    *,
    aws_endpoint: str | None = None,
    account_id: str | None = None,
) -> None:
    """Add the routes to ``app``. ``aws_endpoint`` is the AWS listener's URL as started and
    ``account_id`` the account jitgate signs upstream calls with (ARNs are built in it)."""

    from jitgate.identity.workload import (
        WorkloadIdentity,
        load_workload_settings,
        require_enabled,
    )

    workload = WorkloadIdentity(core.db, core.clock, load_workload_settings(core.settings.raw))

    def account() -> str:
        value = account_id or core.settings.aws_account_id
        if not value:
            raise AccountUnknown(
                "jitgate does not know its AWS account; set [aws] account_id in jitgate.toml"
            )
        return str(value)

    def may_see_agent(principal: Principal, name: str) -> None:
        if principal.is_agent:
            if principal.name != name:
                raise NotYours(f"no agent named {name!r}")
        elif not principal.can_read_audit():
            raise Forbidden("this report needs an auditor, approver or admin")

    @app.get("/v1/info")
    def info(request: Request) -> dict[str, Any]:
        return {
            "version": __version__,
            "aws_endpoint": aws_endpoint_url(core, aws_endpoint, request),
            "region": core.settings.aws_region,
            "console_url": console_url(core, request),
        }

    @app.post("/v1/auth/workload", status_code=201)
    async def workload_exchange(request: Request) -> dict[str, Any]:
        """Exchange a workload's OIDC token ({"token": "<JWT>"}) for an agent session token."""
        verifier = require_enabled(workload)
        body = await read_json(request)
        token = body.get("token")
        if set(body) != {"token"} or not isinstance(token, str):
            raise InvalidRequest('send {"token": "<the OIDC JWT>"}')
        return await run_in_threadpool(verifier.exchange, token)

    @app.post("/v1/scope")
    async def plan_scope(request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        body = await read_json(request)
        calls = scope_for.planned_calls_from_body(body, core.settings.aws_region)
        answer = scope_for.plan(calls, account()).as_dict()
        if (
            principal.is_agent
            and answer.get("grant_request")
            and "problem" not in answer["grant_request"]
        ):
            answer["decision"] = _preview(core, principal, answer["grant_request"])
        return answer

    @app.get("/v1/grants/{grant_id}/usage")
    def grant_usage(request: Request, grant_id: str) -> dict[str, Any]:
        principal = principal_of(request)
        grant, _ = core.grants.get(principal, grant_id)
        events = core.audit.events(grant_id=grant_id, type_prefix="call.", limit=100_000)
        return usage.grant_usage(grant.as_dict(), [e.as_dict() for e in events])

    @app.get("/v1/agents/{name}/report")
    def agent_report(request: Request, name: str, limit: int = 50) -> dict[str, Any]:
        principal = principal_of(request)
        may_see_agent(principal, name)
        core.identity.get_agent(name)
        return build_agent_report(core, name, limit)


def build_agent_report(core: Jitgate, name: str, limit: int = 50) -> dict[str, Any]:
    """The per-agent least-privilege report over its ``limit`` newest grants."""
    from jitgate.identity.service import LOCAL_ADMIN

    grants = [
        g.as_dict()
        for g in core.grants.list(LOCAL_ADMIN, agent=name, limit=max(1, min(limit, 500)))
    ]
    usages = [
        usage.grant_usage(
            g,
            [
                e.as_dict()
                for e in core.audit.events(grant_id=g["id"], type_prefix="call.", limit=100_000)
            ],
        )
        for g in grants
    ]
    return usage.agent_report(name, grants, usages)


def _preview(core: Jitgate, principal: Principal, request: dict[str, Any]) -> dict[str, Any]:
    """How the policy would route a grant of exactly this scope for the asking agent."""
    from jitgate.api.app import explain

    try:
        result = explain(
            core, principal.name, request["actions"], request["resources"], 300, "scope preview"
        )
    except JitgateError as exc:
        return {"route": "unknown", "reasons": [exc.message]}
    return {
        "route": result.get("route"),
        "reasons": result.get("reasons", []),
        "max_duration_seconds": result.get("max_duration_seconds"),
    }
