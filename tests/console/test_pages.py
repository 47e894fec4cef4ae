"""The console's pages through its HTTP interface: what a person sees and can do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text, update
from starlette.testclient import TestClient

from conftest import build_core
from jitgate.audit.log import NewEvent
from jitgate.clock import FakeClock
from jitgate.core import Jitgate
from jitgate.identity.service import LOCAL_ADMIN, Principal
from jitgate.store.schema import grants as grants_table

from .conftest import PASSWORD, READ, csrf_of, request_grant, sign_in


def approve_form(console: TestClient, grant_id: str, token: str, fingerprint: str, **extra: str):
    return console.post(
        f"/ui/grants/{grant_id}/approve",
        data={"csrf_token": token, "fingerprint": fingerprint, **extra},
        follow_redirects=False,
    )


def card(html: str, grant_id: str) -> str:
    match = re.search(rf'<article[^>]*id="req-{grant_id}".*?</article>', html, flags=re.S)
    assert match is not None, f"{grant_id} is not in the inbox"
    return match.group(0)


def test_the_inbox_shows_a_request_in_five_seconds(
    console: TestClient, core: Jitgate, person, agent: Principal
) -> None:
    person("ann")
    request_grant(core, agent, READ)  # history: one active read
    grant = request_grant(core, agent, reason="Fix the typo in the Q3 summary (FIN-212)")
    sign_in(console, "ann")
    html = card(console.get("/ui/").text, grant.id)
    for shown in (
        "HIGH",  # risk tier
        ">bot</a> wants <strong>Write</strong> access for 5 min",  # who, what, how long
        "Fix the typo in the Q3 summary (FIN-212)",  # the reason
        "<code>s3:PutObject</code>",  # exact actions x ARNs
        "arn:aws:s3:::reports/2026/q3.csv",
        "writes-need-approval",  # the deciding policy
        "0 of 1 approval",
        "lapses in",
        "2 requests in 7 days",  # the agent's recent history
        "1 active",
        "Approve for 5 min",
        grant.fingerprint[:12],
    ):
        assert shown in html, shown


def test_low_risk_reads_never_reach_the_inbox(
    console: TestClient, core: Jitgate, person, agent
) -> None:
    person("ann")
    read = request_grant(core, agent, READ)
    sign_in(console, "ann")
    html = console.get("/ui/").text
    assert read.id not in html.split("Requests per rule")[0]
    assert "Nothing waits for a decision" in html


def test_rule_counts_this_week(
    console: TestClient, core: Jitgate, person, agent, clock: FakeClock
) -> None:
    person("ann")
    request_grant(core, agent)  # 8 days ago: not this week
    clock.advance(days=8)
    for _ in range(3):
        request_grant(core, agent)
    request_grant(core, agent, READ)
    sign_in(console, "ann")
    side = console.get("/ui/").text.split("Requests per rule")[1]
    rows = re.findall(
        r"<code>([a-z-]+)</code>.*?<td class=\"num\"[^>]*>(\d+)</td>", side, flags=re.S
    )
    assert ("writes-need-approval", "3") in rows
    assert ("auto-approve-low-risk-reads", "1") in rows


def test_approve_in_the_console(console: TestClient, core: Jitgate, person, agent) -> None:
    person("ann")
    grant = request_grant(core, agent)
    token = sign_in(console, "ann")
    response = approve_form(
        console, grant.id, token, grant.fingerprint, comment="typo fix, fine", back="inbox"
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/?done=approved&grant={grant.id}"
    assert f"You approved {grant.id}." in console.get(response.headers["location"]).text
    approved = core.grants.get(LOCAL_ADMIN, grant.id)[0]
    assert approved.status == "active"
    assert approved.approvals[0]["comment"] == "typo fix, fine"
    [event] = core.audit.events(grant_id=grant.id, types=["grant.approval"])
    assert event.data == {"comment": "typo fix, fine", "fingerprint": grant.fingerprint}


def test_deny_in_the_console(console: TestClient, core: Jitgate, person, agent) -> None:
    person("ann")
    grant = request_grant(core, agent)
    token = sign_in(console, "ann")
    response = console.post(
        f"/ui/grants/{grant.id}/deny",
        data={"csrf_token": token, "comment": "use the staging bucket"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert core.grants.get(LOCAL_ADMIN, grant.id)[0].status == "denied"


def test_approving_twice(console: TestClient, core: Jitgate, person, agent, new_client) -> None:
    person("ann")
    person("bea")
    grant = request_grant(core, agent)
    token = sign_in(console, "ann")
    assert approve_form(console, grant.id, token, grant.fingerprint).status_code == 303
    again = approve_form(console, grant.id, token, grant.fingerprint)
    assert again.status_code == 409
    assert "is active, not pending; nothing to approve" in again.text
    other = new_client()
    late = approve_form(other, grant.id, sign_in(other, "bea"), grant.fingerprint)
    assert late.status_code == 409
    assert [e.type for e in core.audit.events(grant_id=grant.id)].count("grant.approval") == 1


def test_approving_a_changed_request(console: TestClient, core: Jitgate, person, agent) -> None:
    person("ann")
    grant = request_grant(core, agent)
    token = sign_in(console, "ann")
    shown = card(console.get("/ui/").text, grant.id)
    fingerprint = re.search(r'name="fingerprint" value="([0-9a-f]{64})"', shown).group(1)
    with core.db.write() as connection:
        connection.execute(
            update(grants_table)
            .where(grants_table.c.id == grant.id)
            .values(actions=["s3:PutObject", "s3:DeleteObject"])
        )
    response = approve_form(console, grant.id, token, fingerprint)
    assert response.status_code == 409
    assert "is not the request you were shown" in response.text
    assert core.grants.get(LOCAL_ADMIN, grant.id)[0].status == "pending"


def test_approving_a_lapsed_request(
    console: TestClient, core: Jitgate, person, agent, clock: FakeClock
) -> None:
    person("ann")
    grant = request_grant(core, agent)
    token = sign_in(console, "ann")
    clock.advance(core.settings.lapse_seconds + 1)
    response = approve_form(console, grant.id, token, grant.fingerprint)
    assert response.status_code == 409
    assert "lapsed" in response.text


def test_self_approval_in_the_console(console: TestClient, core: Jitgate, person) -> None:
    person("olga")
    _, token = core.identity.create_agent("olgas-bot", owner="olga")
    grant = request_grant(core, core.identity.authenticate(token))
    csrf = sign_in(console, "olga")
    html = card(console.get("/ui/").text, grant.id)
    assert "owns agent &#39;olgas-bot&#39; and cannot decide its grants" in html
    assert "/approve" not in html
    response = approve_form(console, grant.id, csrf, grant.fingerprint)
    assert response.status_code == 403
    assert core.grants.get(LOCAL_ADMIN, grant.id)[0].status == "pending"
    assert core.audit.events(types=["access.denied"])


def test_auditors_see_but_cannot_decide(console: TestClient, core: Jitgate, person, agent) -> None:
    person("aud", "auditor")
    grant = request_grant(core, agent)
    csrf = sign_in(console, "aud")
    html = card(console.get("/ui/").text, grant.id)
    assert "role &#39;auditor&#39; cannot approve or deny grants" in html
    assert approve_form(console, grant.id, csrf, grant.fingerprint).status_code == 403


def test_the_inbox_fragment_refreshes_in_place(
    console: TestClient, core: Jitgate, person, agent
) -> None:
    person("ann")
    sign_in(console, "ann")
    empty = console.get("/ui/fragments/inbox")
    assert empty.status_code == 200 and empty.headers["x-count"] == "0"
    grant = request_grant(core, agent)
    arrived = console.get("/ui/fragments/inbox")
    assert arrived.headers["x-count"] == "1"
    assert arrived.headers["x-version"] != empty.headers["x-version"]
    assert f'id="req-{grant.id}"' in arrived.text and "<html" not in arrived.text
    same = console.get("/ui/fragments/inbox")
    assert same.headers["x-version"] == arrived.headers["x-version"]
    page = console.get("/ui/").text
    assert 'data-poll="/ui/fragments/inbox"' in page
    assert f'data-version="{arrived.headers["x-version"]}"' in page


def test_a_grants_page_has_its_whole_record(
    console: TestClient, core: Jitgate, person, agent
) -> None:
    person("ann")
    grant = request_grant(core, agent)
    core.grants.approve(core.identity.user_principal("ann"), grant.id, "ok")
    actor = "agent:bot"
    now = core.clock.now()
    access = [{"action": "s3:PutObject", "arn": "arn:aws:s3:::reports/2026/q3.csv"}]
    core.audit.record(
        now,
        NewEvent(
            "call.allowed",
            actor,
            "bot",
            grant.id,
            {"request_id": "r1", "service": "s3", "operation": "PutObject", "access": access},
        ),
        NewEvent(
            "call.completed",
            actor,
            "bot",
            grant.id,
            {
                "request_id": "r1",
                "operation": "PutObject",
                "service": "s3",
                "status": 200,
                "bytes_in": 1234,
                "bytes_out": 0,
                "duration_ms": 12.5,
            },
        ),
        NewEvent(
            "call.denied",
            actor,
            "bot",
            grant.id,
            {
                "request_id": "r2",
                "service": "s3",
                "operation": "GetObject",
                "code": "AccessDenied",
                "message": f"grant {grant.id} does not allow s3:GetObject on arn:aws:s3:::reports/2026/q2.csv",
                "access": [{"action": "s3:GetObject", "arn": "arn:aws:s3:::reports/2026/q2.csv"}],
            },
        ),
    )
    sign_in(console, "ann")
    html = console.get(f"/ui/grants/{grant.id}").text
    for shown in (
        "fix a typo",  # the request
        "writes-need-approval",  # the decision
        "user:ann",  # the approval
        "ok",
        "s3:PutObject",
        "1234 / 0",  # bytes in / out of the allowed call
        ">200<",
        "12.5",
        "denied",
        "does not allow s3:GetObject on arn:aws:s3:::reports/2026/q2.csv",
        "grant.requested",
        "grant.activated",
        'Calls made under this grant <span class="count">2</span>',
    ):
        assert shown in html, shown
    live = console.get(f"/ui/fragments/grants/{grant.id}")
    assert live.status_code == 200 and "x-version" in live.headers


def test_active_grants_with_time_left_and_revoke(
    console: TestClient, core: Jitgate, person, agent, clock: FakeClock, new_client
) -> None:
    person("root", "admin")
    person("ann")
    active = request_grant(core, agent, READ)
    clock.advance(60)
    admin_token = sign_in(console, "root")
    html = console.get("/ui/grants?status=active").text
    assert f'id="row-{active.id}"' in html
    assert "4m 00s" in html  # time left, server-rendered (the page counts down from there)
    approver = new_client()
    sign_in(approver, "ann")
    assert "Revoke" not in approver.get("/ui/grants?status=active").text
    response = console.post(
        f"/ui/grants/{active.id}/revoke",
        data={"csrf_token": admin_token, "back": "active"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert core.grants.get(LOCAL_ADMIN, active.id)[0].status == "revoked"
    assert active.id not in console.get("/ui/grants?status=active").text


def test_agents_create_and_disable(
    console: TestClient, core: Jitgate, person, agent, new_client
) -> None:
    person("root", "admin")
    person("ann")
    live = request_grant(core, agent, READ)
    token = sign_in(console, "root")
    created = console.post(
        "/ui/agents",
        data={
            "csrf_token": token,
            "name": "reporter",
            "groups": "analytics, reporting",
            "owner": "ann",
        },
    )
    assert created.status_code == 200
    shown = re.search(r'<pre class="token">([^<]+)</pre>', created.text).group(1)
    assert core.identity.authenticate(shown).name == "reporter"
    assert core.identity.get_agent("reporter").owner == "ann"
    assert "shown <strong>once</strong>" in created.text
    assert shown not in console.get("/ui/agents").text  # once
    disabled = console.post(
        "/ui/agents/bot/disable", data={"csrf_token": token}, follow_redirects=False
    )
    assert disabled.status_code == 303
    assert core.identity.get_agent("bot").disabled
    assert core.grants.get(LOCAL_ADMIN, live.id)[0].status == "revoked"
    approver = new_client()
    approver_token = sign_in(approver, "ann")
    refused = approver.post("/ui/agents", data={"csrf_token": approver_token, "name": "sneaky"})
    assert refused.status_code == 403


def test_users_are_for_admins_only(console: TestClient, core: Jitgate, person, new_client) -> None:
    person("root", "admin")
    person("ann")
    approver = new_client()
    approver_token = sign_in(approver, "ann")
    assert approver.get("/ui/users").status_code == 403
    assert ">Users<" not in approver.get("/ui/").text
    assert (
        approver.post(
            "/ui/users", data={"csrf_token": approver_token, "name": "x", "role": "admin"}
        ).status_code
        == 403
    )
    token = sign_in(console, "root")
    response = console.post(
        "/ui/users",
        data={
            "csrf_token": token,
            "name": "sam",
            "role": "approver",
            "groups": "security",
            "password": PASSWORD,
        },
    )
    assert response.status_code == 200
    assert core.identity.user_principal("sam").groups == ("security",)
    fresh = new_client()
    sign_in(fresh, "sam")
    weak = console.post(
        "/ui/users",
        data={"csrf_token": token, "name": "weak", "role": "approver", "password": "short"},
    )
    assert weak.status_code == 400 and "password is too short" in weak.text


def test_the_audit_log_is_searchable_and_shows_verification(
    console: TestClient, core: Jitgate, person, agent, clock: FakeClock
) -> None:
    person("ann")
    first = request_grant(core, agent, READ)
    clock.advance(3600)
    second = request_grant(core, agent)
    sign_in(console, "ann")
    page = console.get("/ui/audit").text
    assert "Chain intact." in page
    by_grant = console.get(f"/ui/audit?grant={second.id}").text
    assert second.id in by_grant and f">{first.id}<" not in by_grant
    by_type = console.get("/ui/audit?type=grant.pending").text
    assert by_type.count("<code>grant.pending</code>") == 1
    prefix = console.get(f"/ui/audit?type=grant.*&grant={first.id}").text
    assert "grant.requested" in prefix and "grant.activated" in prefix
    early = console.get("/ui/audit?until=2026-11-28T12:30:00&type=grant.requested").text
    assert first.id in early and second.id not in early
    late = console.get("/ui/audit?since=2026-11-28T12:30:00&type=grant.requested").text
    assert second.id in late and first.id not in late
    assert console.get("/ui/audit?agent=bot").text.count("<tr class=") >= 6
    assert console.get("/ui/audit?since=yesterday").status_code == 400
    # Tamper with an event: the page says so (after a fresh verification).
    with core.db.write() as connection:
        connection.execute(
            text("UPDATE audit_events SET body = replace(body, 'fix a typo', 'fix a tpyo')")
        )
    broken = console.get("/ui/audit?verify=1").text
    assert "Chain BROKEN at event" in broken


POLICY_WITH_FINDINGS = """
@id("wide-open-writes")
@approval("auto")
permit (principal, action, resource)
when { context.access_level == "Write" };
"""


def test_the_policy_page_lints_and_explains(
    home: Path, database_url: str, clock: FakeClock
) -> None:
    policy = home / "policy.cedar"
    policy.write_text(policy.read_text() + POLICY_WITH_FINDINGS)
    core = build_core(home, database_url, clock)
    try:
        from jitgate.api.app import create_control_app

        core.identity.create_user("ann", "approver", password=PASSWORD)
        core.identity.create_agent("bot")
        client = TestClient(create_control_app(core), base_url="http://testserver")
        token = sign_in(client, "ann")
        page = client.get("/ui/policy").text
        assert "scope-without-time" in page
        assert "wide-open-writes" in page
        line = policy.read_text().splitlines().index('@id("wide-open-writes")') + 1
        assert f'<a href="#L{line}">{line}</a>' in page
        assert 'id="policy-writes-need-approval"' in page
        explained = client.post(
            "/ui/policy/explain",
            data={
                "csrf_token": token,
                "agent": "bot",
                "actions": "s3:GetObject\ns3:PutObject",
                "resources": "arn:aws:s3:::reports/2026/q3.csv",
                "duration": "10m",
            },
        )
        assert explained.status_code == 200
        assert "auto-approve-low-risk-reads" in explained.text
        body = explained.text.split('id="explain"')[1]
        assert "s3:PutObject" in body and "maximum" in body
        bad = client.post(
            "/ui/policy/explain",
            data={
                "csrf_token": token,
                "agent": "bot",
                "actions": "s3:*",
                "resources": "arn:aws:s3:::x/y",
            },
        )
        assert bad.status_code == 400 and "wildcard" in bad.text
    finally:
        core.close()


def test_one_call_requests_say_so(console: TestClient, core: Jitgate, person, agent) -> None:
    person("ann")
    grant, _ = core.grants.request(
        agent,
        actions=["s3:DeleteObject"],
        resources=["arn:aws:s3:::reports/2026/old.csv"],
        reason="remove the stale export",
        one_call=True,
        operation="DeleteObject",
    )
    sign_in(console, "ann")
    html = card(console.get("/ui/").text, grant.id)
    assert "for one exact call (<code>DeleteObject</code>)" in html
    assert "Approve this one call" in html
    assert "permits this call once" in html


@pytest.mark.parametrize(
    "path", ["/ui/", "/ui/grants", "/ui/agents", "/ui/audit", "/ui/policy", "/ui/users"]
)
def test_pages_need_a_session(console: TestClient, path: str) -> None:
    response = console.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login?next=")


def test_static_assets_and_no_build_step(console: TestClient) -> None:
    css = console.get("/ui/static/console.css")
    js = console.get("/ui/static/console.js")
    assert css.status_code == js.status_code == 200
    assert "data-poll" in js.text or "poll" in js.text
    page = console.get("/ui/login").text
    assert csrf_of(page)
