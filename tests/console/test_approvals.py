"""Approval rules on a real database: distinct approvers, approver groups, no self-approval,
approvals bound to exactly what was shown, racing approvers, one-exact-call grants."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import update

from conftest import build_core
from jitgate.clock import FakeClock
from jitgate.core import Jitgate
from jitgate.errors import Conflict, Forbidden, InvalidRequest
from jitgate.grants.service import consume_one_call
from jitgate.identity.service import LOCAL_ADMIN, Principal
from jitgate.store.driver import driver_transaction
from jitgate.store.schema import grants as grants_table

from .conftest import OBJECT_ARN, READ, WRITE, request_grant

TWO_FROM_SECURITY = """
@id("iam-needs-two-from-security")
@approval("required")
@approvers("2")
@approver_group("security")
@max_duration("15m")
permit (principal, action, resource)
when { resource.service == "iam" };
"""
ROLE = "arn:aws:iam::123456789012:role/deploy"


def types(core: Jitgate, grant_id: str) -> list[str]:
    return [e.type for e in core.audit.events(grant_id=grant_id, limit=1000)]


@pytest.fixture
def strict(home: Path, database_url: str, clock: FakeClock) -> Jitgate:
    """A jitgate whose policy sends IAM changes to two approvers from group security."""
    policy = home / "policy.cedar"
    policy.write_text(policy.read_text() + TWO_FROM_SECURITY)
    built = build_core(home, database_url, clock)
    yield built
    built.close()


def test_two_distinct_approvers_from_the_named_group(strict: Jitgate, person) -> None:
    _, token = strict.identity.create_agent("deployer")
    agent = strict.identity.authenticate(token)
    grant, _ = strict.grants.request(
        agent, actions=["iam:AttachRolePolicy"], resources=[ROLE], reason="attach read-only"
    )
    assert grant.status == "pending"
    assert grant.approvals_required == 2
    assert grant.decision["approver_groups"] == ["security"]
    assert grant.risk == "critical"

    def make(name: str, groups: tuple[str, ...]) -> Principal:
        strict.identity.create_user(name, "approver", groups=list(groups))
        principal = strict.identity.user_principal(name)
        assert principal is not None
        return principal

    ann, bea, cal = (
        make("ann", ("security",)),
        make("bea", ("security", "ops")),
        make("cal", ("ops",)),
    )
    with pytest.raises(Forbidden, match="needs an approver from group security; 'cal' is in ops"):
        strict.grants.approve(cal, grant.id)
    assert strict.grants.approve(ann, grant.id, "ok").status == "pending"
    with pytest.raises(Conflict, match="user:ann has already decided"):
        strict.grants.approve(ann, grant.id)
    approved = strict.grants.approve(bea, grant.id, "ok too")
    assert approved.status == "active"
    assert types(strict, grant.id).count("grant.approval") == 2
    [event] = strict.audit.events(grant_id=grant.id, types=["grant.approved"])
    assert event.data == {"approvals": 2, "fingerprint": grant.fingerprint}


def test_any_denial_ends_the_request(strict: Jitgate) -> None:
    _, token = strict.identity.create_agent("deployer")
    agent = strict.identity.authenticate(token)
    grant, _ = strict.grants.request(
        agent, actions=["iam:AttachRolePolicy"], resources=[ROLE], reason="attach"
    )
    for name in ("ann", "bea"):
        strict.identity.create_user(name, "approver", groups=["security"])
    ann, bea = strict.identity.user_principal("ann"), strict.identity.user_principal("bea")
    strict.grants.approve(ann, grant.id)
    denied = strict.grants.deny(bea, grant.id, "not during the freeze")
    assert (denied.status, denied.ended_by) == ("denied", "user:bea")
    with pytest.raises(Conflict, match="is denied, not pending"):
        strict.grants.approve(ann, grant.id)


def test_nobody_approves_a_request_they_made(core: Jitgate, agent: Principal, person) -> None:
    admin = person("root", "admin")
    grant, _ = core.grants.request(
        admin, agent="bot", actions=WRITE[0], resources=WRITE[1], reason="on behalf of bot"
    )
    assert (grant.status, grant.requested_by) == ("pending", "user:root")
    with pytest.raises(Forbidden, match="'root' made this request and cannot decide it"):
        core.grants.approve(admin, grant.id)
    assert core.grants.approve(person("other"), grant.id).status == "active"


def test_nobody_approves_for_an_agent_they_own(core: Jitgate, person) -> None:
    owner = person("olga")
    _, token = core.identity.create_agent("olgas-bot", owner="olga")
    grant = request_grant(core, core.identity.authenticate(token))
    with pytest.raises(
        Forbidden, match="'olga' owns agent 'olgas-bot' and cannot decide its grants"
    ):
        core.grants.approve(owner, grant.id)
    with pytest.raises(Forbidden, match="owns agent"):
        core.grants.deny(owner, grant.id)


def test_an_approval_is_bound_to_exactly_what_was_shown(
    core: Jitgate, agent: Principal, person
) -> None:
    grant = request_grant(core, agent)
    shown = grant.fingerprint
    # Something changes the request after the approver looked at it (here: its duration).
    with core.db.write() as connection:
        connection.execute(
            update(grants_table).where(grants_table.c.id == grant.id).values(duration_seconds=3600)
        )
    with pytest.raises(Conflict, match="is not the request you were shown"):
        core.grants.approve(person("ann"), grant.id, fingerprint=shown)
    assert core.grants.get(LOCAL_ADMIN, grant.id)[0].status == "pending"
    assert "grant.approval" not in types(core, grant.id)


def test_an_approval_given_before_a_change_stops_counting(
    home: Path, database_url: str, clock: FakeClock, person
) -> None:
    policy = home / "policy.cedar"
    policy.write_text(
        policy.read_text().replace(
            '@id("writes-need-approval")', '@id("writes-need-approval")\n@approvers("2")'
        )
    )
    core = build_core(home, database_url, clock)
    try:
        _, token = core.identity.create_agent("bot")
        grant = request_grant(core, core.identity.authenticate(token))
        core.identity.create_user("ann", "approver")
        core.identity.create_user("bea", "approver")
        ann, bea = core.identity.user_principal("ann"), core.identity.user_principal("bea")
        core.grants.approve(ann, grant.id, fingerprint=grant.fingerprint)
        with core.db.write() as connection:
            connection.execute(
                update(grants_table)
                .where(grants_table.c.id == grant.id)
                .values(resources=["arn:aws:s3:::reports/2026/other.csv"])
            )
        changed = core.grants.get(LOCAL_ADMIN, grant.id)[0]
        # bea approves the changed request as she sees it; ann's approval was of something else.
        after = core.grants.approve(bea, grant.id, fingerprint=changed.fingerprint)
        assert after.status == "pending"
        with core.db.read() as connection:
            assert core.grants.approval_state(connection, after).approvals == 1
    finally:
        core.close()


def test_approving_a_lapsed_request(
    core: Jitgate, agent: Principal, person, clock: FakeClock
) -> None:
    grant = request_grant(core, agent)
    clock.advance(core.settings.lapse_seconds)
    with pytest.raises(Conflict, match="lapsed at"):
        core.grants.approve(person("ann"), grant.id, fingerprint=grant.fingerprint)
    core.grants.sweep()
    with pytest.raises(Conflict, match="is lapsed, not pending"):
        core.grants.approve(person("bea"), grant.id, fingerprint=grant.fingerprint)


def test_racing_approvers_never_both_count_as_the_last(
    home: Path, database_url: str, clock: FakeClock
) -> None:
    """@approvers("2"), three approvers at once through three services on one database: the
    grant activates exactly once, with exactly two counted approvals."""
    policy = home / "policy.cedar"
    policy.write_text(
        policy.read_text().replace(
            '@id("writes-need-approval")', '@id("writes-need-approval")\n@approvers("2")'
        )
    )
    cores = [build_core(home, database_url, clock) for _ in range(3)]
    try:
        main = cores[0]
        _, token = main.identity.create_agent("bot")
        agent = main.identity.authenticate(token)
        for round_ in range(3):
            grant = request_grant(main, agent)
            people = []
            for i in range(3):
                main.identity.create_user(f"r{round_}-{i}", "approver")
                people.append(main.identity.user_principal(f"r{round_}-{i}"))
            barrier = threading.Barrier(3)
            outcomes: list[str] = []

            def approve(service: Jitgate, who: Principal, grant_id: str = grant.id) -> None:
                barrier.wait()
                try:
                    outcomes.append(service.grants.approve(who, grant_id).status)
                except Conflict:
                    outcomes.append("conflict")
                except Exception as exc:  # shown in the assertion below
                    outcomes.append(f"error: {exc!r}")

            threads = [
                threading.Thread(target=approve, args=(service, who))
                for service, who in zip(cores, people, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(outcomes) == ["active", "conflict", "pending"], outcomes
            assert types(main, grant.id).count("grant.approved") == 1
            assert types(main, grant.id).count("grant.activated") == 1
            assert types(main, grant.id).count("grant.approval") == 2
            assert main.audit.verify().ok
    finally:
        for built in cores:
            built.close()


def test_low_risk_reads_never_reach_a_person(core: Jitgate, agent: Principal) -> None:
    grant = request_grant(core, agent, READ)
    assert (grant.status, grant.route, grant.risk) == ("active", "auto", "low")
    assert core.grants.list(LOCAL_ADMIN, status="pending") == []


# --- one exact call -----------------------------------------------------------------------------
def test_one_call_request_shape(core: Jitgate, agent: Principal) -> None:
    grant, _ = core.grants.request(
        agent,
        actions=["s3:DeleteObject"],
        resources=[OBJECT_ARN],
        reason="remove the stale export",
        one_call=True,
        operation="DeleteObject",
    )
    assert grant.status == "pending"
    assert grant.one_call == {"operation": "DeleteObject"}
    assert grant.as_dict()["one_call"] == {"operation": "DeleteObject"}
    [requested] = core.audit.events(grant_id=grant.id, types=["grant.requested"])
    assert requested.data["one_call"] == {"operation": "DeleteObject"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"one_call": True, "operation": "Delete Object"},
            "operation must be an API operation name",
        ),
        ({"operation": "DeleteObject"}, "operation is only meaningful with one_call: true"),
        ({"one_call": "yes"}, "one_call must be true or false"),
    ],
)
def test_one_call_refusals(core: Jitgate, agent: Principal, kwargs, message) -> None:
    with pytest.raises(InvalidRequest, match=message):
        core.grants.request(
            agent, actions=["s3:DeleteObject"], resources=[OBJECT_ARN], reason="x", **kwargs
        )
    [refused] = core.audit.events(types=["grant.refused"])
    assert message in refused.data["message"]


def test_one_call_is_consumed_exactly_once(core: Jitgate, agent: Principal, person) -> None:
    grant, _ = core.grants.request(
        agent, actions=WRITE[0], resources=WRITE[1], reason="one put", one_call=True
    )
    core.grants.approve(person("ann"), grant.id, fingerprint=grant.fingerprint)
    now = core.clock.now()
    with driver_transaction(core.db) as txn:
        assert consume_one_call(txn, grant.id, "PutObject", now) == "consumed"
        assert consume_one_call(txn, grant.id, "PutObject", now) == (
            f"grant {grant.id} permitted one call and it has been made"
        )
    used = core.grants.get(LOCAL_ADMIN, grant.id)[0]
    assert (used.status, used.ended_by) == ("used", "jitgate")
    # A time-window grant is not a one-call grant: nothing to consume.
    other = request_grant(core, agent, READ)
    with driver_transaction(core.db) as txn:
        assert consume_one_call(txn, other.id, "GetObject", now) is None


def test_one_call_names_its_operation(core: Jitgate, agent: Principal, person) -> None:
    grant, _ = core.grants.request(
        agent,
        actions=WRITE[0],
        resources=WRITE[1],
        reason="one put",
        one_call=True,
        operation="PutObject",
    )
    core.grants.approve(person("ann"), grant.id)
    with driver_transaction(core.db) as txn:
        assert consume_one_call(txn, grant.id, "CreateMultipartUpload", core.clock.now()) == (
            f"grant {grant.id} permits one PutObject call, not CreateMultipartUpload"
        )
    assert core.grants.get(LOCAL_ADMIN, grant.id)[0].status == "active"


def test_one_call_grant_expires_unused(
    core: Jitgate, agent: Principal, person, clock: FakeClock
) -> None:
    grant, _ = core.grants.request(
        agent,
        actions=WRITE[0],
        resources=WRITE[1],
        reason="one put",
        one_call=True,
        duration_seconds=60,
    )
    core.grants.approve(person("ann"), grant.id)
    clock.advance(61)
    assert core.grants.sweep() == (1, 0)
    assert core.grants.get(LOCAL_ADMIN, grant.id)[0].status == "expired"


def test_grant_dict_carries_what_approvers_need(core: Jitgate, agent: Principal) -> None:
    body = request_grant(core, agent).as_dict()
    assert body["risk"] == "high"
    assert body["requested_by"] == "agent:bot"
    assert body["one_call"] is None
    assert len(body["fingerprint"]) == 64
