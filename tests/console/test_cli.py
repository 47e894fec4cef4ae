"""The approver's terminal: users with passwords, `grants pending`, approving what was shown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

import jitgate.cli as cli
from jitgate.identity.service import LOCAL_ADMIN
from jitgate.store.schema import grants as grants_table

from .conftest import OBJECT_ARN, PASSWORD


@pytest.fixture(autouse=True)
def close_cli_cores() -> Iterator[None]:
    yield
    while cli._opened:
        cli._opened.pop().close()


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, home: Path) -> CliRunner:
    monkeypatch.setattr(cli.console, "_width", 250)
    monkeypatch.setattr(cli.err, "_width", 250)
    return CliRunner()


def jg(runner: CliRunner, *args: str, code: int = 0, stdin: str | None = None) -> Any:
    result = runner.invoke(cli.app, list(args), input=stdin)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    if "--json" in args and code == 0:
        return json.loads(result.stdout)
    return result


def request(runner: CliRunner, *extra: str) -> dict[str, Any]:
    return jg(
        runner,
        "grants",
        "request",
        "--agent",
        "bot",
        "-a",
        "s3:PutObject",
        "-r",
        OBJECT_ARN,
        "--reason",
        "fix the typo",
        "--json",
        *extra,
    )


def test_users_create_with_a_password_from_stdin(runner: CliRunner, core) -> None:
    created = jg(
        runner,
        "users",
        "create",
        "ann",
        "--role",
        "approver",
        "--group",
        "security",
        "--password-stdin",
        "--json",
        stdin=PASSWORD + "\n",
    )
    assert created["name"] == "ann"
    assert core.identity.check_password("ann", PASSWORD).groups == ("security",)
    assert core.identity.check_password("ann", PASSWORD + "\n") is None
    short = jg(
        runner,
        "users",
        "create",
        "bea",
        "--role",
        "approver",
        "--password-stdin",
        code=1,
        stdin="short\n",
    )
    assert "password is too short" in short.stderr
    jg(runner, "users", "passwd", "ann", "--password-stdin", stdin="another long password\n")
    assert core.identity.check_password("ann", "another long password") is not None
    jg(runner, "users", "disable", "ann")
    assert core.identity.check_password("ann", "another long password") is None


def test_grants_pending_for_approvers_in_a_terminal(runner: CliRunner, core) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    grant = request(runner)
    jg(
        runner,
        "grants",
        "request",
        "--agent",
        "bot",
        "-a",
        "s3:GetObject",
        "-r",
        OBJECT_ARN,
        "--reason",
        "read",
        "--json",
    )
    listed = jg(runner, "grants", "pending", "--json")
    assert [g["id"] for g in listed] == [grant["id"]]  # the auto-approved read is not waiting
    assert listed[0]["risk"] == "high"
    shown = jg(runner, "grants", "pending").stdout
    for text in (
        grant["id"],
        " HIGH ",
        "bot",
        "requests for 300s",
        "s3:PutObject",
        OBJECT_ARN,
        "fix the typo",
        "writes-need-approval",
        f"jitgate grants approve {grant['id']}",
    ):
        assert text in shown, text


def test_grants_approve_binds_to_what_it_showed(runner: CliRunner, core) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    grant = request(runner, "--one-call", "--operation", "PutObject")
    assert grant["one_call"] == {"operation": "PutObject"}
    result = jg(runner, "grants", "approve", grant["id"], "--comment", "one put, fine")
    assert "one exact call (PutObject)" in result.stdout
    approved = core.grants.get(LOCAL_ADMIN, grant["id"])[0]
    assert approved.status == "active"
    [event] = core.audit.events(grant_id=grant["id"], types=["grant.approval"])
    assert event.data == {"comment": "one put, fine", "fingerprint": grant["fingerprint"]}


def test_approve_refuses_a_request_changed_after_it_was_shown(
    runner: CliRunner, core, monkeypatch: pytest.MonkeyPatch
) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    grant = request(runner)
    from jitgate.cli.backend import LocalBackend

    original = LocalBackend.get_grant

    def shown_then_changed(self, grant_id: str) -> dict[str, Any]:
        shown = original(self, grant_id)
        with core.db.write() as connection:  # the request changes between showing and approving
            connection.execute(
                update(grants_table)
                .where(grants_table.c.id == grant_id)
                .values(duration_seconds=3600)
            )
        return shown

    monkeypatch.setattr(LocalBackend, "get_grant", shown_then_changed)
    result = jg(runner, "grants", "approve", grant["id"], code=1)
    assert "is not the request you were shown" in result.stderr
    assert core.grants.get(LOCAL_ADMIN, grant["id"])[0].status == "pending"
