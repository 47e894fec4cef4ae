"""The ``jitgate`` command, in local mode on the store under $JITGATE_HOME."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

import jitgate.cli as cli
from conftest import BUCKET_ARN, OBJECT_ARN
from jitgate.core import Jitgate


@pytest.fixture(autouse=True)
def close_cli_cores() -> Iterator[None]:
    """Local-mode commands open the store; ``main()`` would close it, the runner does not."""
    yield
    while cli._opened:
        cli._opened.pop().close()


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner with wide consoles, so Rich does not wrap tables and paths."""
    monkeypatch.setattr(cli.console, "_width", 250)
    monkeypatch.setattr(cli.err, "_width", 250)
    return CliRunner()


def jg(runner: CliRunner, *args: str, code: int = 0) -> Any:
    """Run ``jitgate ARGS``; assert the exit code; the parsed JSON output (with --json) or the
    result."""
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    if "--json" in args and code in (0, 3):
        return json.loads(result.stdout)
    return result


def one_line_error(result: Any) -> str:
    """The error a failed command printed: exactly one line on stderr, nothing on stdout."""
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0][len("error: ") :]


# --- init ----------------------------------------------------------------------------------------


def test_init_and_its_refusal_without_force(
    runner: CliRunner, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "fresh"
    monkeypatch.setenv("JITGATE_HOME", str(home))
    monkeypatch.setenv("JITGATE_DATABASE_URL", database_url)
    result = jg(runner, "init")
    assert f"jitgate is set up in {home}" in result.stdout
    assert (home / "jitgate.toml").read_text().startswith("# jitgate configuration.")
    assert "@approval(" in (home / "policy.cedar").read_text()
    assert (home / "master.key").stat().st_mode & 0o777 == 0o600
    (home / "policy.cedar").write_text("// mine\n")

    refused = jg(runner, "init", code=1)
    assert one_line_error(refused) == (
        f"{home / 'jitgate.toml'}, {home / 'policy.cedar'} already exist; use --force to overwrite"
    )
    assert (home / "policy.cedar").read_text() == "// mine\n"

    jg(runner, "init", "--force")
    assert "@approval(" in (home / "policy.cedar").read_text()


def test_commands_need_init_first(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JITGATE_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("JITGATE_URL", raising=False)
    message = one_line_error(jg(runner, "agents", "list", code=1))
    assert message.startswith(f"no jitgate.toml in {tmp_path / 'empty'}; run `jitgate init` first")


# --- agents and users ------------------------------------------------------------------------------


def test_agents_create_prints_the_token_once_and_stores_only_its_hash(
    runner: CliRunner, home: Path, core: Jitgate
) -> None:
    created = jg(runner, "agents", "create", "etl-bot", "--group", "etl", "-g", "reports", "--json")
    assert set(created) == {"name", "token"}
    assert created["name"] == "etl-bot"
    token = created["token"]
    principal = core.identity.authenticate(token)
    assert (principal.name, principal.groups) == ("etl-bot", ("etl", "reports"))
    with core.db.read() as connection:
        row = connection.execute(text("SELECT token_hash FROM agents WHERE name = 'etl-bot'")).one()
        dump = repr(connection.execute(text("SELECT * FROM agents")).all())
        dump += repr(connection.execute(text("SELECT * FROM audit_events")).all())
    secret = token.split("_", 2)[2]
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in dump

    plain = jg(runner, "agents", "create", "other-bot")
    tokens = [line for line in plain.stdout.splitlines() if line.startswith("jga_")]
    assert len(tokens) == 1
    assert core.identity.authenticate(tokens[0]).name == "other-bot"


def test_agents_list_disable_enable(runner: CliRunner, home: Path, core: Jitgate) -> None:
    token = jg(runner, "agents", "create", "bot", "--json")["token"]
    request = core.grants.request(
        core.identity.authenticate(token),
        actions=["s3:GetObject"],
        resources=[OBJECT_ARN],
        reason="r",
    )[0]
    assert [(a["name"], a["disabled"]) for a in jg(runner, "agents", "list", "--json")] == [
        ("bot", False)
    ]

    result = jg(runner, "agents", "disable", "bot")
    assert "agent bot disabled; its grants are revoked" in result.stdout
    assert [a["disabled"] for a in jg(runner, "agents", "list", "--json")] == [True]
    assert jg(runner, "grants", "show", request.id, "--json")["status"] == "revoked"

    jg(runner, "agents", "enable", "bot")
    assert [a["disabled"] for a in jg(runner, "agents", "list", "--json")] == [False]
    assert core.identity.authenticate(token).name == "bot"
    table = jg(runner, "agents", "list")
    assert "bot" in table.stdout and "enabled" in table.stdout

    assert (
        one_line_error(jg(runner, "agents", "disable", "ghost", code=1)) == "no agent named 'ghost'"
    )


def test_users_create_with_role(runner: CliRunner, home: Path, core: Jitgate) -> None:
    created = jg(runner, "users", "create", "carol", "--role", "approver", "--json")
    assert (created["name"], created["role"]) == ("carol", "approver")
    assert core.identity.authenticate(created["token"]).role == "approver"
    message = one_line_error(jg(runner, "users", "create", "dave", "--role", "boss", code=1))
    assert message == "role 'boss' is invalid: use one of admin, approver, auditor"


# --- grants --------------------------------------------------------------------------------------


def request_args(*extra: str) -> list[str]:
    return ["grants", "request", "--agent", "bot", "--reason", "q3 report", *extra]


def test_grants_request_list_show(runner: CliRunner, home: Path) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    grant = jg(runner, *request_args("-a", "s3:GetObject", "-r", OBJECT_ARN, "--json"))
    assert (grant["status"], grant["agent"]) == ("active", "bot")
    assert "credentials" not in grant  # the host's admin acting for the agent gets none
    assert grant["duration_seconds"] == 300

    waiting = jg(runner, *request_args("-a", "s3:PutObject", "-r", OBJECT_ARN, "--json"))
    assert waiting["status"] == "pending"

    listed = jg(runner, "grants", "list", "--json")
    assert [g["id"] for g in listed] == [waiting["id"], grant["id"]] or {
        g["id"] for g in listed
    } == {
        waiting["id"],
        grant["id"],
    }
    assert [g["id"] for g in jg(runner, "grants", "list", "--status", "pending", "--json")] == [
        waiting["id"]
    ]
    assert jg(runner, "grants", "list", "--agent", "nobody", "--json") == []

    shown = jg(runner, "grants", "show", grant["id"], "--json")
    assert shown["id"] == grant["id"]
    assert shown["calls"] == []
    panel = jg(runner, "grants", "show", grant["id"])
    assert grant["id"] in panel.stdout

    table = jg(runner, "grants", "list")
    assert grant["id"] in table.stdout


def test_denied_request_exits_3(runner: CliRunner, home: Path) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    grant = jg(
        runner,
        *request_args("-a", "s3:GetObject", "-r", OBJECT_ARN, "--duration", "3600", "--json"),
        code=3,
    )
    assert grant["status"] == "denied"
    assert "above the maximum of 900s (15m)" in grant["decision"]["reasons"][0]


def test_grants_approve_deny_revoke(runner: CliRunner, home: Path) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    first = jg(runner, *request_args("-a", "s3:PutObject", "-r", OBJECT_ARN, "--json"))
    second = jg(runner, *request_args("-a", "s3:PutObject", "-r", OBJECT_ARN, "--json"))

    approved = jg(runner, "grants", "approve", first["id"], "--comment", "fine", "--json")
    assert approved["status"] == "active"
    assert approved["approvals"][0]["approver"] == "local:cli"
    assert approved["approvals"][0]["comment"] == "fine"

    denied = jg(runner, "grants", "deny", second["id"], "--json")
    assert denied["status"] == "denied"

    revoked = jg(runner, "grants", "revoke", first["id"], "--reason", "done", "--json")
    assert (revoked["status"], revoked["ended_by"]) == ("revoked", "local:cli")

    message = one_line_error(jg(runner, "grants", "approve", second["id"], code=1))
    assert message == f"grant {second['id']} is denied, not pending; nothing to approve"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grants", "show", "gr-missing"], "no grant 'gr-missing'"),
        (
            request_args("-a", "s3:*", "-r", OBJECT_ARN),
            "action 's3:*' is a wildcard; jitgate grants exact actions only, name each one",
        ),
        (
            request_args("-a", "s3:GetObject", "-r", BUCKET_ARN),
            "action 's3:GetObject' fits none of the requested resources; it takes accesspointobject",
        ),
        (
            request_args("-a", "s3:GetObject", "-r", OBJECT_ARN, "--duration", "0"),
            "duration_seconds must be positive, got 0",
        ),
        (["grants", "list", "--status", "bogus"], "status 'bogus' is invalid"),
    ],
)
def test_errors_are_one_line_and_non_zero(
    runner: CliRunner, home: Path, args: list[str], message: str
) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    assert one_line_error(jg(runner, *args, code=1)).startswith(message)


