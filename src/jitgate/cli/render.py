"""Rich tables and panels for people; the CLI prints JSON for scripts instead."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {
    "active": "green",
    "used": "cyan",
    "pending": "yellow",
    "denied": "red",
    "revoked": "magenta",
    "expired": "dim",
    "lapsed": "dim",
}

ROUTE_STYLE = {"auto": "green", "required": "yellow", "denied": "red"}


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def agents_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("name", "groups", "owner", "state", "created", title="agents")
    for row in rows:
        table.add_row(
            row["name"],
            ", ".join(row["groups"]),
            row.get("owner") or "",
            Text("disabled", style="red") if row["disabled"] else Text("enabled", style="green"),
            row["created_at"],
        )
    return table


def grants_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("id", "agent", "status", "actions", "resources", "expires", title="grants")
    for row in rows:
        table.add_row(
            row["id"],
            row["agent"],
            _status(row["status"]),
            "\n".join(row["actions"]),
            "\n".join(row["resources"]),
            row.get("expires_at") or "",
        )
    return table


def grant_panel(grant: dict[str, Any]) -> Panel:
    body = Table.grid(padding=(0, 2))
    body.add_column(style="bold")
    body.add_column()
    decision = grant.get("decision", {})
    body.add_row("agent", grant["agent"])
    body.add_row("status", _status(grant["status"]))
    body.add_row("actions", "\n".join(grant["actions"]))
    body.add_row("resources", "\n".join(grant["resources"]))
    body.add_row("duration", f"{grant['duration_seconds']}s")
    body.add_row("reason", grant["reason"])
    body.add_row(
        "route",
        f"{decision.get('route', '')} by {', '.join(decision.get('policies', [])) or 'no policy'}",
    )
    for reason in decision.get("reasons", []):
        body.add_row("", Text(reason, style="dim"))
    for key in ("requested_at", "activated_at", "expires_at", "lapse_at", "ended_at"):
        if grant.get(key):
            body.add_row(key.replace("_at", ""), grant[key])
    if grant.get("ended_by"):
        body.add_row("ended by", grant["ended_by"])
    for approval in grant.get("approvals", []):
        body.add_row(
            "approval",
            f"{approval['decision']} by {approval['approver']} {approval['comment']}".strip(),
        )
    parts: list[Any] = [body]
    credentials = grant.get("credentials")
    if credentials:
        creds = Table.grid(padding=(0, 2))
        creds.add_column(style="bold")
        creds.add_column()
        for key in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"):
            creds.add_row(key, credentials[key])
        parts.append(Panel(creds, title="credentials (valid only at jitgate's AWS endpoint)"))
    return Panel(Group(*parts), title=f"grant {grant['id']}")


def calls_table(calls: list[dict[str, Any]]) -> Table:
    table = Table("seq", "time", "event", "operation", "action / ARN", "status", title="calls")
    for event in calls:
        data = event["data"]
        pairs = data.get("access", [])
        table.add_row(
            str(event["seq"]),
            event["ts"],
            event["type"],
            f"{data.get('service', '')}:{data.get('operation', '')}",
            "\n".join(f"{p['action']} {p['arn']}" for p in pairs) or data.get("message", ""),
            str(data.get("status", "")),
        )
    return table


def summarize(event: dict[str, Any]) -> str:
    """One readable line for an audit event."""
    data = event.get("data", {})
    kind = event["type"]
    if kind.startswith("call."):
        pairs = ", ".join(f"{p['action']} {p['arn']}" for p in data.get("access", []))
        if kind == "call.completed":
            return f"{data.get('operation', '')} -> HTTP {data.get('status')} ({data.get('bytes_out', 0)} bytes, {data.get('duration_ms', 0)} ms)"
        if kind == "call.denied":
            return f"{data.get('operation', data.get('method', ''))}: {data.get('code')}: {data.get('message', '')}"
        return f"{data.get('operation', '')}: {pairs}"
    if kind == "grant.requested":
        return f"{', '.join(data.get('actions', []))} on {', '.join(data.get('resources', []))} for {data.get('duration_seconds')}s: {data.get('reason', '')}"
    if kind == "grant.decided":
        return f"route {data.get('route')} by {', '.join(data.get('policies', [])) or 'no policy'}"
    if kind == "grant.refused":
        return str(data.get("message", ""))
    if kind == "grant.activated":
        return f"credentials {data.get('access_key_id')} until {data.get('expires_at')}"
    if kind == "grant.denied":
        return "; ".join(data.get("reasons", [])) or str(data.get("comment", ""))
    details = ", ".join(f"{k}={v}" for k, v in data.items() if v not in (None, "", [], {}))
    return details


def events_table(events: list[dict[str, Any]]) -> Table:
    table = Table(title="audit")
    for name in ("seq", "time", "event", "actor", "grant"):
        table.add_column(name, no_wrap=True)
    table.add_column("what", ratio=1)
    for event in events:
        table.add_row(
            str(event["seq"]),
            event["ts"][11:23],
            event["type"],
            event["actor"],
            (event.get("grant_id") or "")[:11],
            summarize(event),
        )
    return table


def decision_table(result: dict[str, Any]) -> Table:
    table = Table(
        "action", "resource", "route", "policies", "max", title=f"decision: {result['route']}"
    )
    for pair in result.get("pairs", []):
        table.add_row(
            pair["action"],
            pair["resource"],
            Text(pair["route"], style=ROUTE_STYLE.get(pair["route"], "")),
            ", ".join(pair["policies"]),
            f"{pair['max_duration_seconds']}s",
        )
    for reason in result.get("reasons", []):
        table.add_row("", Text(reason, style="dim"), "", "", "")
    return table
