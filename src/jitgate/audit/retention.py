"""Retention: deleting old events from the database, never before they are safe elsewhere.

With ``[audit] retention = "400d"`` jitgate may delete events older than that from its
database, and only events that

1. are sealed by a signed checkpoint that is itself older than the cutoff (pruning stops at a
   checkpoint boundary, so the remaining chain starts from a signed head);
2. have been shipped to **every** configured sink and read back intact (each sink's cursor is
   past that checkpoint); with no sink configured nothing is ever pruned;
3. verify: the database's chain and every checkpoint signature check out before anything is
   deleted.

The deletion is itself recorded, in the same transaction, as an ``audit.pruned`` event naming
the last pruned seq, the checkpoint that anchors the rest and the sinks that hold the copy;
verification accepts a missing prefix only with that event and that anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from jitgate.audit.checkpoint import Checkpoint
from jitgate.audit.log import NewEvent, append
from jitgate.audit.verify import PRUNED_EVENT, verify_record
from jitgate.clock import isoformat
from jitgate.store.schema import audit_checkpoints, audit_events, audit_sink_cursors

if TYPE_CHECKING:
    from jitgate.audit.integrity import AuditIntegrity


@dataclass(frozen=True)
class PruneResult:
    pruned: bool
    through_seq: int
    events: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "pruned": self.pruned,
            "through_seq": self.through_seq,
            "events": self.events,
            "message": self.message,
        }


def prune(integrity: AuditIntegrity, now: datetime, *, dry_run: bool = False) -> PruneResult:
    settings = integrity.settings
    db = integrity.db
    if settings.retention_seconds is None:
        return PruneResult(False, 0, 0, "no retention configured ([audit] retention)")
    sinks = [sink.name for sink in integrity.sinks]
    if not sinks:
        return PruneResult(
            False, 0, 0, "no sink is configured: the database holds the only copy; not pruning"
        )
    cutoff = now - timedelta(seconds=settings.retention_seconds)
    with db.read() as connection:
        shipped = {
            row.sink: int(row.checkpoint_number)
            for row in connection.execute(
                select(audit_sink_cursors.c.sink, audit_sink_cursors.c.checkpoint_number)
            )
        }
        safe_number = min(shipped.get(name, 0) for name in sinks)
        first = connection.execute(select(func.min(audit_events.c.seq))).scalar()
        pruned_to = int(first) - 1 if first is not None else 0
        row = connection.execute(
            select(audit_checkpoints.c.body, audit_checkpoints.c.signature)
            .where(
                audit_checkpoints.c.number <= safe_number,
                audit_checkpoints.c.ts <= cutoff,
                audit_checkpoints.c.last_seq > pruned_to,
            )
            .order_by(audit_checkpoints.c.number.desc())
            .limit(1)
        ).first()
    if row is None:
        return PruneResult(
            False,
            pruned_to,
            0,
            f"nothing to prune: no checkpoint older than {isoformat(cutoff)} has been shipped "
            f"to every sink ({', '.join(sinks)})",
        )
    anchor = Checkpoint.parse(row.body, row.signature)
    count = anchor.last_seq - pruned_to
    report = verify_record(db=db, keyring=integrity.keyring_file.load())
    if not report.ok:
        first_problem = report.first_problem
        return PruneResult(
            False,
            pruned_to,
            0,
            f"the record does not verify ({first_problem.message if first_problem else '?'}); "
            f"not pruning",
        )
    if dry_run:
        return PruneResult(
            False,
            anchor.last_seq,
            count,
            f"would prune events {pruned_to + 1}..{anchor.last_seq} ({count}), sealed by "
            f"checkpoint {anchor.number} and shipped to {', '.join(sinks)}",
        )
    with db.write() as connection:
        append(
            connection,
            now,
            [
                NewEvent(
                    PRUNED_EVENT,
                    "jitgate",
                    data={
                        "through_seq": anchor.last_seq,
                        "checkpoint": anchor.number,
                        "head_hash": anchor.head_hash,
                        "events": count,
                        "cutoff": isoformat(cutoff),
                        "sinks": sinks,
                    },
                )
            ],
        )
        connection.execute(delete(audit_events).where(audit_events.c.seq <= anchor.last_seq))
    return PruneResult(
        True,
        anchor.last_seq,
        count,
        f"pruned events {pruned_to + 1}..{anchor.last_seq} ({count}); checkpoint "
        f"{anchor.number} anchors the rest and {', '.join(sinks)} keep them",
    )
