"""The grant lifecycle on a real database: decisions, approval, expiry, lapse, revocation."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text

from conftest import BUCKET_ARN, OBJECT_ARN, build_core
from jitgate.approvals.rules import may_decide
from jitgate.clock import FakeClock, isoformat
from jitgate.core import Jitgate
from jitgate.errors import Conflict, Forbidden, InvalidRequest, NotFound, ScopeError, Unauthorized
from jitgate.grants.service import Grant
from jitgate.identity.service import LOCAL_ADMIN, Principal
from jitgate.store.schema import grants as grants_table

WRITE = (["s3:PutObject"], [OBJECT_ARN])  # needs one approval under the default policy


def types(core: Jitgate, grant_id: str) -> list[str]:
    return [e.type for e in core.audit.events(grant_id=grant_id, limit=1000)]


def all_types(core: Jitgate) -> list[str]:
    return [e.type for e in core.audit.events(limit=10_000)]


def grant_count(core: Jitgate) -> int:
    with core.db.read() as connection:
        return int(connection.execute(select(func.count()).select_from(grants_table)).scalar_one())


@pytest.fixture
def agent(core: Jitgate, agent_token: Callable[..., str]) -> Principal:
    """The authenticated agent "agent-1"."""
    return core.identity.authenticate(agent_token("agent-1"))


@pytest.fixture
def approver(core: Jitgate, approver_token: Callable[..., str]) -> Principal:
    return core.identity.authenticate(approver_token("approver-1"))


def request(core: Jitgate, who: Principal, actions: list[str], resources: list[str], **kw: object):
    kw.setdefault("reason", "quarterly report")
    return core.grants.request(who, actions=actions, resources=resources, **kw)  # type: ignore[arg-type]


def pending(core: Jitgate, who: Principal) -> Grant:
    grant, credentials = request(core, who, *WRITE)
    assert grant.status == "pending" and credentials is None
    return grant


# --- the auto route ---------------------------------------------------------------------------


def test_auto_route_issues_aws_shaped_credentials(
    core: Jitgate, agent: Principal, clock: FakeClock
) -> None:
    grant, credentials = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    assert grant.status == "active"
    assert grant.route == "auto"
    assert grant.duration_seconds == 300  # the configured default
    assert grant.activated_at == clock.now()
    assert grant.expires_at == clock.now() + timedelta(seconds=300)
    assert grant.decision["policies"] == ["auto-approve-low-risk-reads"]
    assert credentials is not None
    shaped = credentials.as_dict()
    assert set(shaped) == {"AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
    assert re.fullmatch(r"ASIAJG[A-Z2-7]{14}", shaped["AccessKeyId"])
    assert len(shaped["SecretAccessKey"]) == 40
    assert shaped["SessionToken"].startswith(f"jitgate/{grant.id}/")
    assert shaped["Expiration"] == "2026-11-28T12:05:00.000Z"
    assert shaped["AccessKeyId"] == grant.access_key_id
    assert core.master_key.session_token_matches(
        shaped["SessionToken"], grant.access_key_id, grant.id
    )
    assert types(core, grant.id) == ["grant.requested", "grant.decided", "grant.activated"]


def test_each_grant_gets_its_own_credentials(core: Jitgate, agent: Principal) -> None:
    _, first = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    _, second = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    assert first and second
    assert first.access_key_id != second.access_key_id
    assert first.secret_access_key != second.secret_access_key


def test_admin_may_request_for_an_agent_but_gets_no_credentials(
    core: Jitgate, agent: Principal
) -> None:
    grant, credentials = request(core, LOCAL_ADMIN, ["s3:GetObject"], [OBJECT_ARN], agent="agent-1")
    assert (grant.agent, grant.status, credentials) == ("agent-1", "active", None)
    _, own = core.grants.get(agent, grant.id)
    assert own is not None  # the agent itself fetches them


def test_an_agent_cannot_request_for_another_agent(core: Jitgate, agent: Principal) -> None:
    with pytest.raises(Forbidden, match="an agent can request grants only for itself"):
        request(core, agent, ["s3:GetObject"], [OBJECT_ARN], agent="agent-2")
    assert grant_count(core) == 0


def test_denied_by_policy_is_recorded_as_a_denied_grant(core: Jitgate, agent: Principal) -> None:
    grant, credentials = request(core, agent, ["s3:GetObject"], [OBJECT_ARN], duration_seconds=3600)
    assert (grant.status, credentials, grant.access_key_id) == ("denied", None, None)
    assert grant.ended_by == "policy"
    assert "above the maximum of 900s (15m)" in grant.decision["reasons"][0]
    assert types(core, grant.id) == ["grant.requested", "grant.decided", "grant.denied"]


def test_invalid_request_is_refused_and_recorded_once(core: Jitgate, agent: Principal) -> None:
    before = all_types(core)
    with pytest.raises(ScopeError, match=r"action 's3:\*' is a wildcard"):
        request(core, agent, ["s3:*"], [OBJECT_ARN])
    assert grant_count(core) == 0
    assert all_types(core) == [*before, "grant.refused"]
    (event,) = core.audit.events(types=["grant.refused"])
    assert event.actor == "agent:agent-1"
    assert event.data["error"] == "invalid_scope"
    assert event.data["actions"] == ["s3:*"]


# --- approval -----------------------------------------------------------------------------------


def test_pending_then_approved_becomes_active(
    core: Jitgate, agent: Principal, approver: Principal, clock: FakeClock
) -> None:
    grant = pending(core, agent)
    assert grant.lapse_at == clock.now() + timedelta(seconds=900)
    assert grant.approvals_required == 1
    _, credentials = core.grants.get(agent, grant.id)
    assert credentials is None

    clock.advance(60)
    approved = core.grants.approve(approver, grant.id, "looks fine")
    assert approved.status == "active"
    # The clock starts at approval, not at the request.
    assert approved.expires_at == clock.now() + timedelta(seconds=300)
    assert approved.approvals == (
        {
            "approver": "user:approver-1",
            "decision": "approve",
            "comment": "looks fine",
            "at": isoformat(clock.now()),
        },
    )
    _, credentials = core.grants.get(agent, grant.id)
    assert credentials is not None
    assert types(core, grant.id) == [
        "grant.requested",
        "grant.decided",
        "grant.pending",
        "grant.approval",
        "grant.approved",
        "grant.activated",
    ]


def test_deny(core: Jitgate, agent: Principal, approver: Principal) -> None:
    grant = pending(core, agent)
    denied = core.grants.deny(approver, grant.id, "not today")
    assert (denied.status, denied.ended_by) == ("denied", "user:approver-1")
    assert core.grants.get(agent, grant.id)[1] is None
    assert types(core, grant.id)[-1] == "grant.denied"
    with pytest.raises(
        Conflict, match=f"grant {grant.id} is denied, not pending; nothing to approve"
    ):
        core.grants.approve(approver, grant.id)


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_agents_cannot_decide(core: Jitgate, agent: Principal, agent_token, verb: str) -> None:
    grant = pending(core, agent)
    other = core.identity.authenticate(agent_token("agent-2"))
    for who in (agent, other):
        with pytest.raises(Forbidden, match="agents cannot approve or deny grants"):
            getattr(core.grants, verb)(who, grant.id)
    assert core.grants.get(LOCAL_ADMIN, grant.id)[0].status == "pending"


def test_auditor_cannot_approve(core: Jitgate, agent: Principal, auditor_token) -> None:
    grant = pending(core, agent)
    auditor = core.identity.authenticate(auditor_token())
    with pytest.raises(Forbidden, match="role 'auditor' cannot approve or deny grants"):
        core.grants.approve(auditor, grant.id)


def test_owner_of_the_agent_cannot_approve_its_grants(core: Jitgate, approver: Principal) -> None:
    _, token = core.identity.create_agent("owned", owner="approver-1")
    owned = core.identity.authenticate(token)
    grant = pending(core, owned)
    with pytest.raises(Forbidden, match="'approver-1' owns agent 'owned'"):
        core.grants.approve(approver, grant.id)


@pytest.mark.parametrize("spelled", ["Approver-1", "approver-1 ", " approver-1", "APPROVER-1"])
def test_an_owner_spelled_differently_is_refused_not_stored(core: Jitgate, spelled: str) -> None:
    """An owner stored as typed ("Approver-1") never matched the user "approver-1", who could
    then approve their own agent's grants: an owner must be written as a user name is."""
    with pytest.raises(InvalidRequest, match="user name"):
        core.identity.create_agent("owned", owner=spelled)
    with pytest.raises(InvalidRequest, match="user name"):
        core.identity.create_agent("owned", owner=["approver-1"])  # type: ignore[arg-type]
    assert all(a.name != "owned" for a in core.identity.list_agents())  # nothing half-written