@pytest.mark.parametrize("resource", ["[/x]", "[bold]x"])
def test_error_messages_are_printed_verbatim(runner: CliRunner, home: Path, resource: str) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    message = one_line_error(
        jg(runner, *request_args("-a", "s3:GetObject", "-r", resource), code=1)
    )
    assert message.startswith(f"resource {resource!r} is not an ARN")


# --- policy and audit ---------------------------------------------------------------------------


def test_policy_check_explains_without_creating(
    runner: CliRunner, home: Path, core: Jitgate
) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    before = core.audit.head()
    result = jg(
        runner,
        "policy", "check", "--agent", "bot",
        "-a", "s3:ListBucket", "-a", "s3:PutObject",
        "-r", BUCKET_ARN, "-r", OBJECT_ARN,
        "--json",
    )  # fmt: skip
    assert result["route"] == "required"
    assert result["policies"] == ["auto-approve-low-risk-reads", "writes-need-approval"]
    assert [p["route"] for p in result["pairs"]] == ["auto", "required"]
    too_long = jg(runner, "policy", "check", "--agent", "bot", "-a", "s3:GetObject", "-r", OBJECT_ARN,
                  "--duration", "901", "--json")  # fmt: skip
    assert too_long["route"] == "denied"
    assert core.audit.head() == before
    assert jg(runner, "grants", "list", "--json") == []
    table = jg(runner, "policy", "check", "--agent", "bot", "-a", "s3:GetObject", "-r", OBJECT_ARN)
    assert "decision: auto" in table.stdout


