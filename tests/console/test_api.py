"""The control-plane API's additions for approvers: one-call requests, approvals bound to a
fingerprint, people with groups and passwords."""

from __future__ import annotations

from sqlalchemy import update
from starlette.testclient import TestClient

from conftest import bearer
from jitgate.core import Jitgate
from jitgate.store.schema import grants as grants_table

from .conftest import OBJECT_ARN, PASSWORD, csrf_of


def test_one_call_request_and_bound_approval(
    api: TestClient, core: Jitgate, agent_token, approver_token
) -> None:
    agent, approver = bearer(agent_token("bot")), bearer(approver_token("ann"))
    created = api.post(
        "/v1/grants",
        headers=agent,
        json={
            "actions": ["s3:DeleteObject"],
            "resources": [OBJECT_ARN],
            "reason": "remove it",
            "one_call": True,
            "operation": "DeleteObject",
        },
    ).json()
    assert created["status"] == "pending"
    assert created["one_call"] == {"operation": "DeleteObject"}
    assert created["risk"] == "high" and created["requested_by"] == "agent:bot"
    wrong = api.post(
        f"/v1/grants/{created['id']}/approve", headers=approver, json={"fingerprint": "0" * 64}
    )
    assert wrong.status_code == 409
    assert "is not the request you were shown" in wrong.json()["message"]
    with core.db.write() as connection:
        connection.execute(
            update(grants_table).where(grants_table.c.id == created["id"]).values(reason="changed")
        )
    stale = api.post(
        f"/v1/grants/{created['id']}/approve",
        headers=approver,
        json={"fingerprint": created["fingerprint"]},
    )
    assert stale.status_code == 409
    current = api.get(f"/v1/grants/{created['id']}", headers=approver).json()
    approved = api.post(
        f"/v1/grants/{created['id']}/approve",
        headers=approver,
        json={"fingerprint": current["fingerprint"], "comment": "ok"},
    )
    assert approved.status_code == 200 and approved.json()["status"] == "active"
    bad = api.post(f"/v1/grants/{created['id']}/approve", headers=approver, json={"fingerprint": 5})
    assert bad.status_code == 400


def test_people_with_groups_and_passwords_over_the_api(
    api: TestClient, core: Jitgate, admin_token, approver_token
) -> None:
    admin = bearer(admin_token("root"))
    created = api.post(
        "/v1/users",
        headers=admin,
        json={"name": "sec", "role": "approver", "groups": ["security"], "password": PASSWORD},
    )
    assert created.status_code == 201, created.text
    assert created.json()["groups"] == ["security"]
    assert core.identity.check_password("sec", PASSWORD).groups == ("security",)
    assert (
        api.post("/v1/users/sec/password", headers=admin, json={"password": "x"}).status_code == 400
    )
    assert (
        api.post(
            "/v1/users/sec/password", headers=admin, json={"password": "a new long password"}
        ).status_code
        == 200
    )
    assert core.identity.check_password("sec", "a new long password") is not None
    assert api.post("/v1/users/sec/disable", headers=admin).json() == {
        "name": "sec",
        "disabled": True,
    }
    assert core.identity.check_password("sec", "a new long password") is None
    assert api.post("/v1/users/sec/bogus", headers=admin).status_code == 404
    approver = bearer(approver_token("ann"))
    assert api.post("/v1/users/sec/enable", headers=approver).status_code == 403


def test_the_console_is_mounted_on_the_control_app(api: TestClient) -> None:
    page = api.get("/ui/login")
    assert page.status_code == 200 and csrf_of(page.text)
    assert api.get("/ui", follow_redirects=False).status_code == 307
    assert all(not path.startswith("/ui") for path in api.get("/openapi.json").json()["paths"])
