"""Group commit: durable before the waiter resumes, guards refuse inside the transaction."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, text

from jitgate.audit.batcher import AuditBatcher
from jitgate.audit.log import NewEvent
from jitgate.core import Jitgate
from jitgate.errors import AuditUnavailable


class Refused(Exception):
    pass


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_waiters_resume_only_after_their_events_are_committed(core: Jitgate) -> None:
    batcher = AuditBatcher(core.db, core.clock)
    batcher.start()
    try:

        async def many() -> list[int]:
            return await asyncio.gather(
                *(
                    batcher.record(NewEvent("call.allowed", "agent:a", data={"n": i}))
                    for i in range(50)
                )
            )

        seqs = run(many())
    finally:
        batcher.stop()
    assert sorted(seqs) == list(range(1, 51))
    assert core.audit.count() == 50
    assert core.audit.verify().ok
    assert batcher.batches < 50  # grouped: fewer transactions than events


def test_a_guard_that_raises_refuses_only_its_own_event(core: Jitgate) -> None:
    batcher = AuditBatcher(core.db, core.clock)
    batcher.start()

    def refuse(connection: Connection) -> None:
        raise Refused("grant was revoked")

    try:

        async def mixed() -> list[object]:
            return await asyncio.gather(
                batcher.record(NewEvent("call.allowed", "agent:a", data={"n": 1})),
                batcher.record(NewEvent("call.allowed", "agent:b", data={"n": 2}), guard=refuse),
                batcher.record(NewEvent("call.allowed", "agent:c", data={"n": 3})),
                return_exceptions=True,
            )

        results = run(mixed())
    finally:
        batcher.stop()
    assert isinstance(results[1], Refused)
    assert [e.actor for e in core.audit.events()] == ["agent:a", "agent:c"]
    assert core.audit.verify().ok


def test_a_guard_sees_state_committed_before_it(core: Jitgate) -> None:
    _, token = core.identity.create_agent("bot")
    principal = core.identity.authenticate(token)
    grant, _ = core.grants.request(
        principal, actions=["s3:GetObject"], resources=["arn:aws:s3:::b/k"], reason="r"
    )
    core.grants.revoke(principal, grant.id)
    batcher = AuditBatcher(core.db, core.clock)
    batcher.start()

    def still_active(connection: Connection) -> None:
        status = connection.execute(
            text("SELECT status FROM grants WHERE id = :id"), {"id": grant.id}
        ).scalar_one()
        if status != "active":
            raise Refused(status)

    try:
        with pytest.raises(Refused, match="revoked"):
            run(
                batcher.record(
                    NewEvent("call.allowed", "agent:bot", grant_id=grant.id), guard=still_active
                )
            )
    finally:
        batcher.stop()
    assert core.audit.events(grant_id=grant.id, types=["call.allowed"]) == []


def test_when_the_log_cannot_be_written_every_waiter_fails(core: Jitgate) -> None:
    with core.db.write() as connection:
        connection.execute(text("DROP TABLE audit_events"))
    batcher = AuditBatcher(core.db, core.clock)
    batcher.start()
    try:
        with pytest.raises(AuditUnavailable):
            run(batcher.record(NewEvent("call.allowed", "agent:a")))
    finally:
        batcher.stop()
    assert batcher.failures == 1
