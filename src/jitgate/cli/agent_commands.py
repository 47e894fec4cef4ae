"""Agent-side and least-privilege commands: ``credentials``, ``scope-for``, ``mcp`` and
``agents report``; plus the usage panel ``grants show`` prints.

Registered on the main app by :func:`register` (called from ``jitgate.cli``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from jitgate.cli import AsJson, Server, Token
from jitgate.cli.backend import LocalBackend, RemoteBackend

ASJSON_HELP = "Print JSON for scripts."


def _base() -> Any:
    import jitgate.cli as base

    return base


# --- rendering ------------------------------------------------------------------------------
def usage_panel(usage: dict[str, Any]) -> Panel:
    """Granted against used, for ``grants show``."""
    table = Table("action", "resource", "used", "calls", box=None, pad_edge=False)
    for row in usage["granted"]:
        table.add_row(
            row["action"],
            row["resource"],
            Text("yes", style="green") if row["used"] else Text("no", style="yellow"),
            str(row["calls"]),
        )
    parts: list[Any] = [table]
    for finding in usage["findings"]:
        parts.append(Text(f"• {finding}", style="yellow"))
    if usage["suggested"] and not usage["tight"]:
        suggested = usage["suggested"]
        parts.append(
            Text(
                "tighter scope that would have done the same work: "
                f"actions {', '.join(suggested['actions'])}; "
                f"resources {', '.join(suggested['resources'])}",
                style="cyan",
            )
        )
    elif usage["tight"]:
        parts.append(Text("every granted action and resource was used", style="green"))
    if not usage["complete"]:
        parts.append(Text("the grant is still live: usage so far", style="dim"))
    calls = usage["calls"]
    title = f"least privilege: {calls['allowed']} call(s) allowed, {calls['denied']} denied"
    return Panel(Group(*parts), title=title)


def _report_renderable(report: dict[str, Any]) -> Group:
    summary = ", ".join(f"{k} {v}" for k, v in report["by_status"].items()) or "none"
    actions = Table("action", "granted", "used", title=f"agent {report['agent']}: actions")
    for row in report["actions"]:
        style = "yellow" if row["used"] == 0 else ""
        actions.add_row(row["action"], str(row["granted"]), Text(str(row["used"]), style=style))
    parts: list[Any] = [Text(f"{report['grants']} grant(s): {summary}"), actions]
    for finding in report["findings"]:
        parts.append(Text(f"• {finding}", style="yellow"))
    for suggestion in report["suggestions"]:
        requested = suggestion["requested"]
        body = Table.grid(padding=(0, 2))
        body.add_column(style="bold")
        body.add_column()
        body.add_row("requested", "\n".join(requested["actions"]))
        body.add_row("", "\n".join(requested["resources"]))
        suggested = suggestion.get("suggested")
        if suggested:
            body.add_row("suggested", "\n".join(suggested["actions"]))
            body.add_row("", "\n".join(suggested["resources"]))
        else:
            body.add_row("suggested", suggestion.get("note", "nothing"))
        parts.append(Panel(body, title=f"tighter scope ({suggestion['grants']} grant(s))"))
    if not report["suggestions"]:
        parts.append(Text("no tighter scope to suggest", style="green"))
    return Group(*parts)


def _scope_table(answer: dict[str, Any]) -> Group:
    table = Table("call", "action", "resource", title=f"scope (account {answer['account']})")
    for call in answer["calls"]:
        name = f"{call['service']}:{call['operation']}"
        if call.get("each_key_under_prefix"):
            name += " (each key)"
        if not call["access"]:
            table.add_row(name, Text(call.get("note", "no scope needed"), style="dim"), "")
        for access in call["access"]:
            table.add_row(name, access["action"], access["arn"])
    parts: list[Any] = [table]
    for note in answer.get("notes", []):
        parts.append(Text(f"• {note}", style="yellow"))
    request = answer.get("grant_request")
    if request:
        flags = " ".join(
            [f"--action {a}" for a in request["actions"]]
            + [f"--resource '{r}'" for r in request["resources"]]
        )
        parts.append(Text(f"jitgate credentials {flags} --reason '...'", style="cyan"))
    decision = answer.get("decision")
    if decision:
        parts.append(Text(f"the policy would route this grant: {decision.get('route')}"))
    return Group(*parts)


# --- helpers --------------------------------------------------------------------------------
def _remote_json(remote: RemoteBackend, method: str, path: str, **kwargs: Any) -> Any:
    return remote._send(method, path, **kwargs)  # noqa: SLF001 - the backend's one HTTP helper


def _gate(server: str | None, token: str | None, **kwargs: Any) -> Any:
    from jitgate.client import Gate, JitgateClientError

    base = _base()
    workload = os.environ.get("JITGATE_WORKLOAD_TOKEN_FILE")
    if not server or not (token or workload):
        base.fail(
            "this command runs as an agent: set JITGATE_URL and the agent's JITGATE_TOKEN "
            "(or --server and --token, or JITGATE_WORKLOAD_TOKEN_FILE for an OIDC token)"
        )
    try:
        return Gate(server, token, **kwargs)
    except JitgateClientError as exc:
        base.fail(exc.message)


# --- commands -------------------------------------------------------------------------------
def register(app: typer.Typer, agents_app: typer.Typer) -> None:
    base = _base()

    @app.command("credentials")
    def credentials(
        action: Annotated[
            list[str], typer.Option("--action", "-a", help="IAM action (repeatable).")
        ],
        resource: Annotated[
            list[str], typer.Option("--resource", "-r", help="Resource ARN (repeatable).")
        ],
        minutes: Annotated[float, typer.Option("--minutes", help="Grant lifetime.")] = 5,
        reason: Annotated[
            str, typer.Option("--reason", help="What the task needs this access for.")
        ] = "AWS SDK credential_process",
        approval_timeout: Annotated[
            float, typer.Option("--approval-timeout", help="Seconds to wait for an approver.")
        ] = 300,
        reuse: Annotated[
            bool,
            typer.Option(
                "--reuse/--no-reuse",
                help="Hand out the last grant for this scope while it is still active.",
            ),
        ] = True,
        server: Server = None,
        token: Token = None,
    ) -> None:
        """Print AWS credential_process JSON for a grant (for ~/.aws/config profiles)."""
        from jitgate.client import JitgateClientError
        from jitgate.client.credential_process import obtain, process_output

        gate = _gate(server, token, approval_timeout=approval_timeout)
        try:
            grant = obtain(
                gate,
                action,
                resource,
                minutes=minutes,
                reason=reason,
                approval_timeout=approval_timeout,
                reuse=reuse,
            )
            output = process_output(grant)
        except JitgateClientError as exc:
            base.fail(exc.message)
        finally:
            gate.close()
        sys.stdout.write(json.dumps(output) + "\n")

    @app.command(
        "scope-for",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def scope_for_command(
        command: Annotated[
            list[str] | None,
            typer.Argument(help="An AWS CLI command after --, e.g. -- aws s3 cp s3://b/k -"),
        ] = None,
        service: Annotated[
            str | None, typer.Option("--service", help="boto3 service name, e.g. s3.")
        ] = None,
        operation: Annotated[
            str | None, typer.Option("--operation", help="e.g. GetObject or get_object.")
        ] = None,
        params: Annotated[
            str | None, typer.Option("--params", help="The call's parameters as JSON.")
        ] = None,
        region: Annotated[str | None, typer.Option("--region")] = None,
        account: Annotated[
            str | None,
            typer.Option("--account", help="Account for ARNs (local mode, without a server)."),
        ] = None,
        as_json: AsJson = False,
        server: Server = None,
        token: Token = None,
    ) -> None:
        """The exact actions and ARNs a planned call needs, from the AWS endpoint's mapping."""
        from jitgate.client.awscli import plan_aws_command
        from jitgate.client.errors import JitgateClientError

        b = base.backend(server, token)
        default_region = region or _default_region(b)
        if command:
            if service or operation or params:
                base.fail("give an AWS CLI command or --service/--operation, not both")
            try:
                calls = plan_aws_command(command, default_region=default_region)
            except JitgateClientError as exc:
                base.fail(exc.message)
        else:
            if not service or not operation:
                base.fail("give an AWS CLI command after --, or --service and --operation")
            try:
                parsed = json.loads(params) if params else {}
            except ValueError as exc:
                base.fail(f"--params is not valid JSON: {exc}")
            calls = [
                {
                    "service": service,
                    "operation": operation,
                    "params": parsed,
                    "region": default_region,
                }
            ]
        answer = base.run(lambda: _plan(b, calls, default_region, account))
        base.emit(answer, as_json, _scope_table(answer))

    @app.command("mcp")
    def mcp_command(
        http: Annotated[
            str | None,
            typer.Option("--http", help="Serve streamable HTTP on HOST:PORT instead of stdio."),
        ] = None,
        server: Server = None,
        token: Token = None,
    ) -> None:
        """Run the MCP server (stdio by default) acting as the agent whose token it holds."""
        from jitgate.config import parse_listen
        from jitgate.mcp.server import run_http, run_stdio

        workload = os.environ.get("JITGATE_WORKLOAD_TOKEN_FILE")
        if not server or not (token or (workload and not http)):
            base.fail(
                "jitgate mcp needs JITGATE_URL and the agent's JITGATE_TOKEN "
                "(over stdio, JITGATE_WORKLOAD_TOKEN_FILE will also do)"
            )
        if http:
            assert token is not None
            host, port = base.run(lambda: parse_listen(http, "--http"))
            run_http(server, token, host, port)
        else:
            run_stdio(server, token)

    @agents_app.command("report")
    def agents_report(
        name: str,
        limit: Annotated[int, typer.Option("--limit", help="How many recent grants.")] = 50,
        as_json: AsJson = False,
        server: Server = None,
        token: Token = None,
    ) -> None:
        """Least privilege for one agent: granted against used, and a tighter scope to ask for."""
        b = base.backend(server, token)
        report = base.run(lambda: _agent_report(b, name, limit))
        base.emit(report, as_json, _report_renderable(report))


