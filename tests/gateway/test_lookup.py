"""The gateway's grant lookup: a live grant is remembered for a moment, nothing else is."""

from __future__ import annotations

from jitgate.core import Jitgate
from jitgate.gateway.lookup import GrantLookup, refreshed
from jitgate.store.driver import driver_transaction

SCOPE = {"actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::b/k"]}


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def active_grant(core: Jitgate):  # type: ignore[no-untyped-def]
    _, token = core.identity.create_agent("bot")
    agent = core.identity.authenticate(token)
    grant, _ = core.grants.request(agent, reason="r", **SCOPE)
    assert grant.status == "active" and grant.access_key_id
    return agent, grant


def test_a_live_grant_is_remembered_for_fresh_seconds(core: Jitgate) -> None:
    agent, grant = active_grant(core)
    ticks = Ticks()
    lookup = GrantLookup(core.db, fresh_seconds=1.0, monotonic=ticks)
    first = lookup.by_access_key(grant.access_key_id)
    assert first is not None and first.status == "active"
    core.grants.revoke(agent, grant.id)
    ticks.now += 0.5
    assert lookup.by_access_key(grant.access_key_id) is first  # remembered...
    with driver_transaction(core.db) as txn:
        assert refreshed(txn, first).status == "revoked"  # ...the recording check reads it
    ticks.now += 0.6
    again = lookup.by_access_key(grant.access_key_id)
    assert again is not None and again.status == "revoked"  # read again once stale
    lookup.close()


def test_grants_that_are_not_live_and_unknown_keys_are_read_every_time(core: Jitgate) -> None:
    agent, grant = active_grant(core)
    core.grants.revoke(agent, grant.id)
    lookup = GrantLookup(core.db, monotonic=Ticks())
    reads: list[str] = []
    real_read = lookup._read

    def counted(access_key_id: str):  # type: ignore[no-untyped-def]
        reads.append(access_key_id)
        return real_read(access_key_id)

    lookup._read = counted  # type: ignore[method-assign]
    for _ in range(2):
        found = lookup.by_access_key(grant.access_key_id)
        assert found is not None and found.status == "revoked"
        assert lookup.by_access_key("ASIANOSUCHKEY0000000") is None
    assert len(reads) == 4  # nothing remembered: a key issued a moment later works at once
    lookup.close()


def test_one_batch_reads_a_grant_once(core: Jitgate) -> None:
    _, grant = active_grant(core)
    lookup = GrantLookup(core.db)
    remembered = lookup.by_access_key(grant.access_key_id)
    assert remembered is not None
    with driver_transaction(core.db) as txn:
        first = refreshed(txn, remembered)
        assert refreshed(txn, remembered) is first
    lookup.close()
