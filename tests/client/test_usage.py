"""Least privilege: granted against used, per grant (``grants show``, ``GET
/v1/grants/{id}/usage``) and per agent (``jitgate agents report``, ``GET
/v1/agents/{name}/report``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

import jitgate.cli as cli
from conftest import BUCKET_ARN, OBJECT_ARN, bearer
from jitgate.audit.log import NewEvent
from jitgate.clock import FakeClock
from jitgate.core import Jitgate
from jitgate.usage import agent_report, grant_usage

Q2_ARN = "arn:aws:s3:::reports/2026/q2.csv"


def call(kind: str, *pairs: tuple[str, str]) -> dict[str, Any]:
    return {"type": kind, "data": {"access": [{"action": a, "arn": r} for a, r in pairs]}}


def grant(
    actions: list[str], resources: list[str], status: str = "expired", gid: str = "gr-1"
) -> dict[str, Any]:
    return {
        "id": gid,
        "agent": "a",
        "status": status,
        "actions": actions,
        "resources": resources,
        "activated_at": "2026-11-28T12:00:00Z",
    }


def test_unused_actions_and_resources_are_flagged_with_a_tighter_scope() -> None:
    g = grant(["s3:GetObject", "s3:ListBucket", "s3:PutObject"], [BUCKET_ARN, OBJECT_ARN, Q2_ARN])
    calls = [
        call("call.allowed", ("s3:GetObject", OBJECT_ARN)),
        call("call.completed"),
        call("call.allowed", ("s3:GetObject", OBJECT_ARN)),
        call("call.denied", ("s3:DeleteObject", OBJECT_ARN)),
    ]
    usage = grant_usage(g, calls)
    assert usage["calls"] == {"allowed": 2, "denied": 1}
    assert usage["unused_actions"] == ["s3:ListBucket", "s3:PutObject"]
    assert usage["unused_resources"] == [BUCKET_ARN, Q2_ARN]
    assert usage["suggested"] == {"actions": ["s3:GetObject"], "resources": [OBJECT_ARN]}
    assert usage["tight"] is False and usage["complete"] is True
    rows = {(r["action"], r["resource"]): (r["used"], r["calls"]) for r in usage["granted"]}
    assert rows[("s3:GetObject", OBJECT_ARN)] == (True, 2)
    assert rows[("s3:GetObject", Q2_ARN)] == (False, 0)
    assert ("s3:GetObject", BUCKET_ARN) not in rows  # not a pair the grant covers
    findings = "\n".join(usage["findings"])
    assert "s3:PutObject was granted and never used" in findings
    assert f"{Q2_ARN} was granted and never used" in findings
    assert f"s3:DeleteObject on {OBJECT_ARN} was tried 1 time(s) outside the grant" in findings


def test_a_prefix_grant_is_narrowed_to_the_objects_used() -> None:
    g = grant(["s3:GetObject"], ["arn:aws:s3:::reports/2026/*"])
    usage = grant_usage(g, [call("call.allowed", ("s3:GetObject", OBJECT_ARN))])
    assert usage["suggested"] == {"actions": ["s3:GetObject"], "resources": [OBJECT_ARN]}
    assert "only 1 exact ARN(s) under it were used" in usage["findings"][0]


def test_everything_used_is_tight_and_nothing_used_suggests_nothing() -> None:
    g = grant(["s3:GetObject"], [OBJECT_ARN], status="active")
    usage = grant_usage(g, [call("call.allowed", ("s3:GetObject", OBJECT_ARN))])
    assert usage["tight"] and not usage["findings"] and not usage["complete"]
    idle = grant_usage(g, [])
    assert idle["suggested"] is None and idle["unused_actions"] == ["s3:GetObject"]


def test_secrets_called_by_name_count_as_used() -> None:
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db"
    g = grant(["secretsmanager:GetSecretValue"], [secret])
    usage = grant_usage(g, [call("call.allowed", ("secretsmanager:GetSecretValue", secret))])
    assert usage["unused_actions"] == [] and usage["unused_resources"] == []


def test_agent_report_groups_repeated_scopes_and_suggests() -> None:
    wide = ["s3:GetObject", "s3:PutObject"]
    grants = [grant(wide, [OBJECT_ARN], gid=f"gr-{i}") for i in range(3)]
    grants.append(grant(["s3:ListBucket"], [BUCKET_ARN], gid="gr-9"))
    grants.append(
        {
            **grant(["s3:DeleteObject"], [OBJECT_ARN], status="denied", gid="gr-d"),
            "activated_at": None,
        }
    )
    usages = [
        grant_usage(g, [call("call.allowed", ("s3:GetObject", OBJECT_ARN))]) for g in grants[:3]
    ]
    usages.append(grant_usage(grants[3], []))
    usages.append(grant_usage(grants[4], []))
    report = agent_report("a", grants, usages)
    assert report["grants"] == 5 and report["by_status"] == {"denied": 1, "expired": 4}
    actions = {r["action"]: (r["granted"], r["used"]) for r in report["actions"]}
    assert actions == {"s3:GetObject": (3, 3), "s3:PutObject": (3, 0), "s3:ListBucket": (1, 0)}
    assert report["never_used_actions"] == ["s3:ListBucket", "s3:PutObject"]
    by_request = {tuple(s["requested"]["actions"]): s for s in report["suggestions"]}
    assert by_request[("s3:GetObject", "s3:PutObject")]["suggested"] == {
        "actions": ["s3:GetObject"],
        "resources": [OBJECT_ARN],
    }
    assert by_request[("s3:GetObject", "s3:PutObject")]["grants"] == 3
    assert by_request[("s3:ListBucket",)]["suggested"] is None


# --- through the API and the CLI ---------------------------------------------------------
def record_call(
    core: Jitgate, grant_id: str, agent: str, kind: str, *pairs: tuple[str, str]
) -> None:
    core.audit.record(
        core.clock.now(),
        NewEvent(
            kind,
            f"agent:{agent}",
            agent=agent,
            grant_id=grant_id,
            data={"operation": "GetObject", "access": [{"action": a, "arn": r} for a, r in pairs]},
        ),
    )


@pytest.fixture
def used_grant(core: Jitgate, agent_token: Callable[..., str]) -> tuple[str, str]:
    """An expired grant of GetObject+ListBucket of which only GetObject was used; (id, token)."""
    token = agent_token("reader")
    principal = core.identity.authenticate(token)
    g, _ = core.grants.request(
        principal,
        actions=["s3:GetObject", "s3:ListBucket"],
        resources=[OBJECT_ARN, BUCKET_ARN],
        duration_seconds=60,
        reason="read q3",
    )
    record_call(core, g.id, "reader", "call.allowed", ("s3:GetObject", OBJECT_ARN))
    assert isinstance(core.clock, FakeClock)
    core.clock.advance(120)
    core.grants.sweep()
    return g.id, token


def test_usage_api(
    api: Any, core: Jitgate, used_grant: tuple[str, str], agent_token: Any, auditor_token: Any
) -> None:
    grant_id, token = used_grant
    response = api.get(f"/v1/grants/{grant_id}/usage", headers=bearer(token))
    assert response.status_code == 200, response.text
    usage = response.json()
    assert usage["status"] == "expired" and usage["unused_actions"] == ["s3:ListBucket"]
    assert usage["suggested"] == {"actions": ["s3:GetObject"], "resources": [OBJECT_ARN]}
    assert (
        api.get(f"/v1/grants/{grant_id}/usage", headers=bearer(auditor_token())).status_code == 200
    )
    other = bearer(agent_token("someone-else"))
    assert api.get(f"/v1/grants/{grant_id}/usage", headers=other).status_code == 404
    assert api.get(f"/v1/grants/{grant_id}/usage").status_code == 401

    report = api.get("/v1/agents/reader/report", headers=bearer(token))
    assert report.status_code == 200
    body = report.json()
    assert body["never_used_actions"] == ["s3:ListBucket"]
    assert body["suggestions"][0]["suggested"]["actions"] == ["s3:GetObject"]
    assert (
        api.get("/v1/agents/reader/report", headers=bearer(auditor_token("aud-2"))).status_code
        == 200
    )
    assert api.get("/v1/agents/reader/report", headers=other).status_code == 404
    assert (
        api.get("/v1/agents/nobody/report", headers=bearer(auditor_token("aud-3"))).status_code
        == 404
    )


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setattr(cli.console, "_width", 250)
    monkeypatch.setattr(cli.err, "_width", 250)
    yield CliRunner()
    while cli._opened:
        cli._opened.pop().close()


def test_grants_show_and_agents_report_cli(runner: CliRunner, used_grant: tuple[str, str]) -> None:
    grant_id, _ = used_grant
    result = runner.invoke(cli.app, ["grants", "show", grant_id, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["usage"]["unused_actions"] == ["s3:ListBucket"]
    result = runner.invoke(cli.app, ["grants", "show", grant_id])
    assert result.exit_code == 0, result.output
    assert "least privilege: 1 call(s) allowed, 0 denied" in result.stdout
    assert "s3:ListBucket was granted and never used" in result.stdout
    assert "tighter scope that would have done the same work" in result.stdout

    result = runner.invoke(cli.app, ["agents", "report", "reader"])
    assert result.exit_code == 0, result.output
    assert "s3:ListBucket was granted 1 time(s) and never used" in result.stdout
    assert "suggested" in result.stdout
    result = runner.invoke(cli.app, ["agents", "report", "reader", "--json"])
    assert json.loads(result.stdout)["agent"] == "reader"
    result = runner.invoke(cli.app, ["agents", "report", "nobody"])
    assert result.exit_code == 1 and "no agent named 'nobody'" in result.stderr


def test_an_agent_without_grants_has_an_empty_report(core: Jitgate) -> None:
    from jitgate.api.agent_routes import build_agent_report

    core.identity.create_agent("idle")
    report = build_agent_report(core, "idle")
    assert report["grants"] == 0 and report["suggestions"] == [] and report["findings"] == []
