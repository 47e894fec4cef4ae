"""The ``jitgate`` command.

Commands run against a server when ``--server``/``JITGATE_URL`` is set (with
``--token``/``JITGATE_TOKEN``), and otherwise directly on the store under ``$JITGATE_HOME``
as the host's administrator. Errors print one line and exit non-zero.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from jitgate.cli import render
from jitgate.cli.backend import Backend, BackendError, LocalBackend, RemoteBackend
from jitgate.config import home_from_env, load_settings, parse_listen
from jitgate.errors import JitgateError

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Just-in-time AWS access for AI agents."
)
agents_app = typer.Typer(no_args_is_help=True, help="Agents: the identities that request grants.")
users_app = typer.Typer(no_args_is_help=True, help="People: admins, approvers, auditors.")
grants_app = typer.Typer(
    no_args_is_help=True, help="Grants: request, list, show, approve, deny, revoke."
)
policy_app = typer.Typer(no_args_is_help=True, help="The Cedar policy in force.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
app.add_typer(agents_app, name="agents")
app.add_typer(users_app, name="users")
app.add_typer(grants_app, name="grants")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")

console = Console()
err = Console(stderr=True)

Server = Annotated[
    str | None,
    typer.Option(
        "--server", envvar="JITGATE_URL", help="Control-plane URL; omit to use the local store."
    ),
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="JITGATE_TOKEN", help="Bearer token for --server.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


_opened: list[Any] = []  # cores and HTTP clients to close on exit


def backend(server: str | None, token: str | None) -> Backend:
    if server:
        remote = RemoteBackend(server, token)
        _opened.append(remote)
        return remote
    from jitgate.core import build

    try:
        settings = load_settings()
        if not (settings.home / "jitgate.toml").exists():
            fail(
                f"no jitgate.toml in {settings.home}; run `jitgate init` first (or set JITGATE_HOME / --server)"
            )
        core = build(settings)
    except JitgateError as exc:
        fail(exc.message)
    _opened.append(core)
    return LocalBackend(core)


def emit(value: Any, as_json: bool, table: Any = None) -> None:
    if as_json or table is None:
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")
    else:
        console.print(table)


def run(fn: Any) -> Any:
    try:
        return fn()
    except BackendError as exc:
        fail(str(exc))
    except JitgateError as exc:
        fail(exc.message)


# --- set-up and serving ----------------------------------------------------------------------
@app.command()
def init(
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write jitgate.toml and policy.cedar into $JITGATE_HOME and create the database."""
    from jitgate.core import init_home

    home = home_from_env()
    written = run(lambda: init_home(home, force=force))
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"jitgate is set up in {home}")


@app.command()
def serve(
    control_listen: Annotated[
        str | None, typer.Option("--control-listen", help="HOST:PORT for the control plane.")
    ] = None,
    aws_listen: Annotated[
        str | None, typer.Option("--aws-listen", help="HOST:PORT for the AWS endpoint.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate for the AWS endpoint.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key for --tls-cert.")
    ] = None,
) -> None:
    """Run the control plane and the AWS endpoint."""
    from jitgate.core import build
    from jitgate.server import Listeners, build_aws_endpoint, run_event_loop, settle_for_serving
    from jitgate.server import serve as serve_forever

    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    try:
        settings = load_settings()
        control = (
            parse_listen(control_listen, "--control-listen")
            if control_listen
            else settings.control_listen
        )
        aws = parse_listen(aws_listen, "--aws-listen") if aws_listen else settings.aws_listen
        core = build(settings)
        endpoint = build_aws_endpoint(core)
    except JitgateError as exc:
        fail(exc.message)
    except Exception as exc:  # noqa: BLE001 - e.g. no AWS credentials: say so in one line
        fail(f"cannot start: {exc}")
    scheme = "https" if tls_cert else "http"
    console.print(f"jitgate control plane on http://{control[0]}:{control[1]}")
    console.print(
        f"jitgate AWS endpoint on {scheme}://{aws[0]}:{aws[1]} (account {endpoint.account_id})"
    )
    listeners = Listeners(
        control, aws, str(tls_cert) if tls_cert else None, str(tls_key) if tls_key else None
    )
    settle_for_serving()
    with contextlib.suppress(KeyboardInterrupt):
        run_event_loop(serve_forever(core, listeners, endpoint=endpoint))


@app.command()
def sandbox(
    control_listen: Annotated[str, typer.Option("--control-listen")] = "127.0.0.1:8751",
    aws_listen: Annotated[str, typer.Option("--aws-listen")] = "127.0.0.1:8750",
) -> None:
    """Run jitgate with an embedded moto server as its AWS, seeded with a reports bucket."""
    from jitgate.sandbox.run import run_sandbox

    run(
        lambda: run_sandbox(
            home_from_env(), parse_listen(control_listen), parse_listen(aws_listen), console
        )
    )


