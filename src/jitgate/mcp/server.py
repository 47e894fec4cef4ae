"""The MCP server: grants and AWS calls as tools, for a model that must never hold a credential.

The server acts as one agent (``JITGATE_URL`` and that agent's ``JITGATE_TOKEN``). Its tools:

- ``explain_scope(service, operation, params, region)``: the exact actions and ARNs a planned
  call needs, and how the policy would route a grant of them;
- ``request_grant(actions, resources, reason, minutes)``: ask for a grant; a pending grant comes
  back with its id and where a person approves it;
- ``wait_for_approval(grant_id, timeout_seconds)``, ``get_grant(grant_id)``,
  ``list_grants(status)``, ``revoke_grant(grant_id, reason)``;
- ``call_aws(grant_id, service, operation, params, region)``: the call, made here through
  jitgate's AWS endpoint with the grant's credentials, which stay in this process.

No tool returns a credential. Secret values in results (``SecretString`` and the like) are
returned only when the grant includes the action that reads them, and are marked
(:mod:`jitgate.mcp.results`).

Transports: stdio (a desktop agent launches ``jitgate mcp``), and streamable HTTP
(``jitgate mcp --http HOST:PORT``), where every request must carry the agent's token as
``Authorization: Bearer ...``.
"""

from __future__ import annotations

import hmac
import json
import threading
from typing import Any

from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from jitgate.client import Gate, Grant, JitgateClientError
from jitgate.mcp.results import model_view

#: The longest one wait_for_approval call blocks; the model can call it again.
MAX_WAIT_SECONDS = 600

INSTRUCTIONS = """\
jitgate gives you short-lived, exactly scoped AWS access, one grant per task, recorded.
1. explain_scope(service, operation, params) tells you the exact IAM actions and ARNs a call needs.
2. request_grant(actions, resources, reason, minutes) asks for them. Give a truthful reason.
   A grant is 'active' at once, 'pending' (a person must approve: tell the user the
   approval link, then call wait_for_approval), or 'denied' (do not retry the same request).
3. call_aws(grant_id, service, operation, params) makes the call through jitgate. You never see
   credentials. A call outside the grant is refused and recorded.
4. revoke_grant(grant_id) when the task is done.
"""


class ToolFailure(Exception):
    """Raised by a tool to report a failure the model should read (becomes an error result)."""


def _tool_error(message: str) -> Exception:
    from mcp.server.mcpserver.exceptions import ToolError

    return ToolError(message)


