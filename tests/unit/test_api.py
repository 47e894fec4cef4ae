"""The control-plane HTTP API: shapes, visibility, roles, and refusals that name the problem."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from conftest import BUCKET_ARN, OBJECT_ARN, bearer
from jitgate.api.app import MAX_BODY, create_control_app
from jitgate.clock import FakeClock
from jitgate.core import Jitgate
from jitgate.store.schema import grants as grants_table

READ = {"actions": ["s3:GetObject"], "resources": [OBJECT_ARN], "reason": "q3 report"}
WRITE = {"actions": ["s3:PutObject"], "resources": [OBJECT_ARN], "reason": "fix a typo"}


def event_types(core: Jitgate) -> list[str]:
    return [e.type for e in core.audit.events(limit=10_000)]


def grant_rows(core: Jitgate) -> int:
    with core.db.read() as connection:
        return int(connection.execute(select(func.count()).select_from(grants_table)).scalar_one())


@pytest.fixture
def agent(agent_token: Callable[..., str]) -> dict[str, str]:
    """Authorization header of agent "agent-1"."""
    return bearer(agent_token("agent-1"))


@pytest.fixture
def approver(approver_token: Callable[..., str]) -> dict[str, str]:
    return bearer(approver_token())


@pytest.fixture
def admin(admin_token: Callable[..., str]) -> dict[str, str]:
    return bearer(admin_token())


def post_grant(api: TestClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/v1/grants", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


# --- requesting --------------------------------------------------------------------------------


def test_active_grant_shape(api: TestClient, agent: dict[str, str]) -> None:
    grant = post_grant(api, agent, {**READ, "duration_seconds": 120})
    assert grant["status"] == "active"
    assert grant["agent"] == "agent-1"
    assert grant["id"].startswith("gr-")
    assert (grant["actions"], grant["resources"]) == (["s3:GetObject"], [OBJECT_ARN])
    assert grant["duration_seconds"] == 120
    assert grant["expires_at"] == "2026-11-28T12:02:00.000Z"
    assert grant["decision"]["route"] == "auto"
    assert grant["decision"]["policies"] == ["auto-approve-low-risk-reads"]
    assert grant["decision"]["reasons"] == [
        f"s3:GetObject on {OBJECT_ARN}: auto by auto-approve-low-risk-reads (max 15m)"
    ]
    assert set(grant["credentials"]) == {
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    }
    assert grant["credentials"]["Expiration"] == grant["expires_at"]


def test_pending_grant_shape(api: TestClient, agent: dict[str, str]) -> None:
    grant = post_grant(api, agent, WRITE)
    assert grant["status"] == "pending"
    assert grant["expires_at"] is None
    assert grant["lapse_at"] == "2026-11-28T12:15:00.000Z"
    assert grant["decision"]["route"] == "required"
    assert grant["decision"]["policies"] == ["writes-need-approval"]
    assert "credentials" not in grant


def test_denied_grant_shape(api: TestClient, agent: dict[str, str]) -> None:
    grant = post_grant(api, agent, {**READ, "duration_seconds": 3600})
    assert grant["status"] == "denied"
    assert grant["expires_at"] is None
    assert grant["decision"]["route"] == "denied"
    assert grant["decision"]["reasons"] == [
        "duration 3600s is above the maximum of 900s (15m) allowed by auto-approve-low-risk-reads "
        f"for s3:GetObject on {OBJECT_ARN}"
    ]
    assert "credentials" not in grant


def test_canonical_action_names_come_back(api: TestClient, agent: dict[str, str]) -> None:
    grant = post_grant(
        api,
        agent,
        {
            "actions": ["S3:LISTBUCKET", "s3:getobject"],
            "resources": [BUCKET_ARN, OBJECT_ARN],
            "reason": "r",
        },
    )
    assert grant["actions"] == ["s3:ListBucket", "s3:GetObject"]
    assert grant["status"] == "active"


# --- refusals: 4xx JSON naming the problem, no grant row, one grant.refused ----------------------


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


BIG = json.dumps({**READ, "reason": "x" * (MAX_BODY + 10)}).encode()

REFUSALS: dict[str, tuple[Any, int, str, str]] = {
    # name: (body: bytes | dict | generator factory, status, error code, message)
    "malformed json": (b'{"actions": [', 400, "invalid_request", "request body is not valid JSON"),
    "not an object": (b"[1, 2]", 400, "invalid_request", "request body must be a JSON object"),
    "empty body": (b"", 400, "invalid_request", "request body is empty; expected a JSON object"),
    "not utf-8": (b'{"reason": "\xff"}', 400, "invalid_request", "request body is not valid JSON"),
    "unknown field": (
        {**READ, "colour": "red"},
        400,
        "invalid_request",
        "unknown field(s): colour (allowed: actions, agent, duration_seconds, one_call, operation, reason, resources)",
    ),
    "missing actions": (
        {"resources": [OBJECT_ARN], "reason": "r"},
        400,
        "invalid_request",
        "missing field(s): actions",
    ),
    "body over 1 MiB": (
        BIG,
        413,
        "body_too_large",
        f"request body is larger than {MAX_BODY} bytes",
    ),
    "body over 1 MiB, chunked": (
        lambda: chunks(BIG),
        413,
        "body_too_large",
        f"request body is larger than {MAX_BODY} bytes",
    ),
    "invalid arn": (
        {**READ, "resources": ["arn:aws:s3::reports"]},
        400,
        "invalid_scope",
        "resource 'arn:aws:s3::reports' is not an ARN",
    ),
    "object action on bucket": (
        {**READ, "resources": [BUCKET_ARN]},
        400,
        "invalid_scope",
        "action 's3:GetObject' fits none of the requested resources",
    ),
    "unknown action": (
        {**READ, "actions": ["s3:GetObjects"]},
        400,
        "invalid_scope",
        "action 's3:GetObjects' is not an IAM action of service 's3'",
    ),
    "wildcard action": (
        {**READ, "actions": ["s3:*"]},
        400,
        "invalid_scope",
        "action 's3:*' is a wildcard",
    ),
    "actions not a list": (
        {**READ, "actions": "s3:GetObject"},
        400,
        "invalid_scope",
        "actions must be a non-empty list of strings",
    ),
    "zero duration": (
        {**READ, "duration_seconds": 0},
        400,
        "invalid_request",
        "duration_seconds must be positive, got 0",
    ),
    "negative duration": (
        {**READ, "duration_seconds": -60},
        400,
        "invalid_request",
        "duration_seconds must be positive, got -60",
    ),
    "huge duration": (
        {**READ, "duration_seconds": 10**12},
        400,
        "invalid_request",
        "duration_seconds 1000000000000 is above the hard limit of 43200 (12h)",
    ),
    "enormous duration": (
        b'{"actions": ["s3:GetObject"], "resources": ["' + OBJECT_ARN.encode() + b'"], '
        b'"reason": "r", "duration_seconds": ' + b"9" * 5000 + b"}",
        400,
        "invalid_request",
        "request body is not valid JSON: Exceeds the limit (4300 digits)",
    ),
    "fractional duration": (
        {**READ, "duration_seconds": 1.5},
        400,
        "invalid_request",
        "duration_seconds must be a whole number of seconds, got 1.5",
    ),
    "string duration": (
        {**READ, "duration_seconds": "300"},
        400,
        "invalid_request",
        "duration_seconds must be a whole number of seconds, got '300'",
    ),
    "boolean duration": (
        {**READ, "duration_seconds": True},
        400,
        "invalid_request",
        "duration_seconds must be a whole number of seconds, got True",
    ),
    "missing reason": (
        {"actions": READ["actions"], "resources": READ["resources"]},
        400,
        "invalid_request",
        "reason is required: say what the task needs this access for",
    ),
    "blank reason": (
        {**READ, "reason": "   "},
        400,
        "invalid_request",
        "reason is required: say what the task needs this access for",
    ),
    "reason over two lines": (
        {**READ, "reason": "line one\nline two"},
        400,
        "invalid_request",
        "reason must be one line of text without control characters",
    ),
    "another agent": (
        {**READ, "agent": "agent-2"},
        403,
        "forbidden",
        "an agent can request grants only for itself",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_requests(api: TestClient, core: Jitgate, agent: dict[str, str], case: str) -> None:
    body, status, code, message = REFUSALS[case]
    before = event_types(core)
    if isinstance(body, dict):
        response = api.post("/v1/grants", headers=agent, json=body)
    elif callable(body):
        response = api.post("/v1/grants", headers=agent, content=body())
    else:
        response = api.post(
            "/v1/grants", headers={**agent, "content-type": "application/json"}, content=body
        )
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "message"}
    assert payload["error"] == code
    assert message in payload["message"]
    assert grant_rows(core) == 0
    new = event_types(core)[len(before) :]
    assert new.count("grant.refused") == 1
    assert set(new) <= {"grant.refused", "access.denied"}
    (refused,) = core.audit.events(types=["grant.refused"])
    assert refused.actor == "agent:agent-1"
    assert refused.data["error"] == code


def test_missing_or_bad_token_is_401_and_recorded(api: TestClient, core: Jitgate) -> None:
    response = api.post("/v1/grants", json=READ)
    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized",
        "message": "missing bearer token (Authorization: Bearer <token>)",
    }
    response = api.get("/v1/grants", headers=bearer("jga_AAAAAAAAAAAAAAAA_" + "b" * 43))
    assert response.status_code == 401
    assert response.json()["message"] == "invalid bearer token"
    assert event_types(core) == ["auth.failed", "auth.failed"]
    assert grant_rows(core) == 0


def test_a_flood_of_bad_tokens_is_counted_not_written_one_by_one(
    core: Jitgate, clock: FakeClock
) -> None:
    """An anonymous caller cannot grow the audit log without bound: past the per-source limit
    its failures are counted, and the count is written once the minute is over."""
    core.settings = dataclasses.replace(core.settings, failures_per_source=2)
    with TestClient(create_control_app(core)) as api:
        for _ in range(5):
            assert api.get("/v1/grants", headers=bearer("jga_nope")).status_code == 401
        assert event_types(core) == ["auth.failed", "auth.failed"]
        clock.advance(61)
        assert api.get("/v1/grants").status_code == 401  # a new minute: written again
    assert event_types(core) == ["auth.failed", "auth.failed", "denials.suppressed", "auth.failed"]
    (summary,) = core.audit.events(types=["denials.suppressed"])
    assert summary.actor == "jitgate"
    assert summary.data["listener"] == "control"
    assert summary.data["source"] == "testclient"
    assert summary.data["count"] == 3
    assert summary.data["codes"] == {"unauthorized": 3}


def test_nul_characters_and_bad_agent_names_are_clear_400s_and_recorded_refusals(
    api: TestClient, core: Jitgate, admin: dict[str, str]
) -> None:
    """PostgreSQL cannot store NUL in text, nor an agent name over 64 characters: such input
    used to fail the write and answer 500, with the refusal unrecorded (found by review)."""
    for url in ("/v1/grants?agent=a%00b", "/v1/audit?agent=a%00b"):
        response = api.get(url, headers=admin)
        assert response.status_code == 400, url
        assert "NUL" in response.json()["message"]
    response = api.post("/v1/grants", headers=admin, json={**READ, "reason": "x\u0000y"})
    assert response.status_code == 400 and "NUL" in response.json()["message"]
    long_name = "A" * 100
    response = api.post("/v1/grants", headers=admin, json={**READ, "agent": long_name})
    assert response.status_code == 400
    refusals = core.audit.events(types=["grant.refused"])
    assert len(refusals) == 2  # the NUL reason and the long name, each recorded
    refused = refusals[-1]
    assert refused.agent is None
    assert refused.data["agent_given"] == repr(long_name)[:100]


# --- reading -------------------------------------------------------------------------------------


def test_credentials_only_for_the_owning_agent_while_active(
    api: TestClient, agent: dict[str, str], admin: dict[str, str], agent_token, clock: FakeClock
) -> None:
    grant = post_grant(api, agent, {**READ, "duration_seconds": 60})
    url = f"/v1/grants/{grant['id']}"
    own = api.get(url, headers=agent).json()
    assert own["credentials"] == grant["credentials"]
    seen_by_admin = api.get(url, headers=admin).json()
    assert seen_by_admin["status"] == "active"
    assert "credentials" not in seen_by_admin
    other = api.get(url, headers=bearer(agent_token("agent-2")))
    assert other.status_code == 404
    assert other.json() == {"error": "not_found", "message": f"no grant {grant['id']!r}"}
    clock.advance(60)
    assert "credentials" not in api.get(url, headers=agent).json()


def test_an_agent_probing_another_agents_grant_is_refused_and_recorded(
    api: TestClient, core: Jitgate, agent: dict[str, str], agent_token
) -> None:
    """Another agent's grant answers 404 (its existence is not revealed), and every such
    refusal is written down, like any other denial."""
    grant = post_grant(api, agent, READ)
    prober = bearer(agent_token("agent-2"))
    grant_url = f"/v1/grants/{grant['id']}"
    probes = [
        api.get(grant_url, headers=prober),
        api.get(f"{grant_url}/calls", headers=prober),
        api.post(f"{grant_url}/revoke", headers=prober, json={"reason": "mine now"}),
        api.get("/v1/agents/agent-1/report", headers=prober),
    ]
    assert [p.status_code for p in probes] == [404] * len(probes)
    denied = core.audit.events(types=["access.denied"])
    assert len(denied) == len(probes)
    assert {e.actor for e in denied} == {"agent:agent-2"}
    assert api.get(grant_url, headers=agent).json()["status"] == "active"  # untouched


def test_revoked_grant_has_no_credentials(api: TestClient, agent: dict[str, str]) -> None:
    grant = post_grant(api, agent, READ)
    response = api.post(f"/v1/grants/{grant['id']}/revoke", headers=agent, json={"reason": "done"})
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert "credentials" not in api.get(f"/v1/grants/{grant['id']}", headers=agent).json()


def test_list_filters(
    api: TestClient, agent: dict[str, str], admin: dict[str, str], agent_token
) -> None:
    active = post_grant(api, agent, READ)
    waiting = post_grant(api, agent, WRITE)
    other = bearer(agent_token("agent-2"))
    theirs = post_grant(api, other, READ)

    def ids(headers: dict[str, str], **params: str) -> set[str]:
        response = api.get("/v1/grants", headers=headers, params=params)
        assert response.status_code == 200, response.text
        return {g["id"] for g in response.json()["grants"]}

    assert ids(admin) == {active["id"], waiting["id"], theirs["id"]}
    assert ids(admin, status="pending") == {waiting["id"]}
    assert ids(admin, agent="agent-2") == {theirs["id"]}
    assert ids(admin, agent="agent-1", status="active") == {active["id"]}
    assert ids(agent) == {active["id"], waiting["id"]}
    assert ids(other) == {theirs["id"]}
    refused = api.get("/v1/grants", headers=other, params={"agent": "agent-1"})
    assert refused.status_code == 403
    bad = api.get("/v1/grants", headers=admin, params={"status": "bogus"})
    assert bad.status_code == 400
    assert bad.json()["message"].startswith("status 'bogus' is invalid")
    listed = api.get("/v1/grants", headers=admin, params={"status": "active"}).json()["grants"]
    assert all("credentials" not in g for g in listed)


def test_bad_query_parameters_are_json_errors(api: TestClient, admin: dict[str, str]) -> None:
    response = api.get("/v1/grants", headers=admin, params={"limit": "lots"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "message": "query limit: Input should be a valid integer, unable to parse string as an integer",
    }


def test_unknown_route_is_a_json_404(api: TestClient) -> None:
    response = api.get("/v1/nothing-here")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "message"}


# --- approving -----------------------------------------------------------------------------------


def test_approve_and_deny_over_http(
    api: TestClient, core: Jitgate, agent: dict[str, str], approver: dict[str, str]
) -> None:
    first = post_grant(api, agent, WRITE)
    response = api.post(
        f"/v1/grants/{first['id']}/approve", headers=approver, json={"comment": "ok"}
    )
    assert response.status_code == 200
    assert response.json()["status"] == "active"
    assert api.get(f"/v1/grants/{first['id']}", headers=agent).json()["credentials"]
    again = api.post(f"/v1/grants/{first['id']}/approve", headers=approver)
    assert again.status_code == 409
    assert again.json() == {
        "error": "conflict",
        "message": f"grant {first['id']} is active, not pending; nothing to approve",
    }

    second = post_grant(api, agent, WRITE)
    response = api.post(f"/v1/grants/{second['id']}/deny", headers=approver)
    assert response.status_code == 200
    assert response.json()["status"] == "denied"
    assert api.post("/v1/grants/gr-nope/approve", headers=approver).status_code == 404


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_agents_get_403_on_approve_and_deny_and_it_is_recorded(
    api: TestClient, core: Jitgate, agent: dict[str, str], verb: str
) -> None:
    grant = post_grant(api, agent, WRITE)
    response = api.post(f"/v1/grants/{grant['id']}/{verb}", headers=agent)
    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "message": "agents cannot approve or deny grants",
    }
    (denied,) = core.audit.events(types=["access.denied"])
    assert denied.actor == "agent:agent-1"
    assert denied.data == {
        "method": "POST",
        "path": f"/v1/grants/{grant['id']}/{verb}",
        "message": "agents cannot approve or deny grants",
    }
    assert api.get(f"/v1/grants/{grant['id']}", headers=agent).json()["status"] == "pending"


def test_auditor_cannot_approve(api: TestClient, agent: dict[str, str], auditor_token) -> None:
    grant = post_grant(api, agent, WRITE)
    response = api.post(f"/v1/grants/{grant['id']}/approve", headers=bearer(auditor_token()))
    assert response.status_code == 403
    assert response.json()["message"] == "role 'auditor' cannot approve or deny grants"


def test_approve_body_is_validated(
    api: TestClient, agent: dict[str, str], approver: dict[str, str]
) -> None:
    grant = post_grant(api, agent, WRITE)
    response = api.post(f"/v1/grants/{grant['id']}/approve", headers=approver, json={"colour": 1})
    assert response.status_code == 400
    assert response.json()["message"].startswith("unknown field(s): colour")


# --- agents and users ------------------------------------------------------------------------------


def test_admin_creates_and_lists_agents(
    api: TestClient, core: Jitgate, admin: dict[str, str], approver: dict[str, str]
) -> None:
    response = api.post("/v1/agents", headers=admin, json={"name": "etl-bot", "groups": ["etl"]})
    assert response.status_code == 201
    created = response.json()
    assert (created["name"], created["groups"], created["disabled"]) == ("etl-bot", ["etl"], False)
    assert core.identity.authenticate(created["token"]).name == "etl-bot"
    listed = api.get("/v1/agents", headers=approver).json()["agents"]
    assert [a["name"] for a in listed] == ["etl-bot"]
    assert "token" not in listed[0]
    refused = api.post("/v1/agents", headers=approver, json={"name": "x"})
    assert refused.status_code == 403
    assert refused.json()["message"] == "this endpoint needs an admin"
    duplicate = api.post("/v1/agents", headers=admin, json={"name": "etl-bot"})
    assert duplicate.status_code == 409


def test_disabling_an_agent_over_http(
    api: TestClient, core: Jitgate, admin: dict[str, str], agent_token
) -> None:
    token = agent_token("agent-d")
    grant = post_grant(api, bearer(token), READ)
    response = api.post("/v1/agents/agent-d/disable", headers=admin)
    assert response.status_code == 200
    assert response.json()["disabled"] is True
    shown = api.get(f"/v1/grants/{grant['id']}", headers=admin).json()
    assert (shown["status"], shown["ended_by"]) == ("revoked", "user:admin-1")
    refused = api.get("/v1/grants", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.json()["message"] == "agent 'agent-d' is disabled"
    assert api.post("/v1/agents/agent-d/enable", headers=admin).json()["disabled"] is False
    assert api.get("/v1/grants", headers=bearer(token)).status_code == 200
    assert api.get(f"/v1/grants/{grant['id']}", headers=admin).json()["status"] == "revoked"
    assert api.post("/v1/agents/nobody/disable", headers=admin).status_code == 404


def test_admin_creates_users(api: TestClient, core: Jitgate, admin: dict[str, str]) -> None:
    response = api.post("/v1/users", headers=admin, json={"name": "carol", "role": "approver"})
    assert response.status_code == 201
    assert core.identity.authenticate(response.json()["token"]).role == "approver"
    bad = api.post("/v1/users", headers=admin, json={"name": "dave", "role": "boss"})
    assert bad.status_code == 400
    assert bad.json()["message"] == "role 'boss' is invalid: use one of admin, approver, auditor"


# --- audit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/audit", "/v1/audit/verify"])
def test_agent_tokens_get_403_on_the_audit_api(
    api: TestClient, core: Jitgate, agent: dict[str, str], path: str
) -> None:
    response = api.get(path, headers=agent)
    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "message": "agent tokens cannot use this endpoint",
    }
    assert event_types(core)[-1] == "access.denied"


def test_audit_api_for_auditors(
    api: TestClient, core: Jitgate, agent: dict[str, str], auditor_token
) -> None:
    auditor = bearer(auditor_token())
    grant = post_grant(api, agent, READ)
    events = api.get("/v1/audit", headers=auditor).json()["events"]
    assert [e["type"] for e in events] == [
        "agent.created",
        "user.created",
        "grant.requested",
        "grant.decided",
        "grant.activated",
    ]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    after = api.get("/v1/audit", headers=auditor, params={"after_seq": 3}).json()["events"]
    assert [e["seq"] for e in after] == [4, 5]
    by_grant = api.get("/v1/audit", headers=auditor, params={"grant_id": grant["id"]}).json()
    assert len(by_grant["events"]) == 3
    tail = api.get("/v1/audit", headers=auditor, params={"tail": 2}).json()["events"]
    assert [e["seq"] for e in tail] == [4, 5]
    verify = api.get("/v1/audit/verify", headers=auditor).json()
    assert verify == {
        "ok": True,
        "checked": 5,
        "head_seq": 5,
        "head_hash": events[-1]["hash"],
        "first_bad_seq": None,
        "problem": None,
    }


# --- policy, health, schema ----------------------------------------------------------------------


def test_policy_check_explains_without_creating(
    api: TestClient, core: Jitgate, agent: dict[str, str]
) -> None:
    before = event_types(core)
    response = api.post(
        "/v1/policy/check",
        headers=agent,
        json={"actions": ["s3:ListBucket", "s3:PutObject"], "resources": [BUCKET_ARN, OBJECT_ARN]},
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["agent"] == "agent-1"
    assert result["route"] == "required"
    assert [(p["action"], p["route"]) for p in result["pairs"]] == [
        ("s3:ListBucket", "auto"),
        ("s3:PutObject", "required"),
    ]
    assert grant_rows(core) == 0
    assert event_types(core) == before


def test_healthz(api: TestClient) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["policy_error"] is None
    assert body["audit_alarm"] is False
    # Nothing about the record itself without a token (found by review: the head sequence
    # number told any caller how much everyone else was doing).
    assert set(body) == {"status", "version", "policy_error", "audit_alarm"}
    assert api.get("/v1/audit/metrics").status_code == 401


def test_healthz_reports_a_rejected_policy(api: TestClient, core: Jitgate) -> None:
    path = core.settings.policy_path
    path.write_text("permit (principal, action, resource);\n", encoding="utf-8")
    mtime = path.stat().st_mtime + 10
    os.utime(path, (mtime, mtime))
    assert core.policy.reload_if_changed() is False
    body = api.get("/healthz").json()
    assert (
        body["policy_error"]
        == f'{path}:1: a permit needs @approval("auto") or @approval("required")'
    )


def test_openapi(api: TestClient) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "jitgate control plane"
    for path in (
        "/v1/grants",
        "/v1/grants/{grant_id}",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/agents",
        "/healthz",
    ):
        assert path in spec["paths"]
    body = spec["paths"]["/v1/grants"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["schema"]["required"]) == {"actions", "resources", "reason"}