# --- agents ---------------------------------------------------------------------------------
@agents_app.command("create")
def agents_create(
    name: str,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Group (repeatable).")
    ] = None,
    owner: Annotated[
        str | None, typer.Option("--owner", help="The user responsible for this agent.")
    ] = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Create an agent and print its token (shown once, stored only as a hash)."""
    created = run(lambda: backend(server, token).create_agent(name, group or [], owner))
    if as_json:
        emit({"name": created["name"], "token": created["token"]}, True)
    else:
        console.print(f"agent [bold]{created['name']}[/bold] created; its token (shown once):")
        sys.stdout.write(created["token"] + "\n")


@agents_app.command("list")
def agents_list(as_json: AsJson = False, server: Server = None, token: Token = None) -> None:
    """List agents."""
    rows = run(lambda: backend(server, token).list_agents())
    emit(rows, as_json, render.agents_table(rows))


@agents_app.command("disable")
def agents_disable(name: str, server: Server = None, token: Token = None) -> None:
    """Disable an agent: its grants are revoked and stop working at once."""
    run(lambda: backend(server, token).set_agent_disabled(name, True))
    console.print(f"agent {name} disabled; its grants are revoked")


@agents_app.command("enable")
def agents_enable(name: str, server: Server = None, token: Token = None) -> None:
    """Enable a disabled agent (its old grants stay revoked)."""
    run(lambda: backend(server, token).set_agent_disabled(name, False))
    console.print(f"agent {name} enabled")


# --- users ----------------------------------------------------------------------------------
@users_app.command("create")
def users_create(
    name: str,
    role: Annotated[str, typer.Option("--role", help="admin, approver or auditor.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Approver group (repeatable).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read a console password from stdin.")
    ] = False,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Create a person and print their token (shown once, stored only as a hash)."""
    password = approval_commands.read_password() if password_stdin else None
    created = run(
        lambda: backend(server, token).create_user(
            name, role, groups=group or [], password=password
        )
    )
    if as_json:
        emit({"name": created["name"], "role": created["role"], "token": created["token"]}, True)
    else:
        console.print(
            f"user [bold]{created['name']}[/bold] ({created['role']}) created; token (shown once):"
        )
        sys.stdout.write(created["token"] + "\n")


# --- grants ---------------------------------------------------------------------------------
@grants_app.command("request")
def grants_request(
    action: Annotated[list[str], typer.Option("--action", "-a", help="IAM action (repeatable).")],
    resource: Annotated[
        list[str], typer.Option("--resource", "-r", help="Resource ARN (repeatable).")
    ],
    reason: Annotated[str, typer.Option("--reason", help="What the task needs this for.")],
    duration: Annotated[
        int | None, typer.Option("--duration", help="Seconds (default from config).")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="The agent (local mode or admin token).")
    ] = None,
    one_call: Annotated[
        bool, typer.Option("--one-call", help="Ask for one exact call, once, not a time window.")
    ] = False,
    operation: Annotated[
        str | None, typer.Option("--operation", help="With --one-call: e.g. DeleteObject.")
    ] = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Request a grant. Prints it; credentials only when it is active and you are its agent."""
    body = {
        "actions": action,
        "resources": resource,
        "reason": reason,
        "duration_seconds": duration,
        "agent": agent,
        "one_call": one_call or None,
        "operation": operation,
    }
    grant = run(lambda: backend(server, token).request_grant(body))
    emit(grant, as_json, render.grant_panel(grant))
    if grant["status"] == "denied":
        raise typer.Exit(3)


@grants_app.command("list")
def grants_list(
    status: Annotated[str | None, typer.Option("--status")] = None,
    agent: Annotated[str | None, typer.Option("--agent")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """List grants, newest first."""
    rows = run(lambda: backend(server, token).list_grants(status, agent, limit))
    emit(rows, as_json, render.grants_table(rows))


@grants_app.command("show")
def grants_show(
    grant_id: str, as_json: AsJson = False, server: Server = None, token: Token = None
) -> None:
    """Show a grant with its decision, approvals and every call made under it."""
    b = backend(server, token)
    grant = run(lambda: b.get_grant(grant_id))
    calls = run(lambda: b.grant_calls(grant_id))
    usage = grant_usage(grant, calls)  # granted against used: the least-privilege report
    if as_json:
        emit({**grant, "calls": calls, "usage": usage}, True)
    else:
        console.print(render.grant_panel(grant))
        console.print(render.calls_table(calls))
        console.print(agent_commands.usage_panel(usage))


def _decide(
    verb: str, grant_id: str, comment: str, server: str | None, token: str | None, as_json: bool
) -> None:
    grant = run(lambda: backend(server, token).decide(grant_id, verb, comment))
    emit(grant, as_json, render.grant_panel(grant))


@grants_app.command("approve")
def grants_approve(
    grant_id: str,
    comment: Annotated[str, typer.Option("--comment")] = "",
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Approve a pending grant: shows it, then approves exactly what was shown."""
    approval_commands.approve_as_shown(backend(server, token), grant_id, comment, as_json)


