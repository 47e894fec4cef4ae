"""Export events for SIEMs (JSON Lines) and spreadsheets (CSV).

Each exported event has the fields documented in docs/audit-events.md, in this order:
``seq, ts, type, actor, agent, grant_id, data, hash, prev_hash``. In CSV ``data`` is a JSON
string. ``since`` is inclusive and ``until`` exclusive; both accept an ISO 8601 date or time
(UTC when no offset is given) or a span back from now ("24h", "7d").
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TextIO

from sqlalchemy import select

from jitgate.audit.settings import parse_span
from jitgate.store.db import Database
from jitgate.store.schema import audit_events

FORMATS = ("jsonl", "csv")
FIELDS = ("seq", "ts", "type", "actor", "agent", "grant_id", "data", "hash", "prev_hash")


def parse_when(text: str, now: datetime) -> datetime:
    """An instant from ISO 8601 ("2026-11-28", "2026-11-28T12:00:00Z") or a span ago ("7d")."""
    value = text.strip()
    try:
        return now - timedelta(seconds=parse_span(value))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 date/time nor a span like '24h' or '7d'"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def iter_events(
    db: Database, since: datetime | None, until: datetime | None, page: int = 2000
) -> Iterator[dict[str, object]]:
    """Events with since <= ts < until, in seq order."""
    after = 0
    with db.snapshot() as connection:
        while True:
            query = (
                select(
                    audit_events.c.seq,
                    audit_events.c.body,
                    audit_events.c.hash,
                    audit_events.c.prev_hash,
                )
                .where(audit_events.c.seq > after)
                .order_by(audit_events.c.seq)
                .limit(page)
            )
            if since is not None:
                query = query.where(audit_events.c.ts >= since)
            if until is not None:
                query = query.where(audit_events.c.ts < until)
            rows = connection.execute(query).fetchall()
            if not rows:
                return
            for row in rows:
                body = json.loads(row.body)
                yield {
                    "seq": int(row.seq),
                    "ts": body["ts"],
                    "type": body["type"],
                    "actor": body["actor"],
                    "agent": body["agent"],
                    "grant_id": body["grant_id"],
                    "data": body["data"],
                    "hash": row.hash,
                    "prev_hash": row.prev_hash,
                }
            after = int(rows[-1].seq)


def write_events(events: Iterator[dict[str, object]], out: TextIO, fmt: str) -> int:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    count = 0
    if fmt == "jsonl":
        for event in events:
            out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
        return count
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for event in events:
        row = dict(event)
        row["data"] = json.dumps(row["data"], ensure_ascii=False, sort_keys=True)
        writer.writerow(["" if row[f] is None else row[f] for f in FIELDS])
        count += 1
    return count
