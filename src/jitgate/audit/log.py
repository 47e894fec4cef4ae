"""Appending to and reading the audit chain in the database.

``append`` runs inside the caller's write transaction, so a state change and its event commit
together or not at all. The chain head row is locked for the append, so concurrent writers (in
one process or many, SQLite or PostgreSQL) queue and never fork the chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, text, update

from jitgate.audit.chain import VerifyResult, canonical_json, event_hash, verify_rows
from jitgate.clock import isoformat
from jitgate.store.db import Database
from jitgate.store.driver import SQLITE, DriverTxn
from jitgate.store.schema import audit_checkpoints, audit_events, audit_head

_CHAIN_PAGE = text(
    "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq > :last ORDER BY seq LIMIT :batch"
)


@dataclass(frozen=True)
class NewEvent:
    type: str
    actor: str
    agent: str | None = None
    grant_id: str | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    ts: str
    type: str
    actor: str
    agent: str | None
    grant_id: str | None
    data: dict[str, Any]
    hash: str
    prev_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "actor": self.actor,
            "agent": self.agent,
            "grant_id": self.grant_id,
            "data": self.data,
            "hash": self.hash,
            "prev_hash": self.prev_hash,
        }


def _body(seq: int, ts: str, event: NewEvent) -> str:
    return canonical_json(
        {
            "seq": seq,
            "ts": ts,
            "type": event.type,
            "actor": event.actor,
            "agent": event.agent,
            "grant_id": event.grant_id,
            "data": event.data or {},
        }
    )


@dataclass(frozen=True)
class ChainRow:
    """One event ready to store: its place in the chain, its canonical body and its hash."""

    seq: int
    event: NewEvent
    body: str
    prev_hash: str
    hash: str


def chain(head: tuple[int, str], when: datetime, events: Sequence[NewEvent]) -> list[ChainRow]:
    """The rows that extend the chain ending at ``head`` (seq, hash) with ``events`` (pure)."""
    seq, running = head
    ts = isoformat(when)
    rows: list[ChainRow] = []
    for event in events:
        seq += 1
        body = _body(seq, ts, event)
        digest = event_hash(running, body)
        rows.append(ChainRow(seq, event, body, running, digest))
        running = digest
    return rows


def append(connection: Connection, when: datetime, events: Sequence[NewEvent]) -> list[int]:
    """Append events to the chain within the caller's transaction; returns their seqs."""
    if not events:
        return []
    head = connection.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).one()
    rows = chain((int(head.seq), str(head.hash)), when, events)
    connection.execute(
        insert(audit_events),
        [
            {
                "seq": row.seq,
                "ts": when,
                "type": row.event.type,
                "actor": row.event.actor,
                "agent": row.event.agent,
                "grant_id": row.event.grant_id,
                "body": row.body,
                "prev_hash": row.prev_hash,
                "hash": row.hash,
            }
            for row in rows
        ],
    )
    last = rows[-1]
    connection.execute(
        update(audit_head).where(audit_head.c.id == 1).values(seq=last.seq, hash=last.hash)
    )
    return [row.seq for row in rows]