def _default_region(b: Any) -> str:
    if isinstance(b, LocalBackend):
        return b.core.settings.aws_region
    try:
        info = _remote_json(b, "GET", "/v1/info")
    except Exception:  # noqa: BLE001 - an older server without /v1/info
        return "us-east-1"
    return str(info.get("region") or "us-east-1")


def _plan(b: Any, calls: list[dict[str, Any]], region: str, account: str | None) -> Any:
    if isinstance(b, RemoteBackend):
        return _remote_json(b, "POST", "/v1/scope", json={"calls": calls})
    from jitgate import scope_for
    from jitgate.errors import InvalidRequest

    core = b.core
    account = account or core.settings.aws_account_id
    if not account:
        raise InvalidRequest(
            "no AWS account to build ARNs in: pass --account, set [aws] account_id, or use --server"
        )
    planned = [scope_for.planned_call_from_json(c, region) for c in calls]
    return scope_for.plan(planned, account).as_dict()


def _agent_report(b: Any, name: str, limit: int) -> Any:
    if isinstance(b, RemoteBackend):
        return _remote_json(b, "GET", f"/v1/agents/{name}/report", params={"limit": limit})
    from jitgate.api.agent_routes import build_agent_report

    b.core.identity.get_agent(name)
    return build_agent_report(b.core, name, limit)
