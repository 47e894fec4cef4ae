"""Signed checkpoints: a signature over the chain head, made at an interval even when idle.

A checkpoint seals the events written since the previous one. Its body (canonical JSON) names:

- ``number`` (1, 2, 3, … without gaps) and ``prev_checkpoint_hash`` (SHA-256 of the previous
  checkpoint's body; 64 zeros for the first), so checkpoints form a chain of their own;
- ``first_seq``..``last_seq``, the events it seals (empty when nothing happened), and
  ``head_hash``, the chain hash of event ``last_seq``;
- ``batches``: the events split into batches of at most ``max_batch_events``, each with the
  SHA-256 of its JSON Lines bytes (see ``records``): exactly the objects shipped to the copy;
- ``ts``, ``reason`` (interval, startup, shutdown, manual, key-rotation), ``interval_seconds``;
- ``key_fingerprint`` and ``algorithm`` of the key that signed it.

The signature is over the body's UTF-8 bytes. Making a checkpoint reads the new events in a
snapshot (no write lock is held while hashing or signing), checks that they link to the
previous checkpoint's head, and inserts the row; two processes racing for the same number
cannot both win (primary key), so several servers may share one database.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from jitgate.audit.chain import GENESIS, canonical_json
from jitgate.audit.records import Row, batch_bytes, checkpoint_line, sha256_hex
from jitgate.audit.signing import KeyringFile, Signer, b64
from jitgate.clock import Clock, isoformat, parse_iso
from jitgate.errors import JitgateError
from jitgate.store.db import Database
from jitgate.store.schema import audit_checkpoints, audit_head

log = logging.getLogger(__name__)

CHECKPOINT_TYPE = "jitgate.audit.checkpoint"
REASONS = ("interval", "startup", "shutdown", "manual", "key-rotation")

_ROWS = text(
    "SELECT seq, prev_hash, hash, body FROM audit_events "
    "WHERE seq > :after AND seq <= :last ORDER BY seq LIMIT :batch"
)


class ChainBroken(JitgateError):
    """The events to be sealed do not link to the last checkpoint: refuse to sign them."""

    code = "audit_chain_broken"
    status = 500


@dataclass(frozen=True)
class Batch:
    first_seq: int
    last_seq: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"first_seq": self.first_seq, "last_seq": self.last_seq, "sha256": self.sha256}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as signed: ``body`` and ``signature`` are the evidence, the rest is parsed
    from the body."""

    body: str
    signature: str  # base64
    number: int
    ts: str
    reason: str
    interval_seconds: int
    first_seq: int
    last_seq: int
    head_hash: str
    prev_checkpoint_hash: str
    batches: tuple[Batch, ...]
    key_fingerprint: str
    algorithm: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.body.encode("utf-8")).hexdigest()

    @property
    def when(self) -> datetime:
        return parse_iso(self.ts)

    @property
    def events(self) -> int:
        return max(0, self.last_seq - self.first_seq + 1)

    def record(self) -> str:
        """The checkpoint record line shipped to copies."""
        return checkpoint_line(self.body, self.signature)

    def summary(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "ts": self.ts,
            "reason": self.reason,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_hash": self.head_hash,
            "batches": len(self.batches),
            "key_fingerprint": self.key_fingerprint,
            "hash": self.hash,
        }

    @classmethod
    def parse(cls, body: str, signature: str) -> Checkpoint:
        """Parse a signed body; ValueError when it is not a checkpoint body."""
        value = json.loads(body)
        if not isinstance(value, dict) or value.get("type") != CHECKPOINT_TYPE:
            raise ValueError("not a jitgate checkpoint")
        try:
            return cls(
                body=body,
                signature=signature,
                number=int(value["number"]),
                ts=str(value["ts"]),
                reason=str(value["reason"]),
                interval_seconds=int(value["interval_seconds"]),
                first_seq=int(value["first_seq"]),
                last_seq=int(value["last_seq"]),
                head_hash=str(value["head_hash"]),
                prev_checkpoint_hash=str(value["prev_checkpoint_hash"]),
                batches=tuple(
                    Batch(int(b["first_seq"]), int(b["last_seq"]), str(b["sha256"]))
                    for b in value["batches"]
                ),
                key_fingerprint=str(value["key_fingerprint"]),
                algorithm=str(value["algorithm"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"checkpoint body lacks a field: {exc}") from None


def checkpoint_body(
    *,
    number: int,
    when: datetime,
    reason: str,
    interval_seconds: int,
    first_seq: int,
    last_seq: int,
    head_hash: str,
    prev_checkpoint_hash: str,
    batches: list[Batch],
    key_fingerprint: str,
    algorithm: str,
) -> str:
    return canonical_json(
        {
            "type": CHECKPOINT_TYPE,
            "v": 1,
            "number": number,
            "ts": isoformat(when),
            "reason": reason,
            "interval_seconds": interval_seconds,
            "first_seq": first_seq,
            "last_seq": last_seq,
            "head_hash": head_hash,
            "prev_checkpoint_hash": prev_checkpoint_hash,
            "batches": [b.as_dict() for b in batches],
            "key_fingerprint": key_fingerprint,
            "algorithm": algorithm,
        }
    )


def _from_row(row: Any) -> Checkpoint:
    return Checkpoint.parse(row.body, row.signature)


def latest_checkpoint(connection: Connection) -> Checkpoint | None:
    row = connection.execute(
        select(audit_checkpoints.c.body, audit_checkpoints.c.signature)
        .order_by(audit_checkpoints.c.number.desc())
        .limit(1)
    ).first()
    return _from_row(row) if row is not None else None


def load_checkpoints(
    connection: Connection, *, after: int = 0, limit: int | None = None
) -> list[Checkpoint]:
    """Checkpoints with number > ``after`` in order. Rows whose body does not parse are
    returned by ``load_checkpoint_rows`` for the verifier; here they raise."""
    query = (
        select(audit_checkpoints.c.body, audit_checkpoints.c.signature)
        .where(audit_checkpoints.c.number > after)
        .order_by(audit_checkpoints.c.number)
    )
    if limit is not None:
        query = query.limit(limit)
    return [_from_row(row) for row in connection.execute(query)]


def load_checkpoint_rows(connection: Connection) -> list[tuple[int, str, str]]:
    """(number, body, signature) of every stored checkpoint, in order, unparsed."""
    rows = connection.execute(
        select(
            audit_checkpoints.c.number, audit_checkpoints.c.body, audit_checkpoints.c.signature
        ).order_by(audit_checkpoints.c.number)
    )
    return [(int(r.number), r.body, r.signature) for r in rows]


def read_rows(connection: Connection, after: int, last: int, page: int = 5000):  # type: ignore[no-untyped-def]
    """Rows with after < seq <= last, in order (keyset pagination)."""
    while after < last:
        rows = connection.execute(_ROWS, {"after": after, "last": last, "batch": page}).fetchall()
        if not rows:
            return
        for row in rows:
            yield (int(row[0]), row[1], row[2], row[3])
        after = int(rows[-1][0])


def seal(
    rows: list[Row], start_seq: int, start_hash: str, max_batch: int
) -> tuple[list[Batch], str, int]:
    """Check that ``rows`` continue the chain from (start_seq, start_hash) and cut them into
    batches; returns (batches, head hash, last seq). Raises ChainBroken naming the event."""
    from jitgate.audit.verify import walk  # the one chain walker

    problem, _, running = walk(rows, start_seq, start_hash)
    if problem is not None:
        raise ChainBroken(f"refusing to sign a broken chain: {problem[1]}")
    batches = []
    for index in range(0, len(rows), max_batch):
        part = rows[index : index + max_batch]
        batches.append(Batch(part[0][0], part[-1][0], sha256_hex(batch_bytes(part))))
    last = rows[-1][0] if rows else start_seq - 1
    return batches, running, last


class Checkpointer:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        signer: Signer,
        keyring: KeyringFile,
        *,
        interval_seconds: int,
        max_batch_events: int,
    ) -> None:
        self.db = db
        self.clock = clock
        self.signer = signer
        self.keyring = keyring
        self.interval = timedelta(seconds=interval_seconds)
        self.interval_seconds = interval_seconds
        self.max_batch_events = max_batch_events
        # one checkpoint seals at most this many events (a long silence, e.g. CLI-only use,
        # is sealed in several checkpoints in a row rather than read into memory at once)
        self.max_events = max_batch_events * 10
        self.last_error: str | None = None

    def latest(self) -> Checkpoint | None:
        with self.db.read() as connection:
            return latest_checkpoint(connection)

    def count(self) -> int:
        with self.db.read() as connection:
            return int(
                connection.execute(select(func.count()).select_from(audit_checkpoints)).scalar_one()
            )

    def due(self, now: datetime | None = None) -> bool:
        latest = self.latest()
        now = now or self.clock.now()
        return latest is None or now - latest.when >= self.interval

    def make(self, reason: str = "manual", *, only_if_due: bool = False) -> Checkpoint | None:
        """Sign and store the next checkpoint; None when another process made it first (or,
        with ``only_if_due``, when the interval has not passed)."""
        if reason not in REASONS:
            raise ValueError(f"unknown checkpoint reason {reason!r}")
        now = self.clock.now()
        with self.db.snapshot() as connection:
            previous = latest_checkpoint(connection)
            head_seq = int(connection.execute(select(audit_head.c.seq)).scalar_one())
            backlog = head_seq - (previous.last_seq if previous else 0)
            if (
                only_if_due
                and previous is not None
                and now - previous.when < self.interval
                and backlog <= self.max_events
            ):
                return None
            if previous is None:
                start_seq, start_hash, prev_hash, number = 1, GENESIS, GENESIS, 1
            else:
                start_seq = previous.last_seq + 1
                start_hash = previous.head_hash
                prev_hash = previous.hash
                number = previous.number + 1
            last = min(head_seq, start_seq - 1 + self.max_events)
            rows = list(read_rows(connection, start_seq - 1, last))
        try:
            batches, head_hash, last_seq = seal(rows, start_seq, start_hash, self.max_batch_events)
        except ChainBroken as exc:
            self.last_error = exc.message
            log.error("audit checkpoint %d not made: %s", number, exc.message)
            raise
        self.signer.refresh()
        entry = self.keyring.ensure(self.signer, now)
        body = checkpoint_body(
            number=number,
            when=now,
            reason=reason,
            interval_seconds=self.interval_seconds,
            first_seq=start_seq,
            last_seq=last_seq,
            head_hash=head_hash,
            prev_checkpoint_hash=prev_hash,
            batches=batches,
            key_fingerprint=entry.fingerprint,
            algorithm=entry.algorithm,
        )
        signature = b64(self.signer.sign(body.encode("utf-8")))
        checkpoint = Checkpoint.parse(body, signature)
        try:
            with self.db.write() as connection:
                connection.execute(
                    insert(audit_checkpoints).values(
                        number=number,
                        ts=now,
                        first_seq=start_seq,
                        last_seq=last_seq,
                        head_hash=head_hash,
                        key_fingerprint=entry.fingerprint,
                        body=body,
                        signature=signature,
                        hash=checkpoint.hash,
                    )
                )
        except IntegrityError:
            return None  # another process made checkpoint `number` first
        self.last_error = None
        return checkpoint