_HEAD_FOR_UPDATE = "SELECT seq, hash FROM audit_head WHERE id = 1"
_INSERT_EVENT = (
    "INSERT INTO audit_events (seq, ts, type, actor, agent, grant_id, body, prev_hash, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_HEAD = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1"
_HEAD = ("audit", "head")


def append_driver(txn: DriverTxn, when: datetime, events: Sequence[NewEvent]) -> list[int]:
    """``append`` on the DBAPI cursor (the gateway's hot path): the same rows, no SQLAlchemy."""
    if not events:
        return []
    head = txn.memo.get(_HEAD)  # what this connection last wrote, if nobody wrote since
    if head is None:
        lock = "" if txn.dialect == SQLITE else " FOR UPDATE"  # SQLite: BEGIN IMMEDIATE holds it
        seq, running = txn.one(_HEAD_FOR_UPDATE + lock)
        head = (int(seq), str(running))
    rows = chain(head, when, events)
    ts = txn.timestamp(when)
    txn.executemany(
        _INSERT_EVENT,
        [
            (
                row.seq,
                ts,
                row.event.type,
                row.event.actor,
                row.event.agent,
                row.event.grant_id,
                row.body,
                row.prev_hash,
                row.hash,
            )
            for row in rows
        ],
    )
    last = rows[-1]
    txn.execute(_UPDATE_HEAD, (last.seq, last.hash))
    txn.memo[_HEAD] = (last.seq, last.hash)
    return [row.seq for row in rows]


def written_head(txn: DriverTxn) -> tuple[int, str] | None:
    """The (seq, hash) the events appended in ``txn`` leave at the chain's head, if any."""
    head = txn.memo.get(_HEAD)
    return None if head is None else (int(head[0]), str(head[1]))


def chain_holds(txn: DriverTxn, head: tuple[int, str]) -> bool:
    """Whether the stored chain has the event ``head`` names (its seq with its hash): how a
    writer whose COMMIT went unanswered learns whether it committed."""
    row = txn.execute("SELECT hash FROM audit_events WHERE seq = ?", (head[0],)).fetchone()
    return row is not None and row[0] == head[1]


def _stored(row: Any) -> StoredEvent:
    body = json.loads(row.body)
    return StoredEvent(
        seq=int(row.seq),
        ts=body["ts"],
        type=body["type"],
        actor=body["actor"],
        agent=body["agent"],
        grant_id=body["grant_id"],
        data=body["data"],
        hash=row.hash,
        prev_hash=row.prev_hash,
    )


class AuditLog:
    """Reading side of the chain, plus a convenience for appending in its own transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, when: datetime, *events: NewEvent) -> list[int]:
        with self.db.write() as connection:
            return append(connection, when, events)

    def events(
        self,
        *,
        after_seq: int = 0,
        limit: int = 100,
        grant_id: str | None = None,
        agent: str | None = None,
        types: Sequence[str] | None = None,
        type_prefix: str | None = None,
        newest_first: bool = False,
    ) -> list[StoredEvent]:
        query = select(
            audit_events.c.seq, audit_events.c.body, audit_events.c.hash, audit_events.c.prev_hash
        )
        if after_seq:
            query = query.where(audit_events.c.seq > after_seq)
        if grant_id is not None:
            query = query.where(audit_events.c.grant_id == grant_id)
        if agent is not None:
            query = query.where(audit_events.c.agent == agent)
        if types:
            query = query.where(audit_events.c.type.in_(list(types)))
        if type_prefix:
            query = query.where(audit_events.c.type.startswith(type_prefix, autoescape=True))
        order = audit_events.c.seq.desc() if newest_first else audit_events.c.seq
        query = query.order_by(order).limit(limit)
        with self.db.read() as connection:
            return [_stored(row) for row in connection.execute(query)]

    def head(self) -> tuple[int, str]:
        with self.db.read() as connection:
            row = connection.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
            return int(row.seq), str(row.hash)

    def count(self) -> int:
        with self.db.read() as connection:
            return int(
                connection.execute(select(func.count()).select_from(audit_events)).scalar_one()
            )

    def iter_rows(self, batch: int = 5000) -> Iterator[tuple[int, str, str, str]]:
        """All chain rows in order, streamed in batches (keyset pagination)."""
        with self.db.snapshot() as connection:
            yield from _chain_rows(connection, batch)

    def verify(self, batch: int = 5000) -> VerifyResult:
        """Walk the chain against the recorded head. Head and rows are read in one snapshot,
        so events appended meanwhile are neither walked nor mistaken for tampering."""
        with self.db.snapshot() as connection:
            row = connection.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
            head = (int(row.seq), str(row.hash))
            return verify_rows(
                _chain_rows(connection, batch), expected_head=head, start=_pruned_start(connection)
            )


def _pruned_start(connection: Connection) -> tuple[int, str] | None:
    """Where the chain starts after retention pruned older events: the first stored seq and
    the head hash of the signed checkpoint that ends just before it (see audit.retention)."""
    first = connection.execute(select(func.min(audit_events.c.seq))).scalar()
    if first is None or int(first) <= 1:
        return None
    anchor = connection.execute(
        select(audit_checkpoints.c.head_hash)
        .where(audit_checkpoints.c.last_seq == int(first) - 1)
        .limit(1)
    ).scalar()
    return (int(first), str(anchor)) if anchor is not None else None


def _chain_rows(connection: Connection, batch: int) -> Iterator[tuple[int, str, str, str]]:
    last = 0
    while True:
        rows = connection.execute(_CHAIN_PAGE, {"last": last, "batch": batch}).fetchall()
        if not rows:
            return
        for row in rows:
            yield (int(row[0]), row[1], row[2], row[3])
        last = int(rows[-1][0])