class JitgateTools:
    """The tools' logic, independent of the MCP plumbing (so it is tested and reused as is)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self._lock = threading.Lock()

    # --- views ------------------------------------------------------------------------------
    def _console(self) -> str | None:
        try:
            value = self.gate.info().get("console_url")
        except JitgateClientError:
            return None
        return str(value) if value else None

    def summary(self, grant: Grant) -> dict[str, Any]:
        """What the model sees of a grant: never its credentials."""
        out: dict[str, Any] = {
            "grant_id": grant.id,
            "status": grant.status,
            "actions": list(grant.actions),
            "resources": list(grant.resources),
            "reason": grant.reason,
            "duration_seconds": grant.duration_seconds,
            "expires_at": grant.raw.get("expires_at"),
            "route": grant.route,
            "decision_reasons": grant.reasons,
        }
        if grant.status == "pending":
            console = self._console()
            out["approval"] = {
                "message": "a person must approve this grant; tell the user, then call "
                "wait_for_approval",
                "console_url": f"{console}/grants/{grant.id}" if console else None,
                "cli": f"jitgate grants approve {grant.id}",
                "lapses_at": grant.raw.get("lapse_at"),
            }
        elif grant.status == "active":
            out["next"] = "call call_aws with this grant_id; revoke_grant when done"
        elif grant.status == "denied":
            out["next"] = "denied: do not repeat the same request; ask the user what to do"
        return out

    # --- tools ------------------------------------------------------------------------------
    def explain_scope(
        self,
        service: str,
        operation: str,
        params: dict[str, Any] | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        plan = self.gate.scope_for(service, operation, params or {}, region=region)
        out = {
            "actions": list(plan.actions),
            "resources": list(plan.resources),
            "access": list(plan.access),
            "notes": list(plan.notes),
        }
        decision = plan.raw.get("decision")
        if decision:
            out["policy_route"] = decision.get("route")
            out["policy_reasons"] = decision.get("reasons", [])
        return out

    def request_grant(
        self, actions: list[str], resources: list[str], reason: str, minutes: float = 5
    ) -> dict[str, Any]:
        return self.summary(self.gate.request(actions, resources, reason=reason, minutes=minutes))

    def get_grant(self, grant_id: str) -> dict[str, Any]:
        return self.summary(self.gate.get(grant_id))

    def list_grants(self, status: str | None = None, limit: int = 20) -> dict[str, Any]:
        grants = self.gate.list_grants(status, limit=max(1, min(limit, 100)))
        return {"grants": [self.summary(g) for g in grants]}

    def wait_for_approval(self, grant_id: str, timeout_seconds: float = 120) -> dict[str, Any]:
        timeout = max(0.0, min(float(timeout_seconds), MAX_WAIT_SECONDS))
        try:
            grant = self.gate.wait(grant_id, timeout, withdraw=False)
        except JitgateClientError as exc:
            grant_obj = getattr(exc, "grant", None)
            if grant_obj is None:
                raise
            view = self.summary(self.gate.get(grant_obj.id))
            view["waited"] = exc.message
            return view
        return self.summary(grant)

    def revoke_grant(self, grant_id: str, reason: str = "") -> dict[str, Any]:
        return self.summary(self.gate.revoke(grant_id, reason or "revoked by the agent"))

    def call_aws(
        self,
        grant_id: str,
        service: str,
        operation: str,
        params: dict[str, Any] | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        grant = self.gate.get(grant_id)
        if grant.status != "active" or grant.credentials is None:
            raise ToolFailure(
                f"grant {grant_id} is {grant.status}; only an active grant can be used"
                + (" (call wait_for_approval first)" if grant.status == "pending" else "")
            )
        session = self.gate.session(grant, region=region)
        try:
            client = session.client(service)
        except BotoCoreError as exc:
            raise ToolFailure(f"{service}: {exc}") from None
        names = client.meta.service_model.operation_names
        name = operation if operation in names else None
        if name is None:
            wanted = operation.replace("-", "_").lower()
            name = next((n for n in names if xform_name(n) == wanted), None)
        if name is None:
            raise ToolFailure(f"{service} has no operation {operation!r}")
        try:
            result = getattr(client, xform_name(name))(**(params or {}))
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise ToolFailure(
                f"{error.get('Code', 'Error')}: {error.get('Message', str(exc))}"
            ) from None
        except ParamValidationError as exc:
            raise ToolFailure(f"{service} {name}: {exc}") from None
        except BotoCoreError as exc:
            raise ToolFailure(f"{service} {name}: {exc}") from None
        return {
            "grant_id": grant.id,
            "service": service,
            "operation": name,
            "result": model_view(service, name, result, grant.actions),
        }


def build_server(tools: JitgateTools) -> Any:
    """The MCPServer exposing ``tools``."""
    from mcp.server import MCPServer

    server = MCPServer("jitgate", instructions=INSTRUCTIONS, log_level="WARNING")

    def guarded(fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ToolFailure as exc:
                raise _tool_error(str(exc)) from None
            except JitgateClientError as exc:
                raise _tool_error(exc.message) from None

        return run

    @server.tool()
    def explain_scope(
        service: str,
        operation: str,
        params: dict[str, Any] | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        """The exact IAM actions and resource ARNs a planned AWS call needs (as jitgate's AWS
        endpoint will check them), and how the policy would route a grant of them.
        service: boto3 name ("s3", "dynamodb", ...); operation: "GetObject" or "get_object";
        params: the call's parameters as boto3 takes them."""
        return guarded(tools.explain_scope)(service, operation, params, region)

    @server.tool()
    def request_grant(
        actions: list[str], resources: list[str], reason: str, minutes: float = 5
    ) -> dict[str, Any]:
        """Ask jitgate for a grant: exact IAM actions on exact resource ARNs for a few minutes,
        with a truthful reason. Returns its id and status (active, pending with an approval
        link, or denied). Never returns credentials: use call_aws with the grant id."""
        return guarded(tools.request_grant)(actions, resources, reason, minutes)

    @server.tool()
    def get_grant(grant_id: str) -> dict[str, Any]:
        """A grant's current status, scope and expiry."""
        return guarded(tools.get_grant)(grant_id)

    @server.tool()
    def wait_for_approval(grant_id: str, timeout_seconds: float = 120) -> dict[str, Any]:
        """Wait (at most timeout_seconds, up to 600) for a person to decide a pending grant;
        returns its status. Call again if it is still pending."""
        return guarded(tools.wait_for_approval)(grant_id, timeout_seconds)

    @server.tool()
    def list_grants(status: str | None = None, limit: int = 20) -> dict[str, Any]:
        """This agent's grants, newest first (status: active, pending, denied, expired, ...)."""
        return guarded(tools.list_grants)(status, limit)

    @server.tool()
    def revoke_grant(grant_id: str, reason: str = "") -> dict[str, Any]:
        """End a grant now (do this when the task is done)."""
        return guarded(tools.revoke_grant)(grant_id, reason)

    @server.tool()
    def call_aws(
        grant_id: str,
        service: str,
        operation: str,
        params: dict[str, Any] | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        """Make one AWS API call under an active grant, through jitgate. service: boto3 name;
        operation: "GetObject" or "get_object"; params: as boto3 takes them. A call outside the
        grant is refused (and recorded). Secret values are returned only when the grant covers
        reading them, marked with jitgate_secret."""
        return guarded(tools.call_aws)(grant_id, service, operation, params, region)

    return server


class RequireBearer:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps(
                    {"error": "unauthorized", "message": "this MCP server needs the agent's token"}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="jitgate-mcp"'),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _gate(url: str, token: str | None) -> Gate:
    # The MCP server's stdout is the protocol on stdio: progress must never go there.
    return Gate(url, token, progress=None)


def run_stdio(url: str, token: str | None) -> None:
    """Serve MCP over stdin/stdout (a desktop agent launches ``jitgate mcp``)."""
    import anyio

    gate = _gate(url, token)
    try:
        anyio.run(build_server(JitgateTools(gate)).run_stdio_async)
    finally:
        gate.close()


def http_app(url: str, token: str, host: str = "127.0.0.1") -> Any:
    """The streamable-HTTP MCP app (at ``/mcp``), requiring the agent's token."""
    gate = _gate(url, token)
    app = build_server(JitgateTools(gate)).streamable_http_app(host=host)
    return RequireBearer(app, token)


def run_http(url: str, token: str, host: str, port: int) -> None:
    """Serve MCP over streamable HTTP on ``host:port`` (path ``/mcp``)."""
    import uvicorn

    uvicorn.run(http_app(url, token, host), host=host, port=port, log_level="warning")