@grants_app.command("deny")
def grants_deny(
    grant_id: str,
    comment: Annotated[str, typer.Option("--comment")] = "",
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Deny a pending grant."""
    _decide("deny", grant_id, comment, server, token, as_json)


@grants_app.command("revoke")
def grants_revoke(
    grant_id: str,
    reason: Annotated[str, typer.Option("--reason")] = "",
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Revoke an active or pending grant; it is dead at once."""
    _decide("revoke", grant_id, reason, server, token, as_json)


# --- policy ---------------------------------------------------------------------------------
@policy_app.command("check")
def policy_check(
    agent: Annotated[str, typer.Option("--agent")],
    action: Annotated[list[str], typer.Option("--action", "-a")],
    resource: Annotated[list[str], typer.Option("--resource", "-r")],
    duration: Annotated[int, typer.Option("--duration", help="Seconds.")] = 300,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Explain the decision a request would get, without creating anything."""
    body = {"agent": agent, "actions": action, "resources": resource, "duration_seconds": duration}
    result = run(lambda: backend(server, token).policy_check(body))
    emit(result, as_json, render.decision_table(result))


@policy_app.command("validate")
def policy_validate(
    path: Annotated[
        Path | None, typer.Argument(help="Policy file (default: the configured one).")
    ] = None,
) -> None:
    """Parse and validate a policy file; names file, line and reason on failure."""
    from jitgate.policy.source import load_policies

    target = path or load_settings().policy_path
    try:
        loaded = load_policies(target.read_text(encoding="utf-8"), str(target))
    except OSError as exc:
        fail(f"{target}: {exc.strerror}")
    except JitgateError as exc:
        fail(exc.message)
    console.print(f"{target}: {len(loaded.by_cedar_id)} policies, valid")


@policy_app.command("lint")
def policy_lint(
    path: Annotated[
        Path | None, typer.Argument(help="Policy file (default: the configured one).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Report scope without time, time without scope, and approval on everything; exit 1 on findings."""
    from jitgate.policy.lint import lint
    from jitgate.policy.source import load_policies

    target = path or load_settings().policy_path
    try:
        findings = lint(load_policies(target.read_text(encoding="utf-8"), str(target)))
    except OSError as exc:
        fail(f"{target}: {exc.strerror}")
    except JitgateError as exc:
        fail(exc.message)
    if as_json:
        emit([f.as_dict() for f in findings], True)
    else:
        for finding in findings:
            console.print(f"{target}:{finding}", highlight=False, soft_wrap=True)
        console.print(f"{len(findings)} finding(s)")
    if findings:
        raise typer.Exit(1)


# --- audit ----------------------------------------------------------------------------------
@audit_app.command("tail")
def audit_tail(
    count: Annotated[
        int, typer.Option("-n", "--count", help="How many of the newest events.")
    ] = 20,
    grant: Annotated[str | None, typer.Option("--grant")] = None,
    as_json: AsJson = False,
    server: Server = None,
    token: Token = None,
) -> None:
    """Print the newest audit events."""
    b = backend(server, token)
    if grant:
        events = run(lambda: b.audit_events(0, 1000, grant, None))[-count:]
    else:
        events = run(lambda: b.audit_tail(count))
    emit(events, as_json, render.events_table(events))


# verify (chain, signed checkpoints, external copies), status, keys, rotate-key, checkpoint,
# ship, export, prune: jitgate.cli.audit_commands
from jitgate.cli import audit_commands  # noqa: E402

audit_commands.register(audit_app)


# credentials, scope-for, mcp and agents report (the agent-side commands)
from jitgate.cli import agent_commands  # noqa: E402
from jitgate.usage import grant_usage  # noqa: E402

agent_commands.register(app, agents_app)

# grants pending, users passwd/disable/enable (the approver's terminal)
from jitgate.cli import approval_commands  # noqa: E402

approval_commands.register(grants_app, users_app)


def main() -> None:
    try:
        app()
    finally:
        for opened in _opened:
            opened.close()