def test_policy_validate(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    assert "4 policies, valid" in jg(runner, "policy", "validate").stdout
    broken = tmp_path / "broken.cedar"
    broken.write_text(
        '@approval("auto")\npermit (principal, action, resource)\n  when { context.colour };\n'
    )
    message = one_line_error(jg(runner, "policy", "validate", str(broken), code=1))
    assert message.startswith(f"{broken}:1: unknown attribute context.colour")


def test_audit_tail_and_verify(runner: CliRunner, home: Path, core: Jitgate) -> None:
    jg(runner, "agents", "create", "bot", "--json")
    grant = jg(runner, *request_args("-a", "s3:GetObject", "-r", OBJECT_ARN, "--json"))
    tail = jg(runner, "audit", "tail", "-n", "3", "--json")
    assert [(e["seq"], e["type"]) for e in tail] == [
        (2, "grant.requested"),
        (3, "grant.decided"),
        (4, "grant.activated"),
    ]
    assert [e["type"] for e in jg(runner, "audit", "tail", "--grant", grant["id"], "--json")] == [
        "grant.requested",
        "grant.decided",
        "grant.activated",
    ]
    assert "grant.activated" in jg(runner, "audit", "tail").stdout

    verified = jg(runner, "audit", "verify")
    assert verified.stdout.startswith("audit chain intact: 4 events")
    assert jg(runner, "audit", "verify", "--json")["ok"] is True

    with core.db.write() as connection:
        connection.execute(
            text(
                "UPDATE audit_events SET body = replace(body, 'q3 report', 'nothing') WHERE seq = 2"
            )
        )
    broken = jg(runner, "audit", "verify", code=1)
    assert broken.stderr.splitlines() == [
        "audit chain BROKEN at event 2: event 2 was altered (hash mismatch)"
    ]
    as_json = runner.invoke(cli.app, ["audit", "verify", "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["first_bad_seq"] == 2


def test_audit_verify_failure_is_one_line_on_a_narrow_terminal(
    home: Path, core: Jitgate, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        core.identity.create_agent(name)
    with core.db.write() as connection:
        connection.execute(text("UPDATE audit_events SET seq = 9 WHERE seq = 2"))
        connection.execute(text("UPDATE audit_events SET seq = 2 WHERE seq = 3"))
        connection.execute(text("UPDATE audit_events SET seq = 3 WHERE seq = 9"))
    monkeypatch.setattr(cli.err, "_width", 80)
    broken = jg(CliRunner(), "audit", "verify", code=1)
    assert broken.stderr.splitlines() == [
        "audit chain BROKEN at event 2: event 2 does not link to event 1 "
        "(inserted, removed or reordered)"
    ]


def test_audit_verify_names_a_deleted_event(runner: CliRunner, home: Path, core: Jitgate) -> None:
    for name in ("a", "b", "c"):
        jg(runner, "agents", "create", name, "--json")
    with core.db.write() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    broken = jg(runner, "audit", "verify", code=1)
    assert "event 2" in broken.stderr
    assert broken.stderr.startswith("audit chain BROKEN at event 2: event 2 is missing")
