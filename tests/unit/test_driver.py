"""Rows written on the DBAPI cursor (the gateway's hot path) are the rows SQLAlchemy writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from jitgate.audit.log import NewEvent, append, append_driver, chain
from jitgate.core import Jitgate
from jitgate.store.driver import db_timestamp, driver_transaction, placeholders
from jitgate.store.schema import audit_events

WHEN = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)


def test_both_appends_extend_one_chain_readable_the_same_way(core: Jitgate) -> None:
    event = NewEvent("call.allowed", "agent:a", "a", "gr-1", {"path": "/b/ké y", "n": 1})
    with core.db.write() as connection:
        append(connection, WHEN, [event])
    with driver_transaction(core.db) as txn:
        assert append_driver(txn, WHEN, [event, event]) == [2, 3]
    stored = core.audit.events()
    assert [e.seq for e in stored] == [1, 2, 3]
    assert {(e.ts, e.type, e.actor, e.agent, e.grant_id) for e in stored} == {
        ("2026-11-28T12:00:00.123Z", "call.allowed", "agent:a", "a", "gr-1")
    }
    assert [e.data for e in stored] == [event.data] * 3
    with core.db.read() as connection:
        times = connection.execute(select(audit_events.c.ts)).scalars().all()
    assert times == [WHEN] * 3  # the timestamp column reads back identically, whoever wrote it
    assert core.audit.verify().ok


def test_chain_is_pure_and_links_each_row_to_the_last() -> None:
    rows = chain((7, "ab" * 32), WHEN, [NewEvent("a", "x"), NewEvent("b", "y")])
    assert [row.seq for row in rows] == [8, 9]
    assert rows[0].prev_hash == "ab" * 32 and rows[1].prev_hash == rows[0].hash


def test_timestamps_and_placeholders_per_dialect() -> None:
    east = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert db_timestamp("sqlite", east) == "2026-11-28 12:00:00.123456"
    assert db_timestamp("postgresql", east) == WHEN
    assert placeholders("postgresql", "a = ? AND b = ?") == "a = %s AND b = %s"
    assert placeholders("sqlite", "a = ?") == "a = ?"
