"""Shipping checkpoints and the events they seal to the sinks, in order, at least once.

For each sink a cursor row records the last checkpoint shipped whole and the last event
shipped; both move only after the sink has read the record back intact. After a crash or an
outage shipping resumes from the cursor, so the copy never has a gap; a record may be sent
twice and the sinks make that harmless.

Shipping never blocks recording: it runs beside the gateway, reads committed rows, and a sink
that fails only falls behind (``status`` raises the alarm). Before shipping a batch the shipper
recomputes its hash from the database; if the rows no longer match what the checkpoint signed
(someone rewrote them after signing) it refuses to ship them and says so.

Several processes may share one database: a sink is shipped by whoever holds its lease (a
conditional update on the cursor row), so two servers do not interleave writes to one sink.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from jitgate.audit.checkpoint import Checkpoint, load_checkpoints, read_rows
from jitgate.audit.records import batch_bytes, sha256_hex
from jitgate.audit.signing import KeyringFile
from jitgate.audit.sinks import Sink, SinkError
from jitgate.clock import Clock, isoformat
from jitgate.store.db import Database
from jitgate.store.schema import (
    audit_checkpoints,
    audit_events,
    audit_head,
    audit_sink_cursors,
)

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=120)


class ShippingRefused(SinkError):
    """The database no longer holds what a checkpoint signed: shipping it would launder it."""

    code = "audit_tampered"


@dataclass(frozen=True)
class Cursor:
    sink: str
    checkpoint_number: int
    shipped_seq: int
    keys: tuple[str, ...]
    updated_at: datetime | None
    last_error: str | None
    failing_since: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sink": self.sink,
            "checkpoint": self.checkpoint_number,
            "shipped_seq": self.shipped_seq,
            "updated_at": isoformat(self.updated_at) if self.updated_at else None,
            "last_error": self.last_error,
            "failing_since": isoformat(self.failing_since) if self.failing_since else None,
        }


def _cursor(row: Any) -> Cursor:
    return Cursor(
        row.sink,
        int(row.checkpoint_number),
        int(row.shipped_seq),
        tuple(row.keys or ()),
        row.updated_at,
        row.last_error,
        row.failing_since,
    )


class Shipper:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        keyring: KeyringFile,
        sinks: list[Sink],
        *,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.keyring = keyring
        self.sinks = list(sinks)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}  # one shipping thread per sink here

    def _lock(self, sink: Sink) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(sink.name, threading.Lock())

    # --- cursors -------------------------------------------------------------------------------
    def cursors(self) -> dict[str, Cursor]:
        with self.db.read() as connection:
            return {
                row.sink: _cursor(row) for row in connection.execute(select(audit_sink_cursors))
            }

    def _claim(self, sink: Sink) -> Cursor | None:
        """Take the sink's lease (creating its cursor); None when another process holds it."""
        now = self.clock.now()
        for _ in range(2):
            try:
                with self.db.write() as connection:
                    row = connection.execute(
                        select(audit_sink_cursors)
                        .where(audit_sink_cursors.c.sink == sink.name)
                        .with_for_update()
                    ).first()
                    if row is None:
                        connection.execute(
                            insert(audit_sink_cursors).values(
                                sink=sink.name,
                                checkpoint_number=0,
                                shipped_seq=0,
                                keys=[],
                                updated_at=now,
                                lease_owner=self.owner,
                                lease_until=now + LEASE,
                            )
                        )
                        return Cursor(sink.name, 0, 0, (), now, None, None)
                    if (
                        row.lease_owner not in (None, self.owner)
                        and row.lease_until is not None
                        and row.lease_until > now
                    ):
                        return None
                    connection.execute(
                        update(audit_sink_cursors)
                        .where(audit_sink_cursors.c.sink == sink.name)
                        .values(lease_owner=self.owner, lease_until=now + LEASE)
                    )
                    return _cursor(row)
            except IntegrityError:
                continue  # another process created the cursor at the same moment
        return None

    def _save(self, sink: Sink, **values: Any) -> None:
        now = self.clock.now()
        with self.db.write() as connection:
            connection.execute(
                update(audit_sink_cursors)
                .where(
                    audit_sink_cursors.c.sink == sink.name,
                    audit_sink_cursors.c.lease_owner == self.owner,
                )
                .values(updated_at=now, lease_until=now + LEASE, **values)
            )

    def _release(self, sink: Sink, error: str | None) -> None:
        now = self.clock.now()
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        with self.db.write() as connection:
            row = connection.execute(
                select(audit_sink_cursors.c.failing_since).where(
                    audit_sink_cursors.c.sink == sink.name
                )
            ).first()
            if error is None:
                values.update(last_error=None, failing_since=None)
            else:
                values["last_error"] = error[:2000]
                if row is not None and row.failing_since is None:
                    values["failing_since"] = now
            connection.execute(
                update(audit_sink_cursors)
                .where(
                    audit_sink_cursors.c.sink == sink.name,
                    audit_sink_cursors.c.lease_owner == self.owner,
                )
                .values(**values)
            )

    # --- shipping ------------------------------------------------------------------------------
    def pending(self, sink: Sink) -> int:
        """Checkpoints not yet shipped to ``sink``."""
        with self.db.read() as connection:
            latest = connection.execute(select(func.max(audit_checkpoints.c.number))).scalar()
            done = connection.execute(
                select(audit_sink_cursors.c.checkpoint_number).where(
                    audit_sink_cursors.c.sink == sink.name
                )
            ).scalar()
        return int(latest or 0) - int(done or 0)

    def ship(self, sink: Sink) -> int:
        """Ship everything pending to ``sink``; returns how many checkpoints went out.

        Raises SinkError (recorded on the cursor) when the sink fails; what was read back
        intact before the failure stays shipped. Within a process, a second caller waits
        for the first; across processes the lease decides."""
        with self._lock(sink):
            return self._ship(sink)

    def _ship(self, sink: Sink) -> int:
        cursor = self._claim(sink)
        if cursor is None:
            return 0
        shipped = 0
        try:
            sink.open()
            keys = list(cursor.keys)
            number, done_seq = cursor.checkpoint_number, cursor.shipped_seq
            while True:
                with self.db.read() as connection:
                    checkpoints = load_checkpoints(connection, after=number, limit=100)
                if not checkpoints:
                    break
                for cp in checkpoints:
                    if cp.key_fingerprint not in keys:
                        entry = self.keyring.load().get(cp.key_fingerprint)
                        if entry is None:
                            raise SinkError(
                                f"checkpoint {cp.number} is signed by key "
                                f"{cp.key_fingerprint[:16]}…, which is not in the keyring "
                                f"{self.keyring.path}"
                            )
                        sink.put_key(entry.as_dict())
                        keys.append(cp.key_fingerprint)
                        self._save(sink, keys=list(keys))
                    for batch in cp.batches:
                        if batch.last_seq <= done_seq:
                            continue
                        sink.put_batch(batch.first_seq, batch.last_seq, self._batch(cp, batch))
                        done_seq = batch.last_seq
                        self._save(sink, shipped_seq=done_seq)
                    sink.put_checkpoint(cp.number, cp.record().encode("utf-8"))
                    number, done_seq = cp.number, max(done_seq, cp.last_seq)
                    self._save(sink, checkpoint_number=number, shipped_seq=done_seq)
                    shipped += 1
        except Exception as exc:
            message = exc.message if isinstance(exc, SinkError) else f"{type(exc).__name__}: {exc}"
            log.warning("audit sink %s: %s", sink.name, message)
            self._release(sink, message)
            if isinstance(exc, SinkError):
                raise
            raise SinkError(f"{sink.name}: {message}") from exc
        self._release(sink, None)
        return shipped

    def _batch(self, cp: Checkpoint, batch: Any) -> bytes:
        with self.db.read() as connection:
            rows = list(read_rows(connection, batch.first_seq - 1, batch.last_seq))
        data = batch_bytes(rows)
        if not rows or rows[0][0] != batch.first_seq:
            with self.db.read() as connection:
                first = connection.execute(select(func.min(audit_events.c.seq))).scalar()
            if first is not None and int(first) > batch.first_seq:
                raise SinkError(
                    f"events {batch.first_seq}..{int(first) - 1} were pruned from the database "
                    f"before this sink received them; copy them from another sink's copy"
                )
        if len(rows) != batch.last_seq - batch.first_seq + 1 or sha256_hex(data) != batch.sha256:
            raise ShippingRefused(
                f"events {batch.first_seq}..{batch.last_seq} in the database no longer match "
                f"what checkpoint {cp.number} signed (changed after signing?): not shipping "
                f"them; run `jitgate audit verify`"
            )
        return data

    # --- status --------------------------------------------------------------------------------
    def status(self, alarm_after: timedelta) -> list[dict[str, Any]]:
        now = self.clock.now()
        with self.db.read() as connection:
            head_seq = int(connection.execute(select(audit_head.c.seq)).scalar_one())
            latest = connection.execute(select(func.max(audit_checkpoints.c.number))).scalar()
            cursors = {
                row.sink: _cursor(row) for row in connection.execute(select(audit_sink_cursors))
            }
            out = []
            for sink in self.sinks:
                cursor = cursors.get(sink.name)
                done = cursor.checkpoint_number if cursor else 0
                shipped_seq = cursor.shipped_seq if cursor else 0
                oldest = None
                if latest is not None and done < int(latest):
                    oldest = connection.execute(
                        select(audit_checkpoints.c.ts).where(audit_checkpoints.c.number == done + 1)
                    ).scalar()
                lag = (now - oldest).total_seconds() if oldest is not None else 0.0
                alarm = lag > alarm_after.total_seconds()
                error = cursor.last_error if cursor else None
                state = "alarm" if alarm else "failing" if error else "behind" if oldest else "ok"
                out.append(
                    {
                        **sink.describe(),
                        "state": state,
                        "alarm": alarm,
                        "checkpoint": done,
                        "pending_checkpoints": int(latest or 0) - done,
                        "shipped_seq": shipped_seq,
                        "lag_events": max(0, head_seq - shipped_seq),
                        "lag_seconds": round(max(lag, 0.0), 1),
                        "last_error": error,
                        "failing_since": isoformat(cursor.failing_since)
                        if cursor and cursor.failing_since
                        else None,
                        "updated_at": isoformat(cursor.updated_at)
                        if cursor and cursor.updated_at
                        else None,
                    }
                )
        return out
