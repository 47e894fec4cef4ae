"""The approver's terminal: ``jitgate grants pending``, approving exactly what was shown, and
people's passwords (``jitgate users passwd NAME --password-stdin``)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

# Imported at the bottom of jitgate.cli, after these names exist there (typer reads the
# annotations from this module's globals).
from jitgate.cli import AsJson, Server, Token, backend, console, emit, fail, render, run
from jitgate.cli.backend import Backend

TIER_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "green",
}


def read_password() -> str:
    """One line from stdin (so it never appears in the shell history or the process list)."""
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass("password: ")
    else:
        value = sys.stdin.readline()
    value = value.rstrip("\r\n")
    if not value:
        fail("no password on stdin")
    return value


def _left(iso: str | None) -> str:
    if not iso:
        return ""
    delta = datetime.fromisoformat(iso.replace("Z", "+00:00")) - datetime.now(UTC)
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "lapsing"
    return f"{seconds // 60}m {seconds % 60:02d}s"


def pending_view(rows: list[dict[str, Any]]) -> Any:
    if not rows:
        return Text("Nothing waits for a decision.", style="dim")
    panels = []
    for g in rows:
        decision = g.get("decision", {})
        risk = (g.get("risk") or "low").upper()
        what = "one exact call" if g.get("one_call") else f"for {g['duration_seconds']}s"
        if g.get("one_call") and g["one_call"].get("operation"):
            what += f" ({g['one_call']['operation']})"
        head = Text.assemble(
            (f" {risk} ", TIER_STYLE.get(risk.lower(), "")),
            "  ",
            (g["agent"], "bold"),
            f" requests {what}",
        )
        scope = Table("action", "resource", box=None, padding=(0, 2), show_header=False)
        for action in g["actions"]:
            for resource in g["resources"]:
                scope.add_row(action, resource)
        needs = f"{g.get('approvals_required', 1)} approval(s)"
        if decision.get("approver_groups"):
            needs += f" from {', '.join(decision['approver_groups'])}"
        done = sum(1 for a in g.get("approvals", []) if a["decision"] == "approve")
        facts = Text(
            f"“{g['reason']}”\n"
            f"policy {', '.join(decision.get('policies', []))} · needs {needs} · {done} given · "
            f"lapses in {_left(g.get('lapse_at'))}\n"
            f"jitgate grants approve {g['id']} --comment ...",
            style="dim",
        )
        panels.append(Panel(Group(head, scope, facts), title=g["id"], title_align="left"))
    return Group(*panels)


def approve_as_shown(backend: Backend, grant_id: str, comment: str, as_json: bool) -> None:
    """Fetch the request, show it, and approve it bound to its fingerprint: if it changed in
    between, the approval is refused rather than applied to something not shown."""
    grant = run(lambda: backend.get_grant(grant_id))
    if not as_json and grant["status"] == "pending":
        console.print(pending_view([grant]))
    approved = run(
        lambda: backend.decide(grant_id, "approve", comment, fingerprint=grant.get("fingerprint"))
    )
    emit(approved, as_json, render.grant_panel(approved))


def register(grants_app: typer.Typer, users_app: typer.Typer) -> None:
    @grants_app.command("pending")
    def grants_pending(
        agent: Annotated[str | None, typer.Option("--agent")] = None,
        as_json: AsJson = False,
        server: Server = None,
        token: Token = None,
    ) -> None:
        """What waits for a decision, most urgent first: agent, scope, reason, risk, rule."""
        rows = run(lambda: backend(server, token).list_grants("pending", agent, 200))
        rows = sorted(rows, key=lambda g: g.get("lapse_at") or "")
        emit(rows, as_json, pending_view(rows))

    @users_app.command("passwd")
    def users_passwd(
        name: str,
        password_stdin: Annotated[
            bool, typer.Option("--password-stdin", help="Read the new password from stdin.")
        ] = False,
        server: Server = None,
        token: Token = None,
    ) -> None:
        """Set a person's console password; their console sessions end."""
        password = read_password()
        del password_stdin  # stdin is the only way a password is read
        run(lambda: backend(server, token).set_password(name, password))  # type: ignore[attr-defined]
        console.print(f"password set for {name}")

    @users_app.command("disable")
    def users_disable(name: str, server: Server = None, token: Token = None) -> None:
        """Disable a person: their token and console sessions stop working at once."""
        run(lambda: backend(server, token).set_user_disabled(name, True))  # type: ignore[attr-defined]
        console.print(f"user {name} disabled")

    @users_app.command("enable")
    def users_enable(name: str, server: Server = None, token: Token = None) -> None:
        """Enable a disabled person."""
        run(lambda: backend(server, token).set_user_disabled(name, False))  # type: ignore[attr-defined]
        console.print(f"user {name} enabled")