def test_an_owner_stored_before_names_were_checked_still_cannot_approve() -> None:
    """Defence in depth for rows written before owners were validated."""
    why = may_decide(
        actor="user:approver-1",
        role="approver",
        user_name="approver-1",
        user_groups=(),
        requested_by="agent:owned",
        agent="owned",
        agent_owner=" Approver-1 ",
        groups=(),
    )
    assert why is not None and "owns agent" in why


def test_an_approver_with_the_longest_name_can_approve(core: Jitgate, agent: Principal) -> None:
    """The approval row holds the actor ("user:" + up to 64 characters); on PostgreSQL a column
    64 wide refused every approval by a user whose name was 60 characters or more."""
    name = "a" * 64
    _, token = core.identity.create_user(name, "approver")
    grant = pending(core, agent)
    decided = core.grants.approve(core.identity.authenticate(token), grant.id)
    assert decided.status == "active"


def test_a_request_decided_while_its_agent_is_disabled_is_not_granted(
    core: Jitgate, agent_token, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race found by review: the disable commits while the request is being decided. The
    grant used to be inserted afterwards, missed by the disable, and revived by re-enabling."""
    agent = core.identity.authenticate(agent_token("agent-r"))
    decide = core.policy.decide

    def disable_then_decide(*args: object, **kwargs: object) -> object:
        core.identity.set_agent_disabled("agent-r", True, on_disable=core.grants.end_all_for_agent)
        return decide(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(core.policy, "decide", disable_then_decide)
    with pytest.raises(Forbidden, match="agent 'agent-r' is disabled"):
        request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    monkeypatch.setattr(core.policy, "decide", decide)
    core.identity.set_agent_disabled("agent-r", False)
    assert core.grants.list(LOCAL_ADMIN, agent="agent-r") == []  # nothing to revive


def test_approving_twice_is_a_conflict(
    core: Jitgate, agent: Principal, approver: Principal, approver_token
) -> None:
    grant = pending(core, agent)
    core.grants.approve(approver, grant.id)
    second = core.identity.authenticate(approver_token("approver-2"))
    for who in (approver, second):
        with pytest.raises(
            Conflict, match=f"grant {grant.id} is active, not pending; nothing to approve"
        ):
            core.grants.approve(who, grant.id)
    assert types(core, grant.id).count("grant.activated") == 1


def test_two_approvers_racing_produce_one_activation(
    core: Jitgate, agent: Principal, approver_token, database_url: str, home: Path, clock: FakeClock
) -> None:
    """Two approvers at once, through two services on one database: exactly one wins."""
    other_core = build_core(home, database_url, clock)
    try:
        for round_ in range(3):
            grant = pending(core, agent)
            approvers = [
                core.identity.authenticate(approver_token(f"racer-{round_}-{i}")) for i in range(2)
            ]
            barrier = threading.Barrier(2)
            outcomes: list[object] = []

            def approve(service: Jitgate, who: Principal, grant_id: str = grant.id) -> None:
                barrier.wait()
                try:
                    outcomes.append(service.grants.approve(who, grant_id).status)
                except Conflict as exc:
                    outcomes.append(exc)

            threads = [
                threading.Thread(target=approve, args=(service, who))
                for service, who in zip((core, other_core), approvers, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert outcomes.count("active") == 1, outcomes
            (conflict,) = [o for o in outcomes if isinstance(o, Conflict)]
            assert f"grant {grant.id} is active, not pending" in conflict.message
            assert types(core, grant.id).count("grant.activated") == 1
            assert types(core, grant.id).count("grant.approval") == 1
        assert core.audit.verify().ok
    finally:
        other_core.close()


def two_person_core(home: Path, database_url: str, clock: FakeClock) -> Jitgate:
    """A core whose policy wants two approvals for every request."""
    (home / "policy.cedar").write_text(
        """
@id("two-person-writes")
@approval("required")
@approvers("2")
permit (principal, action, resource);
""",
        encoding="utf-8",
    )
    return build_core(home, database_url, clock)


def test_two_approvals_needed_from_distinct_approvers(
    core: Jitgate, home: Path, database_url: str, clock: FakeClock, approver_token
) -> None:
    two = two_person_core(home, database_url, clock)
    try:
        _, token = two.identity.create_agent("agent-9")
        agent = two.identity.authenticate(token)
        grant, _ = request(two, agent, *WRITE)
        assert (grant.status, grant.approvals_required) == ("pending", 2)
        first = two.identity.authenticate(approver_token("first"))
        second = two.identity.authenticate(approver_token("second"))
        assert two.grants.approve(first, grant.id).status == "pending"
        with pytest.raises(Conflict, match=f"user:first has already decided on grant {grant.id}"):
            two.grants.approve(first, grant.id)
        assert two.grants.approve(second, grant.id).status == "active"
        assert types(two, grant.id).count("grant.approval") == 2
        assert types(two, grant.id).count("grant.approved") == 1
    finally:
        two.close()


def test_an_approval_stops_counting_once_its_approver_is_disabled(
    core: Jitgate, home: Path, database_url: str, clock: FakeClock, approver_token
) -> None:
    """Two-person approval means two people who may approve now: an approver disabled after
    voting (left the company, account compromised) no longer makes up half of the quorum."""
    two = two_person_core(home, database_url, clock)
    try:
        _, token = two.identity.create_agent("agent-10")
        agent = two.identity.authenticate(token)
        grant, _ = request(two, agent, *WRITE)
        first = two.identity.authenticate(approver_token("early"))
        second = two.identity.authenticate(approver_token("later"))
        third = two.identity.authenticate(approver_token("last"))
        assert two.grants.approve(first, grant.id).status == "pending"
        two.identity.set_user_disabled("early", True)
        assert two.grants.approve(second, grant.id).status == "pending"  # one standing vote
        assert two.grants.approve(third, grant.id).status == "active"
        (approved,) = two.audit.events(grant_id=grant.id, types=["grant.approved"])
        assert approved.data["approvals"] == 2
    finally:
        two.close()


# --- time: lapse and expiry -------------------------------------------------------------------


def test_pending_grant_lapses_after_15_minutes(
    core: Jitgate, agent: Principal, approver: Principal, clock: FakeClock
) -> None:
    grant = pending(core, agent)
    clock.advance(899)
    assert core.grants.sweep() == (0, 0)
    clock.advance(1)
    # At the lapse instant, before any sweep, nobody can approve it any more.
    with pytest.raises(Conflict, match=f"grant {grant.id} lapsed at 2026-11-28T12:15:00.000Z"):
        core.grants.approve(approver, grant.id)
    assert core.grants.sweep() == (0, 1)
    assert core.grants.sweep() == (0, 0)
    lapsed, _ = core.grants.get(agent, grant.id)
    assert (lapsed.status, lapsed.ended_by) == ("lapsed", "jitgate")
    assert types(core, grant.id)[-1] == "grant.lapsed"
    assert types(core, grant.id).count("grant.lapsed") == 1


def test_lapse_time_is_configurable(home: Path, database_url: str, clock: FakeClock) -> None:
    quick = build_core(home, database_url, clock, lapse_seconds=60)
    try:
        _, token = quick.identity.create_agent("agent-q")
        grant, _ = request(quick, quick.identity.authenticate(token), *WRITE)
        assert grant.lapse_at == clock.now() + timedelta(seconds=60)
        clock.advance(60)
        assert quick.grants.sweep() == (0, 1)
    finally:
        quick.close()


def test_expiry(core: Jitgate, agent: Principal, clock: FakeClock) -> None:
    grant, _ = request(core, agent, ["s3:GetObject"], [OBJECT_ARN], duration_seconds=60)
    clock.advance(59.999)
    assert core.grants.get(agent, grant.id)[1] is not None
    assert core.grants.sweep() == (0, 0)
    clock.advance(0.001)  # the expiry instant itself
    live, credentials = core.grants.get(agent, grant.id)
    assert credentials is None
    assert not live.is_live(clock.now())
    assert core.grants.sweep() == (1, 0)
    expired, credentials = core.grants.get(agent, grant.id)
    assert (expired.status, credentials, expired.ended_at) == ("expired", None, grant.expires_at)
    (event,) = core.audit.events(grant_id=grant.id, types=["grant.expired"])
    assert (event.actor, event.agent, event.data) == (
        "jitgate",
        "agent-1",
        {"at": "2026-11-28T12:01:00.000Z"},
    )
    assert core.grants.sweep() == (0, 0)
    with pytest.raises(Conflict, match="only active, pending or used grants can be revoked"):
        core.grants.revoke(agent, grant.id)


def test_two_services_sweeping_one_database_expire_each_grant_once(
    core: Jitgate, agent: Principal, home: Path, database_url: str, clock: FakeClock
) -> None:
    other = build_core(home, database_url, clock)
    try:
        ids = [
            request(core, agent, ["s3:GetObject"], [OBJECT_ARN], duration_seconds=60 + i)[0].id
            for i in range(40)
        ]
        clock.advance(200)
        barrier = threading.Barrier(2)
        results: list[object] = []

        def sweep(service: Jitgate) -> None:
            barrier.wait()
            try:
                results.append(service.grants.sweep(limit=1000))
            except Exception as exc:
                results.append(exc)

        threads = [threading.Thread(target=sweep, args=(s,)) for s in (core, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(isinstance(r, tuple) for r in results), results
        assert sum(r[0] for r in results) == len(ids)  # type: ignore[index]
        expired = core.audit.events(types=["grant.expired"], limit=1000)
        assert sorted(e.grant_id for e in expired) == sorted(ids)
        assert core.audit.verify().ok
        assert {g.status for g in core.grants.list(LOCAL_ADMIN)} == {"expired"}
    finally:
        other.close()


# --- revocation and visibility ------------------------------------------------------------------


def test_owning_agent_revokes(core: Jitgate, agent: Principal) -> None:
    grant, _ = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    revoked = core.grants.revoke(agent, grant.id, "done early")
    assert (revoked.status, revoked.ended_by) == ("revoked", "agent:agent-1")
    assert core.grants.get(agent, grant.id)[1] is None
    (event,) = core.audit.events(grant_id=grant.id, types=["grant.revoked"])
    assert event.data == {"reason": "done early"}
    with pytest.raises(Conflict, match=f"grant {grant.id} is revoked"):
        core.grants.revoke(agent, grant.id)


def test_admin_revokes_active_and_pending(core: Jitgate, agent: Principal, admin_token) -> None:
    admin = core.identity.authenticate(admin_token())
    active, _ = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    waiting = pending(core, agent)
    assert core.grants.revoke(admin, active.id).status == "revoked"
    assert core.grants.revoke(admin, waiting.id).status == "revoked"
    assert core.grants.revoke(LOCAL_ADMIN, request(core, agent, *WRITE)[0].id).status == "revoked"


def test_other_agents_and_approvers_cannot_revoke(
    core: Jitgate, agent: Principal, approver: Principal, agent_token
) -> None:
    grant, _ = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    other = core.identity.authenticate(agent_token("agent-2"))
    with pytest.raises(NotFound, match=f"no grant '{grant.id}'"):
        core.grants.revoke(other, grant.id)
    with pytest.raises(Forbidden, match="only the owning agent or an admin can revoke a grant"):
        core.grants.revoke(approver, grant.id)
    assert core.grants.get(agent, grant.id)[0].status == "active"


def test_an_agent_cannot_see_another_agents_grants(
    core: Jitgate, agent: Principal, agent_token
) -> None:
    grant, _ = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    other = core.identity.authenticate(agent_token("agent-2"))
    mine, _ = request(core, other, ["s3:ListBucket"], [BUCKET_ARN])
    with pytest.raises(NotFound, match=f"no grant '{grant.id}'"):
        core.grants.get(other, grant.id)
    assert [g.id for g in core.grants.list(other)] == [mine.id]
    with pytest.raises(Forbidden, match="an agent can list only its own grants"):
        core.grants.list(other, agent="agent-1")
    assert {g.id for g in core.grants.list(LOCAL_ADMIN)} == {grant.id, mine.id}
    with pytest.raises(NotFound, match="no grant 'gr-missing'"):
        core.grants.get(LOCAL_ADMIN, "gr-missing")


def test_list_filters(core: Jitgate, agent: Principal, agent_token) -> None:
    active, _ = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    waiting = pending(core, agent)
    other = core.identity.authenticate(agent_token("agent-2"))
    theirs, _ = request(core, other, ["s3:GetObject"], [OBJECT_ARN])
    assert {g.id for g in core.grants.list(LOCAL_ADMIN, status="active")} == {active.id, theirs.id}
    assert [g.id for g in core.grants.list(LOCAL_ADMIN, status="pending")] == [waiting.id]
    assert {g.id for g in core.grants.list(LOCAL_ADMIN, agent="agent-2")} == {theirs.id}
    assert [g.id for g in core.grants.list(LOCAL_ADMIN, agent="agent-1", status="pending")] == [
        waiting.id
    ]
    with pytest.raises(InvalidRequest, match="status 'bogus' is invalid"):
        core.grants.list(LOCAL_ADMIN, status="bogus")


# --- agents --------------------------------------------------------------------------------------


def test_disabling_an_agent_revokes_its_grants_and_its_token(
    core: Jitgate, agent_token, clock: FakeClock
) -> None:
    token = agent_token("agent-d")
    agent = core.identity.authenticate(token)
    active, _ = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    waiting = pending(core, agent)
    record = core.identity.set_agent_disabled(
        "agent-d", True, on_disable=core.grants.end_all_for_agent
    )
    assert record.disabled
    with pytest.raises(Unauthorized, match="agent 'agent-d' is disabled"):
        core.identity.authenticate(token)
    for grant_id in (active.id, waiting.id):
        grant, credentials = core.grants.get(agent, grant_id)
        assert (grant.status, grant.ended_by, credentials) == ("revoked", "local:cli", None)
    assert all_types(core)[-3:] == ["agent.disabled", "grant.revoked", "grant.revoked"]
    with pytest.raises(Forbidden, match="agent 'agent-d' is disabled"):
        request(core, LOCAL_ADMIN, ["s3:GetObject"], [OBJECT_ARN], agent="agent-d")

    assert not core.identity.set_agent_disabled("agent-d", False).disabled
    assert core.identity.authenticate(token) == agent
    assert core.grants.get(agent, active.id)[0].status == "revoked"  # stays revoked
    assert request(core, agent, ["s3:GetObject"], [OBJECT_ARN])[0].status == "active"
    assert all_types(core).count("agent.enabled") == 1


def test_names_and_duplicates(core: Jitgate) -> None:
    core.identity.create_agent("agent-1")
    with pytest.raises(Conflict, match="agent 'agent-1' already exists"):
        core.identity.create_agent("agent-1")
    with pytest.raises(Conflict, match="'agent-1' is already an agent name"):
        core.identity.create_user("agent-1", "admin")
    with pytest.raises(InvalidRequest, match="agent name 'Bad Name' is invalid"):
        core.identity.create_agent("Bad Name")
    with pytest.raises(
        InvalidRequest, match="role 'root' is invalid: use one of admin, approver, auditor"
    ):
        core.identity.create_user("someone", "root")


@pytest.mark.parametrize("token", ["", "nonsense", "jga_AAAAAAAAAAAAAAAA_" + "x" * 43])
def test_bad_tokens_are_unauthorized(core: Jitgate, token: str) -> None:
    with pytest.raises(Unauthorized, match="invalid bearer token"):
        core.identity.authenticate(token)


def test_a_wrong_secret_is_unauthorized(core: Jitgate, agent_token) -> None:
    token = agent_token("agent-1")
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(Unauthorized, match="invalid bearer token"):
        core.identity.authenticate(forged)


# --- secrets at rest ------------------------------------------------------------------------------


def test_no_secret_is_stored(
    core: Jitgate, database_url: str, agent_token, admin_token, approver_token
) -> None:
    agent_secret = agent_token("agent-s")
    user_secret = admin_token("admin-s")
    approver_secret = approver_token("approver-s")
    agent = core.identity.authenticate(agent_secret)
    _, credentials = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    assert credentials is not None
    waiting = pending(core, agent)
    core.grants.approve(core.identity.authenticate(approver_secret), waiting.id)
    _, approved_credentials = core.grants.get(agent, waiting.id)
    assert approved_credentials is not None
    secrets = {
        "agent token": agent_secret,
        "agent token secret": agent_secret.split("_", 2)[2],
        "admin token": user_secret,
        "admin token secret": user_secret.split("_", 2)[2],
        "approver token secret": approver_secret.split("_", 2)[2],
        "SecretAccessKey": credentials.secret_access_key,
        "SessionToken": credentials.session_token,
        "session MAC": credentials.session_token.rsplit("/", 1)[1],
        "approved SecretAccessKey": approved_credentials.secret_access_key,
    }
    with core.db.read() as connection:
        names = [
            n for n in ("agents", "users", "grants", "approvals", "audit_events", "audit_head")
        ]
        dump = "\n".join(
            repr(row) for name in names for row in connection.execute(text(f"SELECT * FROM {name}"))
        )
    assert "agent-s" in dump  # the dump does contain the data
    if database_url.startswith("sqlite"):
        core.close()  # checkpoints the WAL into the file
        path = Path(database_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        dump += raw.decode("latin-1")
    found = [name for name, value in secrets.items() if value in dump]
    assert found == []


def race_on_one_grant(
    holder: Jitgate,
    holder_fn: Callable[[], object],
    racer: Jitgate,
    racer_fn: Callable[[], object],
    grant_id: str,
    database_url: str,
) -> dict[str, object]:
    """Run ``holder_fn`` until it is about to UPDATE grant ``grant_id``; then run ``racer_fn``
    until it holds that grant's row or waits for it; then let both finish. Returns what each
    returned or raised. PostgreSQL only: it looks at pg_stat_activity."""
    import psycopg

    from conftest import libpq_url, wait_for

    at_grant, go, racer_holds = threading.Event(), threading.Event(), threading.Event()
    racer_pid: list[int] = []

    @event.listens_for(holder.db.engine, "before_cursor_execute")
    def hold(conn, cursor, statement, parameters, context, executemany):
        touches = statement.lstrip().upper().startswith("UPDATE GRANTS")
        if touches and grant_id in str(parameters) and not at_grant.is_set():
            at_grant.set()
            go.wait(10)

    @event.listens_for(racer.db.engine, "before_cursor_execute")
    def note_pid(conn, cursor, statement, parameters, context, executemany):
        if "FOR UPDATE" in statement and grant_id in str(parameters):
            racer_pid.append(conn.connection.dbapi_connection.info.backend_pid)

    @event.listens_for(racer.db.engine, "after_cursor_execute")
    def note_held(conn, cursor, statement, parameters, context, executemany):
        if "FOR UPDATE" in statement and grant_id in str(parameters):
            racer_holds.set()

    outcomes: dict[str, object] = {}

    def run(name: str, fn: Callable[[], object]) -> None:
        try:
            outcomes[name] = fn()
        except Exception as exc:
            outcomes[name] = exc

    def racer_holds_or_waits() -> bool:
        if racer_holds.is_set():
            return True
        if not racer_pid:
            return False
        with psycopg.connect(libpq_url(database_url.split("?")[0])) as connection:
            row = connection.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (racer_pid[0],)
            ).fetchone()
        return row is not None and row[0] == "Lock"

    first = threading.Thread(target=run, args=("holder", holder_fn))
    second = threading.Thread(target=run, args=("racer", racer_fn))
    try:
        first.start()
        assert at_grant.wait(10), "the holder never reached the grant"
        second.start()
        assert wait_for(racer_holds_or_waits, 10), "the racer never reached the grant"
    finally:
        go.set()
        first.join(15)
        second.join(15)
    return outcomes


def test_a_sweep_and_a_revoke_at_once_do_not_deadlock(
    core: Jitgate, agent: Principal, home: Path, database_url: str, clock: FakeClock
) -> None:
    """A sweeper in another process expires two grants while the agent revokes the second.
    Lock order must not let the two wait for each other (PostgreSQL would abort one with a
    deadlock error, and the revoke would fail)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one write transaction at a time; nothing can deadlock")
    request(core, agent, ["s3:GetObject"], [OBJECT_ARN], duration_seconds=60)
    second, _ = request(core, agent, ["s3:GetObject"], [OBJECT_ARN], duration_seconds=61)
    clock.advance(120)
    sweeper = build_core(home, database_url, clock)
    try:
        outcomes = race_on_one_grant(
            sweeper,
            sweeper.grants.sweep,
            core,
            lambda: core.grants.revoke(agent, second.id),
            second.id,
            database_url,
        )
    finally:
        sweeper.close()
    assert not isinstance(outcomes["holder"], Exception), outcomes
    assert isinstance(outcomes["racer"], Grant | Conflict), outcomes
    ended = core.audit.events(grant_id=second.id, types=["grant.expired", "grant.revoked"])
    assert len(ended) == 1
    assert core.audit.verify().ok


def test_disabling_an_agent_while_it_revokes_does_not_deadlock(
    core: Jitgate, agent: Principal, home: Path, database_url: str, clock: FakeClock
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one write transaction at a time; nothing can deadlock")
    grant, _ = request(core, agent, ["s3:GetObject"], [OBJECT_ARN])
    admin_side = build_core(home, database_url, clock)
    try:
        outcomes = race_on_one_grant(
            admin_side,
            lambda: admin_side.identity.set_agent_disabled(
                "agent-1", True, on_disable=admin_side.grants.end_all_for_agent
            ),
            core,
            lambda: core.grants.revoke(agent, grant.id),
            grant.id,
            database_url,
        )
    finally:
        admin_side.close()
    assert not isinstance(outcomes["holder"], Exception), outcomes
    assert isinstance(outcomes["racer"], Grant | Conflict), outcomes
    assert len(core.audit.events(grant_id=grant.id, types=["grant.revoked"])) == 1
    assert core.audit.verify().ok
