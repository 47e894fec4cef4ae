"""Control-plane HTTP API (FastAPI). Bearer tokens; JSON errors that name the problem.

Request bodies are parsed here rather than by FastAPI's validators so that every refusal of a
grant request, malformed JSON included, goes through the grant service and is recorded.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from jitgate import __version__
from jitgate.audit.flood import FailureRecorder, FailureThrottle
from jitgate.audit.log import NewEvent
from jitgate.core import Jitgate
from jitgate.errors import (
    Forbidden,
    InvalidRequest,
    JitgateError,
    NotFound,
    NotYours,
    Unauthorized,
)
from jitgate.grants.service import check_duration
from jitgate.identity.service import Principal
from jitgate.scope import build_scope

MAX_BODY = 1024 * 1024


class GrantRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actions: list[str] = Field(description="Exact IAM actions, e.g. s3:GetObject")
    resources: list[str] = Field(description="Exact resource ARNs (or * for type-less actions)")
    duration_seconds: int = Field(300, description="Grant lifetime in seconds")
    reason: str = Field(description="What the task needs this access for")
    one_call: bool = Field(
        False, description="Approve one exact call, once, instead of a time window"
    )
    operation: str | None = Field(
        None, description="With one_call: the API operation the call must be, e.g. DeleteObject"
    )


class AgentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    groups: list[str] = []
    owner: str | None = None


class UserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: str
    groups: list[str] = Field([], description="Approver groups (@approver_group)")
    password: str | None = Field(None, description="Console password (argon2id-hashed)")


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = ""


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str = ""
    fingerprint: str | None = Field(
        None, description="The grant's fingerprint as shown; a request that differs is refused"
    )


class PolicyCheckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str
    actions: list[str]
    resources: list[str]
    duration_seconds: int = 300
    reason: str = "policy check"


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


class BodyTooLarge(InvalidRequest):
    code = "body_too_large"
    status = 413


async def _read_body(request: Request) -> bytes:
    """The request body, refused past MAX_BODY whether or not Content-Length says so.

    Read here rather than in a middleware so that an oversized grant request is refused like
    any other bad one: by the grant service, with its audit event.
    """
    too_large = BodyTooLarge(f"request body is larger than {MAX_BODY} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise too_large
    return bytes(body)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def _json_object(request: Request, allow_empty: bool = False) -> dict[str, Any]:
    raw = await _read_body(request)
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON, bad UTF-8 and numbers too long to convert.
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    if _holds_nul(value):
        raise InvalidRequest(NUL_REFUSED)
    return value


NUL_REFUSED = "text with a NUL character (\\u0000) is not accepted"


class NoNulInTheUrl:
    """A URL whose path or query decodes to text with NUL gets a 400 before any route runs
    (plain ASGI: streamed responses pass untouched)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").decode("latin-1")
            decoded = [part for pair in parse_qsl(query, keep_blank_values=True) for part in pair]
            if "\x00" in scope.get("path", "") or any("\x00" in part for part in decoded):
                await _error(400, InvalidRequest.code, NUL_REFUSED)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _holds_nul(value: Any) -> bool:
    """PostgreSQL cannot store NUL in text: refuse it at the door, not with a failed write."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _only_fields(body: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(
            f"unknown field(s): {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )
    missing = sorted(required - set(body))
    if missing:
        raise InvalidRequest(f"missing field(s): {', '.join(missing)}")


def create_control_app(
    core: Jitgate, *, aws_endpoint: str | None = None, account_id: str | None = None
) -> FastAPI:
    """The control-plane app. ``aws_endpoint`` (the AWS listener's URL) and ``account_id``
    (jitgate's upstream account) are reported to agents and used to plan scopes."""
    app = FastAPI(
        title="jitgate control plane",
        version=__version__,
        description="Just-in-time, scoped, audited AWS access for AI agents.",
        docs_url=None,
        redoc_url=None,
    )

    # Failed authentication is recorded one by one until a source floods; then counted.
    auth_failures = FailureRecorder(
        FailureThrottle.from_settings(core.settings, core.clock, "control"),
        lambda event: core.audit.record(core.clock.now(), event),
    )
    app.state.auth_failures = auth_failures

    @app.exception_handler(JitgateError)
    async def _jitgate_error(request: Request, exc: JitgateError) -> JSONResponse:
        if isinstance(exc, Forbidden | NotYours):
            principal = getattr(request.state, "principal", None)
            if principal is not None:
                core.audit.record(
                    core.clock.now(),
                    NewEvent(
                        "access.denied",
                        principal.actor,
                        agent=principal.name if principal.is_agent else None,
                        data={
                            "method": request.method,
                            "path": request.url.path,
                            "message": exc.message,
                        },
                    ),
                )
        elif isinstance(exc, Unauthorized) and auth_failures.admit(
            request.client.host if request.client else "unknown", exc.code
        ):
            core.audit.record(
                core.clock.now(),
                NewEvent(
                    "auth.failed",
                    "anonymous",
                    data={
                        "method": request.method,
                        "path": request.url.path,
                        "message": exc.message,
                    },
                ),
            )
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{' '.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()
        )
        return _error(400, InvalidRequest.code, problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal_error", "internal error; see the server log")

    def principal_of(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        principal = core.identity.authenticate(token.strip())
        request.state.principal = principal
        return principal

    def need_user(principal: Principal, *, admin: bool = False, audit: bool = False) -> None:
        if principal.is_agent:
            raise Forbidden("agent tokens cannot use this endpoint")
        if admin and not principal.is_admin():
            raise Forbidden("this endpoint needs an admin")
        if audit and not principal.can_read_audit():
            raise Forbidden("this endpoint needs an auditor, approver or admin")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """For load balancers and probes, without a token: whether anything is wrong, not the
        record's details (its head sequence number would tell anyone how busy everyone is;
        auditors read /v1/audit/status)."""
        return {
            "status": "ok",
            "version": __version__,
            "policy_error": core.policy.last_error,
            "audit_alarm": bool(core.integrity.health().get("alarm")),
        }

    # --- grants ---------------------------------------------------------------------------
    @app.post("/v1/grants", status_code=201, openapi_extra=_schema(GrantRequestBody))
    async def request_grant(request: Request) -> JSONResponse:
        principal = principal_of(request)
        try:
            body = await _json_object(request)
            allowed = {
                "actions",
                "resources",
                "duration_seconds",
                "reason",
                "agent",
                "one_call",
                "operation",
            }
            _only_fields(body, allowed, {"actions", "resources"})
        except InvalidRequest as exc:
            core.grants.record_refusal(
                principal,
                principal.name if principal.is_agent else None,
                [],
                [],
                None,
                exc,
                core.clock.now(),
            )
            raise
        grant, credentials = core.grants.request(
            principal,
            actions=body.get("actions"),  # type: ignore[arg-type]
            resources=body.get("resources"),  # type: ignore[arg-type]
            duration_seconds=body.get("duration_seconds"),
            reason=body.get("reason", ""),
            agent=body.get("agent"),
            one_call=body.get("one_call", False),
            operation=body.get("operation"),
        )
        return JSONResponse(grant.as_dict(credentials), status_code=201)

    @app.get("/v1/grants")
    def list_grants(
        request: Request, status: str | None = None, agent: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        principal = principal_of(request)
        grants = core.grants.list(principal, status=status, agent=agent, limit=limit)
        return {"grants": [g.as_dict() for g in grants]}

    @app.get("/v1/grants/{grant_id}")
    def get_grant(request: Request, grant_id: str) -> dict[str, Any]:
        principal = principal_of(request)
        grant, credentials = core.grants.get(principal, grant_id)
        return grant.as_dict(credentials)

    @app.get("/v1/grants/{grant_id}/calls")
    def grant_calls(request: Request, grant_id: str) -> dict[str, Any]:
        principal = principal_of(request)
        core.grants.get(principal, grant_id)  # visibility check
        events = core.audit.events(grant_id=grant_id, type_prefix="call.", limit=10_000)
        return {"grant_id": grant_id, "calls": [e.as_dict() for e in events]}

    async def _comment(request: Request) -> str:
        body = await _json_object(request, allow_empty=True)
        _only_fields(body, {"comment", "reason"}, set())
        value = body.get("comment", body.get("reason", ""))
        if not isinstance(value, str):
            raise InvalidRequest("comment must be a string")
        return value

    @app.post("/v1/grants/{grant_id}/approve", openapi_extra=_schema(ApproveBody))
    async def approve(request: Request, grant_id: str) -> dict[str, Any]:
        principal = principal_of(request)
        body = await _json_object(request, allow_empty=True)
        _only_fields(body, {"comment", "reason", "fingerprint"}, set())
        comment = body.get("comment", body.get("reason", ""))
        fingerprint = body.get("fingerprint")
        if not isinstance(comment, str):
            raise InvalidRequest("comment must be a string")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise InvalidRequest("fingerprint must be a string")
        return core.grants.approve(principal, grant_id, comment, fingerprint=fingerprint).as_dict()

    @app.post("/v1/grants/{grant_id}/deny", openapi_extra=_schema(CommentBody))
    async def deny(request: Request, grant_id: str) -> dict[str, Any]:
        principal = principal_of(request)
        return core.grants.deny(principal, grant_id, await _comment(request)).as_dict()

    @app.post("/v1/grants/{grant_id}/revoke", openapi_extra=_schema(CommentBody))
    async def revoke(request: Request, grant_id: str) -> dict[str, Any]:
        principal = principal_of(request)
        return core.grants.revoke(principal, grant_id, await _comment(request)).as_dict()

    # --- audit ----------------------------------------------------------------------------
    @app.get("/v1/audit")
    def audit(
        request: Request,
        after_seq: int = 0,
        limit: int = 100,
        grant_id: str | None = None,
        agent: str | None = None,
        type: str | None = None,  # noqa: A002 - the query parameter's public name
        tail: int | None = None,
    ) -> dict[str, Any]:
        need_user(principal_of(request), audit=True)
        if tail is not None:
            newest = core.audit.events(limit=max(1, min(tail, 1000)), newest_first=True)
            return {"events": [e.as_dict() for e in reversed(newest)]}
        events = core.audit.events(
            after_seq=after_seq,
            limit=max(1, min(limit, 1000)),
            grant_id=grant_id,
            agent=agent,
            types=[type] if type else None,
        )
        return {"events": [e.as_dict() for e in events]}

    @app.get("/v1/audit/verify")
    def audit_verify(request: Request) -> dict[str, Any]:
        need_user(principal_of(request), audit=True)
        return core.audit.verify().as_dict()

    # --- agents and users -----------------------------------------------------------------
    @app.post("/v1/agents", status_code=201, openapi_extra=_schema(AgentBody))
    async def create_agent(request: Request) -> JSONResponse:
        principal = principal_of(request)
        need_user(principal, admin=True)
        body = await _json_object(request)
        _only_fields(body, {"name", "groups", "owner"}, {"name"})
        groups = body.get("groups", [])
        if not isinstance(groups, list):
            raise InvalidRequest("groups must be a list of names")
        record, token = core.identity.create_agent(
            body["name"], groups, owner=body.get("owner"), actor=principal
        )
        return JSONResponse({**record.as_dict(), "token": token}, status_code=201)

    @app.get("/v1/agents")
    def list_agents(request: Request) -> dict[str, Any]:
        need_user(principal_of(request), audit=True)
        return {"agents": [a.as_dict() for a in core.identity.list_agents()]}

    @app.post("/v1/agents/{name}/disable")
    def disable_agent(request: Request, name: str) -> dict[str, Any]:
        principal = principal_of(request)
        need_user(principal, admin=True)
        return core.identity.set_agent_disabled(
            name, True, actor=principal, on_disable=core.grants.end_all_for_agent
        ).as_dict()

    @app.post("/v1/agents/{name}/enable")
    def enable_agent(request: Request, name: str) -> dict[str, Any]:
        principal = principal_of(request)
        need_user(principal, admin=True)
        return core.identity.set_agent_disabled(name, False, actor=principal).as_dict()

    @app.post("/v1/users", status_code=201, openapi_extra=_schema(UserBody))
    async def create_user(request: Request) -> JSONResponse:
        principal = principal_of(request)
        need_user(principal, admin=True)
        body = await _json_object(request)
        _only_fields(body, {"name", "role", "groups", "password"}, {"name", "role"})
        groups = body.get("groups", [])
        if not isinstance(groups, list):
            raise InvalidRequest("groups must be a list of names")
        record, token = core.identity.create_user(
            body["name"],
            body["role"],
            actor=principal,
            groups=groups,
            password=body.get("password"),
        )
        return JSONResponse({**record, "token": token}, status_code=201)

    @app.post("/v1/users/{name}/password")
    async def set_user_password(request: Request, name: str) -> dict[str, Any]:
        principal = principal_of(request)
        need_user(principal, admin=True)
        body = await _json_object(request)
        _only_fields(body, {"password"}, {"password"})
        core.identity.set_password(name, body["password"], actor=principal)
        return {"name": name, "password": True}

    @app.post("/v1/users/{name}/{verb}")
    def set_user_disabled(request: Request, name: str, verb: str) -> dict[str, Any]:
        principal = principal_of(request)
        need_user(principal, admin=True)
        if verb not in ("disable", "enable"):
            raise NotFound(f"no such endpoint: /v1/users/{{name}}/{verb}")
        core.identity.set_user_disabled(name, verb == "disable", actor=principal)
        return {"name": name, "disabled": verb == "disable"}

    # --- policy ---------------------------------------------------------------------------
    @app.post("/v1/policy/check", openapi_extra=_schema(PolicyCheckBody))
    async def policy_check(request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        body = await _json_object(request)
        _only_fields(
            body,
            {"agent", "actions", "resources", "duration_seconds", "reason"},
            {"actions", "resources"},
        )
        agent = principal.name if principal.is_agent else body.get("agent")
        if not isinstance(agent, str):
            raise InvalidRequest("name the agent to check for")
        return explain(
            core,
            agent,
            body["actions"],
            body["resources"],
            body.get("duration_seconds", 300),
            body.get("reason", "policy check"),
        )

    # --- the record's integrity: /v1/audit/keys (public), status, checkpoints, metrics -------
    from jitgate.audit.http import audit_integrity_router

    app.include_router(audit_integrity_router(core))

    # --- for agents' tools: /v1/info, /v1/scope, usage and least-privilege reports ----------
    from jitgate.api import agent_routes

    agent_routes.install(
        app, core, principal_of, _json_object, aws_endpoint=aws_endpoint, account_id=account_id
    )

    # --- the approver console (server-rendered HTML, cookie sessions) at /ui --------------
    from jitgate.web.app import create_console_app

    app.mount("/ui", create_console_app(core))
    app.add_middleware(NoNulInTheUrl)
    return app


def explain(
    core: Jitgate, agent: str, actions: Any, resources: Any, duration: Any, reason: str
) -> dict[str, Any]:
    """The decision a request would get, without creating anything."""
    record = core.identity.get_agent(agent)
    scope = build_scope(actions, resources, core.settings.sensitive_arns)
    core.policy.reload_if_changed()
    decision = core.policy.decide(agent, record.groups, scope, check_duration(duration), reason)
    return {
        "agent": agent,
        "groups": list(record.groups),
        "duration_seconds": duration,
        **decision.as_dict(),
        "pairs": [
            {
                "action": p.action,
                "resource": p.resource,
                "route": p.route,
                "policies": list(p.policies),
                "max_duration_seconds": p.max_duration_seconds,
                "reason": p.reason,
            }
            for p in decision.pairs
        ],
    }
