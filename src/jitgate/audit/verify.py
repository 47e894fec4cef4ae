"""Verification of the record: the chain, every signed checkpoint, and a copy against the database.

Three sources of truth are checked against each other:

- the **database** (events, chain head, checkpoints), which an attacker with full database
  access can rewrite completely, recomputing every hash;
- the **signed checkpoints**, which they cannot forge without the signing key, and which commit
  to the chain head at intervals;
- an **external copy** (an S3 bucket with Object Lock, or an append-only file), which they can
  neither rewrite nor trim.

``verify_record`` walks whichever are given in one forward pass and names what is wrong: an
edited, deleted, inserted or reordered event, a truncated tail, a missing or replaced
checkpoint, a forged signature, or a copy that differs. It needs only a keyring of trusted
public keys; the copy alone is enough (no database access).

Speed: the chain is hashed once. Where the database holds exactly the bytes of a copy's batches
(whose hashes the checkpoint signed), the walk runs on the database rows and covers both.
Sources are streamed, so memory stays at one checkpoint's events.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, func, select, text

from jitgate.audit.chain import GENESIS
from jitgate.audit.checkpoint import Batch, Checkpoint
from jitgate.audit.records import RecordError, Row, batch_bytes, body_seq, parse_batch, sha256_hex
from jitgate.audit.signing import KeyEntry, Keyring, unb64
from jitgate.store.db import Database
from jitgate.store.schema import audit_checkpoints, audit_events, audit_head

PRUNED_EVENT = "audit.pruned"
_PAGE = 5000
_WINDOW = 256  # events looked at on each side to name a difference
_GAP_SLACK = timedelta(seconds=5)
_RANGES = ("events_rewritten",)  # problems whose seq starts a range rather than names an event


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing that is wrong. ``kind`` is stable (for scripts); ``message`` is for people."""

    kind: str
    message: str
    where: str = "database"  # database | copy | both | keys
    seq: int | None = None
    checkpoint: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "where": self.where,
            "seq": self.seq,
            "checkpoint": self.checkpoint,
        }


@dataclass
class IntegrityReport:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events_checked: int = 0  # database events verified
    copy_events: int = 0  # events verified in the copy
    checkpoints_checked: int = 0  # database checkpoints whose signature verified
    copy_checkpoints: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    first_seq: int = 1
    sealed_seq: int = 0  # last event covered by a checkpoint (database)
    last_checkpoint: int | None = None
    copy_sealed_seq: int = 0
    copy_last_checkpoint: int | None = None
    matched_seq: int = 0  # database equals the copy through this event
    database: bool = False
    copy: str | None = None
    keys: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        # "events a..b were rewritten" bounds a range; an exact finding (from a copy) wins
        exact = [p.seq for p in self.problems if p.seq is not None and p.kind not in _RANGES]
        seqs = exact or [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    @property
    def first_problem(self) -> Problem | None:
        if not self.problems:
            return None
        bad = self.first_bad_seq
        for problem in self.problems:
            if problem.seq == bad:
                return problem
        return self.problems[0]

    @property
    def events_per_second(self) -> float:
        total = self.events_checked + self.copy_events
        return total / self.seconds if self.seconds else 0.0

    def add(self, problem: Problem) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        first = self.first_problem
        return {
            # the fields of the plain chain check, kept for scripts written against it
            "ok": self.ok,
            "checked": self.events_checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problem": first.message if first else None,
            # the rest of the record
            "problems": [p.as_dict() for p in self.problems],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "database": self.database,
            "copy": self.copy,
            "keys": self.keys,
            "first_seq": self.first_seq,
            "sealed_seq": self.sealed_seq,
            "last_checkpoint": self.last_checkpoint,
            "checkpoints_checked": self.checkpoints_checked,
            "copy_events": self.copy_events,
            "copy_checkpoints": self.copy_checkpoints,
            "copy_sealed_seq": self.copy_sealed_seq,
            "matched_seq": self.matched_seq,
            "seconds": round(self.seconds, 4),
            "events_per_second": round(self.events_per_second),
        }


# --- the chain walk ------------------------------------------------------------------------------
def walk(
    rows: list[Row] | Iterator[Row], seq: int, running: str
) -> tuple[tuple[int, str] | None, int, str]:
    """Walk rows from (seq, running hash): the first break as (seq, message), the next seq and
    the running hash. Messages match ``chain.verify_rows``."""
    sha256 = hashlib.sha256
    fromhex = bytes.fromhex
    for s, prev, digest, body in rows:
        if s != seq:
            if s > seq:
                return (seq, f"event {seq} is missing (next stored event is {s})"), seq, running
            return (
                (seq, f"event {seq} is duplicated or out of order (next stored event is {s})"),
                seq,
                running,
            )
        if prev != running:
            return (
                (s, f"event {s} does not link to event {s - 1} (inserted, removed or reordered)"),
                seq,
                running,
            )
        if sha256(fromhex(prev) + body.encode("utf-8")).hexdigest() != digest:
            return (s, f"event {s} was altered (hash mismatch)"), seq, running
        marker = body.rfind(',"seq":')
        if marker < 0 or not body.startswith(f"{s},", marker + 7):
            return (s, f"event {s} carries a different seq"), seq, running
        running = digest
        seq += 1
    return None, seq, running


def walk_lines(lines: list[str], seq: int, running: str) -> tuple[tuple[int, str] | None, int, str]:
    """``walk`` over event lines (see ``records``) without building rows: the body, hash and
    prev_hash are sliced out of each line. Same messages as ``walk``."""
    sha256 = hashlib.sha256
    fromhex = bytes.fromhex
    for line in lines:
        body = line[9:-154]
        digest = line[-145:-81]
        prev = line[-66:-2]
        marker = body.rfind(',"seq":')
        if marker < 0 or not body.startswith(f"{seq},", marker + 7):
            try:
                actual = body_seq(body)
            except RecordError:
                return (seq, f"event {seq} is not a well-formed event line"), seq, running
            if actual > seq:
                return (
                    (seq, f"event {seq} is missing (next stored event is {actual})"),
                    seq,
                    running,
                )
            return (
                (seq, f"event {seq} is duplicated or out of order (next stored event is {actual})"),
                seq,
                running,
            )
        if prev != running:
            return (
                (
                    seq,
                    f"event {seq} does not link to event {seq - 1} (inserted, removed or reordered)",
                ),
                seq,
                running,
            )
        if sha256(fromhex(prev) + body.encode("utf-8")).hexdigest() != digest:
            return (seq, f"event {seq} was altered (hash mismatch)"), seq, running
        running = digest
        seq += 1
    return None, seq, running


# --- naming a difference between the database and the copy ---------------------------------------
def _content(body: str) -> str:
    """An event body without its seq: what stays the same when events are renumbered."""
    marker = body.rfind(',"seq":')
    if marker < 0:
        return body
    end = body.find(",", marker + 7)
    return body[:marker] + body[end:]


def _fields_differ(a: str, b: str) -> list[str]:
    try:
        left, right = json.loads(a), json.loads(b)
    except ValueError:
        return []
    names = []
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            if (
                key == "data"
                and isinstance(left.get(key), dict)
                and isinstance(right.get(key), dict)
            ):
                inner = sorted(
                    k
                    for k in set(left[key]) | set(right[key])
                    if left[key].get(k) != right[key].get(k)
                )
                names.extend(f"data.{k}" for k in inner)
            else:
                names.append(key)
    return names


def classify(
    seq: int,
    database: list[Row],
    copy: list[Row],
    *,
    recomputed: bool,
    tail_of_copy: int | None = None,
) -> Problem:
    """Name the first difference at ``seq``. ``database`` and ``copy`` are windows of rows
    starting at ``seq`` (the copy's is authoritative: it verified against signed checkpoints)."""
    hidden = (
        "; every later hash and the chain head were recomputed to hide it, but the signed "
        "copy disagrees"
        if recomputed
        else ""
    )
    if not database:
        last = f"..{tail_of_copy}" if tail_of_copy and tail_of_copy > seq else ""
        return Problem(
            "tail_truncated",
            f"the database ends at event {seq - 1} but the copy holds events {seq}{last}: "
            f"the tail was deleted",
            "both",
            seq,
        )
    if database[0][0] > seq:
        gone = database[0][0] - 1
        span = f"events {seq}..{gone} were" if gone > seq else f"event {seq} was"
        return Problem(
            "event_deleted", f"{span} deleted from the database (the copy has them)", "both", seq
        )
    if not copy:
        return Problem(
            "event_inserted",
            f"event {seq} is in the database but not in the copy (inserted)",
            "both",
            seq,
        )
    d = [_content(r[3]) for r in database]
    c = [_content(r[3]) for r in copy]
    if d[0] == c[0]:
        if database[0][3] == copy[0][3]:
            return Problem(
                "event_edited",
                f"event {seq}'s stored hash differs from the copy (the hash column was edited)",
                "both",
                seq,
            )
    else:
        # swapped: database[seq] is the copy's event t, and database[t] is the copy's event seq
        for t in range(1, min(len(c), len(d))):
            if c[t] == d[0]:
                if d[t] == c[0]:
                    return Problem(
                        "events_reordered",
                        f"events {seq} and {seq + t} were swapped (reordered){hidden}",
                        "both",
                        seq,
                    )
                if len(d) > 1 and d[1] == c[0]:
                    return Problem(
                        "events_reordered",
                        f"event {seq + t} was moved to position {seq} (reordered){hidden}",
                        "both",
                        seq,
                    )
                if all(d[i] == c[t + i] for i in range(min(len(d), len(c) - t))):
                    span = f"events {seq}..{seq + t - 1} were" if t > 1 else f"event {seq} was"
                    return Problem(
                        "event_deleted",
                        f"{span} deleted from the database and later events renumbered{hidden}",
                        "both",
                        seq,
                    )
                break
        for i in range(1, len(d)):
            if d[i] == c[0] and all(d[i + j] == c[j] for j in range(min(len(c), len(d) - i))):
                what = (
                    f"{i} events not in the copy were" if i > 1 else "an event not in the copy was"
                )
                return Problem("event_inserted", f"{what} inserted at {seq}{hidden}", "both", seq)
    changed = _fields_differ(database[0][3], copy[0][3])
    detail = f" ({', '.join(changed)} changed)" if changed else ""
    return Problem("event_edited", f"event {seq} was edited{detail}{hidden}", "both", seq)


# --- sources -------------------------------------------------------------------------------------
@dataclass
class BatchData:
    batch: Batch
    data: bytes | None  # None: missing from the copy
    rows: list[Row] | None = None  # already parsed (file copies)
    problem: str | None = None


@dataclass
class CopySegment:
    """One checkpoint record of a copy and the batches it lists."""

    number: int
    body: str
    signature: str
    batches: list[BatchData]
    problems: list[Problem] = field(default_factory=list)


class CopySource(Protocol):
    description: str

    def keys(self) -> list[KeyEntry]: ...
    def segments(self) -> Iterator[CopySegment]: ...
    def finish(self) -> tuple[list[Problem], list[str]]: ...


class DatabaseView:
    """The record in the database, read in one snapshot."""

    _BETWEEN = text(
        "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq >= :lo AND seq <= :hi "
        "ORDER BY seq"
    )

    _PAGE_QMARK = (
        "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?"
    )
    _PAGE_FORMAT = (
        "SELECT seq, prev_hash, hash, body FROM audit_events WHERE seq > %s ORDER BY seq LIMIT %s"
    )

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def head(self) -> tuple[int, str]:
        row = self.connection.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
        return int(row.seq), str(row.hash)

    def bounds(self) -> tuple[int | None, int | None]:
        row = self.connection.execute(
            select(func.min(audit_events.c.seq), func.max(audit_events.c.seq))
        ).one()
        return (
            int(row[0]) if row[0] is not None else None,
            int(row[1]) if row[1] is not None else None,
        )

    def pages(self, after: int) -> Iterator[list[Row]]:
        # the hot loop: a DB-API cursor in the same transaction skips SQLAlchemy's row objects
        # (both drivers return (int, str, str, str) tuples)
        dbapi = self.connection.connection.dbapi_connection
        qmark = self.connection.dialect.paramstyle == "qmark"
        sql = self._PAGE_QMARK if qmark else self._PAGE_FORMAT
        cursor = dbapi.cursor()  # type: ignore[union-attr]
        try:
            while True:
                cursor.execute(sql, (after, _PAGE))
                rows = cursor.fetchall()
                if not rows:
                    return
                yield rows
                after = rows[-1][0]
        finally:
            cursor.close()

    def between(self, lo: int, hi: int) -> list[Row]:
        rows = self.connection.execute(self._BETWEEN, {"lo": lo, "hi": hi}).fetchall()
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    def checkpoints(self) -> Iterator[tuple[int, str, str]]:
        after = 0
        while True:
            rows = self.connection.execute(
                select(
                    audit_checkpoints.c.number,
                    audit_checkpoints.c.body,
                    audit_checkpoints.c.signature,
                )
                .where(audit_checkpoints.c.number > after)
                .order_by(audit_checkpoints.c.number)
                .limit(1000)
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield int(row[0]), row[1], row[2]
            after = int(rows[-1][0])

    def anchor(self, last_seq: int) -> str | None:
        """The signed head hash at ``last_seq`` (a checkpoint ending there), if any."""
        value = self.connection.execute(
            select(audit_checkpoints.c.head_hash)
            .where(audit_checkpoints.c.last_seq == last_seq)
            .order_by(audit_checkpoints.c.number)
            .limit(1)
        ).scalar()
        return str(value) if value is not None else None

    def pruned_through(self) -> list[int]:
        rows = self.connection.execute(
            select(audit_events.c.body).where(audit_events.c.type == PRUNED_EVENT)
        )
        through = []
        for (body,) in rows:
            try:
                through.append(int(json.loads(body)["data"]["through_seq"]))
            except (ValueError, KeyError, TypeError):
                continue
        return through


@contextmanager
def database_view(db: Database) -> Iterator[DatabaseView]:
    with db.snapshot() as connection:
        yield DatabaseView(connection)


# --- checkpoints -----------------------------------------------------------------------------------
class _CheckpointChain:
    """Checks one source's checkpoints in order: numbering, links, coverage, signatures."""

    def __init__(self, where: str, keyring: Keyring | None, report: IntegrityReport) -> None:
        self.where = where
        self.label = "the database" if where == "database" else "the copy"
        self.keyring = keyring
        self.report = report
        self.expected = 1
        self.prev_hash = GENESIS
        self.prev: Checkpoint | None = None
        self.verified = 0
        self.keyless = False

    def _problem(self, kind: str, message: str, number: int, seq: int | None = None) -> None:
        prefix = "" if self.where == "database" else "copy: "
        self.report.add(Problem(kind, prefix + message, self.where, seq, number))

    def feed(self, number: int, body: str, signature: str) -> Checkpoint | None:
        try:
            cp = Checkpoint.parse(body, signature)
        except ValueError as exc:
            self._problem(
                "checkpoint_malformed", f"checkpoint {number} is not a checkpoint ({exc})", number
            )
            self.expected = number + 1
            self.prev_hash = hashlib.sha256(body.encode("utf-8")).hexdigest()
            return None
        if cp.number != number:
            self._problem(
                "checkpoint_replaced",
                f"checkpoint {number} holds the body of checkpoint {cp.number} (replaced)",
                number,
            )
        if number > self.expected:
            missing = (
                f"checkpoints {self.expected}..{number - 1} are"
                if number - 1 > self.expected
                else f"checkpoint {self.expected} is"
            )
            self._problem(
                "checkpoint_missing", f"{missing} missing from {self.label}", self.expected
            )
        elif cp.prev_checkpoint_hash != self.prev_hash:
            self._problem(
                "checkpoint_replaced",
                f"checkpoint {number} does not link to checkpoint {number - 1} "
                f"(one of them was replaced)",
                number,
            )
        self._signature(cp)
        previous = self.prev
        if previous is not None:
            if number == self.expected and cp.first_seq != previous.last_seq + 1:
                self._problem(
                    "checkpoint_replaced",
                    f"checkpoint {number} starts at event {cp.first_seq} but checkpoint "
                    f"{previous.number} ended at event {previous.last_seq}",
                    number,
                    cp.first_seq,
                )
            if cp.when < previous.when:
                self._problem(
                    "checkpoint_replaced",
                    f"checkpoint {number} is dated before checkpoint {previous.number}",
                    number,
                )
            gap = cp.when - previous.when
            allowed = timedelta(seconds=2 * max(previous.interval_seconds, 1)) + _GAP_SLACK
            if gap > allowed and previous.reason != "shutdown":
                self.report.warnings.append(
                    f"{self.label}: no checkpoint for {_span(gap)} between checkpoint "
                    f"{previous.number} ({previous.ts}) and {number} ({cp.ts}), and jitgate did "
                    f"not record a shutdown: it stopped uncleanly, or checkpoints were suppressed"
                )
        elif cp.first_seq != 1 and number == 1:
            self._problem(
                "checkpoint_replaced",
                f"checkpoint 1 starts at event {cp.first_seq}, not at event 1",
                number,
            )
        covered = cp.first_seq
        for batch in cp.batches:
            if batch.first_seq != covered or batch.last_seq < batch.first_seq:
                self._problem(
                    "checkpoint_malformed",
                    f"checkpoint {number}'s batches do not cover events "
                    f"{cp.first_seq}..{cp.last_seq} in order",
                    number,
                )
                break
            covered = batch.last_seq + 1
        else:
            if covered != cp.last_seq + 1:
                self._problem(
                    "checkpoint_malformed",
                    f"checkpoint {number}'s batches end at event {covered - 1}, not {cp.last_seq}",
                    number,
                )
        self.prev = cp
        self.prev_hash = cp.hash
        self.expected = number + 1
        return cp

    def _signature(self, cp: Checkpoint) -> None:
        if self.keyring is None or not len(self.keyring):
            if not self.keyless:
                self.keyless = True
                self._problem(
                    "no_trusted_key",
                    f"checkpoints from {cp.number} on cannot be checked: no trusted public key "
                    f"(pass --public-key with the keyring from GET /v1/audit/keys)",
                    cp.number,
                )
            return
        entry = self.keyring.get(cp.key_fingerprint)
        if entry is None:
            self._problem(
                "signature_forged",
                f"checkpoint {cp.number} is signed by key {cp.key_fingerprint[:16]}…, which is "
                f"not a trusted key (forged)",
                cp.number,
            )
            return
        try:
            signature = unb64(cp.signature)
        except ValueError:
            signature = b""
        if not self.keyring.verify(entry, cp.body.encode("utf-8"), signature):
            self._problem(
                "signature_forged",
                f"checkpoint {cp.number}'s signature does not verify (forged or altered)",
                cp.number,
            )
            return
        if not entry.valid_at(cp.when):
            self._problem(
                "key_outside_window",
                f"checkpoint {cp.number} ({cp.ts}) is signed by key {entry.fingerprint[:16]}… "
                f"outside its validity window {entry.window()}",
                cp.number,
            )
            return
        self.verified += 1


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


# --- the database side ---------------------------------------------------------------------------
class _DatabaseSide:
    """Walks the database's rows forward, checking its checkpoints as their heads go by."""

    def __init__(
        self, view: DatabaseView, keyring: Keyring | None, report: IntegrityReport
    ) -> None:
        self.view = view
        self.report = report
        self.chain = _CheckpointChain("database", keyring, report)
        head_seq, head_hash = view.head()
        first, last = view.bounds()
        self.head = (head_seq, head_hash)
        self.first = first
        self.last = last
        report.head_seq, report.head_hash = head_seq, head_hash
        self.seq = 1
        self.running = GENESIS
        self.pruned_to = 0
        self.broken = False  # a chain break was reported; later breaks are not
        self.rewritten = False  # a checkpoint head mismatch was reported
        self.last_seen: Row | None = None
        if first is not None and first > 1:
            self._pruned_prefix(first)
        report.first_seq = self.seq
        self._pages = view.pages(self.seq - 1)
        self._buffer: list[Row] = []
        self._exhausted = False
        self._checkpoints = view.checkpoints()
        self._next_cp: tuple[int, str, str] | None = next(self._checkpoints, None)
        # checkpoints of the copy and of the database waiting for their counterpart
        self.copy_checkpoints: dict[int, tuple[str, str]] = {}
        self.db_waiting: dict[int, tuple[str, str]] = {}
        self.comparing = False

    def _pruned_prefix(self, first: int) -> None:
        through = first - 1
        anchor = self.view.anchor(through)
        recorded = through in self.view.pruned_through()
        if anchor is not None and recorded:
            self.seq, self.running, self.pruned_to = first, anchor, through
            self.report.notes.append(
                f"events 1..{through} were pruned from the database by retention "
                f"(recorded by an {PRUNED_EVENT} event; the copy keeps them)"
            )
            return
        self.report.add(
            Problem(
                "event_deleted",
                f"events 1..{through} are missing from the database"
                + (
                    f" and no {PRUNED_EVENT} event records their pruning (deleted)"
                    if anchor is not None
                    else " (deleted)"
                ),
                "database",
                1,
            )
        )
        self.broken = True
        if anchor is not None:
            self.seq, self.running, self.pruned_to = first, anchor, through

    # rows ------------------------------------------------------------------------------------
    def _fill(self) -> bool:
        if self._exhausted:
            return False
        page = next(self._pages, None)
        if page is None:
            self._exhausted = True
            return False
        self._buffer.extend(page)
        return True

    def take_until(self, last_seq: int) -> list[Row]:
        """Rows with seq <= last_seq not yet taken."""
        while (not self._buffer or self._buffer[-1][0] <= last_seq) and self._fill():
            pass
        if not self._buffer or self._buffer[0][0] > last_seq:
            return []
        if self._buffer[-1][0] <= last_seq:
            rows, self._buffer = self._buffer, []
            return rows
        cut = bisect.bisect_right([r[0] for r in self._buffer], last_seq)
        rows, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return rows

    def remaining(self) -> Iterator[list[Row]]:
        if self._buffer:
            rows, self._buffer = self._buffer, []
            yield rows
        while self._fill():
            rows, self._buffer = self._buffer, []
            yield rows

    def walk(self, rows: list[Row]) -> None:
        if not rows:
            return
        if not self.broken:
            problem, self.seq, self.running = walk(rows, self.seq, self.running)
            if problem is not None:
                self.broken = True
                self.report.add(Problem("chain_broken", problem[1], "database", problem[0]))
                self.report.events_checked += max(0, problem[0] - rows[0][0])
            else:
                self.report.events_checked += len(rows)
        self.last_seen = rows[-1]
        if self.broken:
            self.seq, self.running = rows[-1][0] + 1, rows[-1][2]
        self._checkpoints_through(rows)

    # checkpoints -----------------------------------------------------------------------------
    def _checkpoints_through(self, rows: list[Row]) -> None:
        """Check every stored checkpoint whose head lies at or before the last of ``rows``."""
        upto = rows[-1][0]
        while self._next_cp is not None:
            number, body, signature = self._next_cp
            cp_last = self._peek_last(body)
            if cp_last is not None and cp_last > upto:
                return
            self._next_cp = next(self._checkpoints, None)
            cp = self._feed(number, body, signature)
            if cp is not None and cp.last_seq >= rows[0][0]:
                index = cp.last_seq - rows[0][0]
                if not (0 <= index < len(rows) and rows[index][0] == cp.last_seq):
                    found = [r for r in rows if r[0] == cp.last_seq]
                    row = found[0] if found else None
                else:
                    row = rows[index]
                if row is not None:
                    self._check_head(cp, row[2])

    @staticmethod
    def _peek_last(body: str) -> int | None:
        try:
            return int(json.loads(body)["last_seq"])
        except (ValueError, KeyError, TypeError):
            return None

    def _feed(self, number: int, body: str, signature: str) -> Checkpoint | None:
        cp = self.chain.feed(number, body, signature)
        self.report.checkpoints_checked = self.chain.verified
        if cp is None:
            return None
        self.report.last_checkpoint = number
        self.report.sealed_seq = max(self.report.sealed_seq, cp.last_seq)
        theirs = self.copy_checkpoints.pop(number, None)
        if theirs is None and self.comparing:
            self.db_waiting[number] = (body, signature)
        for older in [n for n in self.copy_checkpoints if n < number]:
            self.copy_checkpoints.pop(older)
            self.report.add(
                Problem(
                    "checkpoint_missing",
                    f"checkpoint {older} is in the copy but missing from the database (deleted)",
                    "both",
                    None,
                    older,
                )
            )
        if theirs is not None:
            self._compare_checkpoint(number, (body, signature), theirs)
        if cp.last_seq == 0 and cp.head_hash != GENESIS:
            self.report.add(
                Problem(
                    "checkpoint_replaced",
                    f"checkpoint {number} seals no events but names a head hash",
                    "database",
                    None,
                    number,
                )
            )
        return cp

    def copy_checkpoint(self, number: int, body: str, signature: str) -> None:
        """The copy's checkpoint ``number``: compared with the database's now or when it comes."""
        ours = self.db_waiting.pop(number, None)
        if ours is not None:
            self._compare_checkpoint(number, ours, (body, signature))
        else:
            self.copy_checkpoints[number] = (body, signature)

    def _compare_checkpoint(
        self, number: int, ours: tuple[str, str], theirs: tuple[str, str]
    ) -> None:
        if ours != theirs:
            self.report.add(
                Problem(
                    "checkpoint_replaced",
                    f"checkpoint {number} in the database differs from the copy (replaced)",
                    "both",
                    None,
                    number,
                )
            )

    def _check_head(self, cp: Checkpoint, stored: str) -> None:
        if stored == cp.head_hash or self.rewritten:
            return
        self.rewritten = True
        self.report.add(
            Problem(
                "events_rewritten",
                f"checkpoint {cp.number} signed head {cp.head_hash[:16]}… at event "
                f"{cp.last_seq}, but the database's event {cp.last_seq} has hash "
                f"{stored[:16]}…: events {cp.first_seq}..{cp.last_seq} (or earlier) were "
                f"rewritten and their hashes recomputed",
                "database",
                cp.first_seq,
                cp.number,
            )
        )

    def finish(self) -> None:
        """Checkpoints past the last row, the head row, the unsealed tail."""
        last_row_seq = self.last_seen[0] if self.last_seen else self.pruned_to
        while self._next_cp is not None:
            number, body, signature = self._next_cp
            self._next_cp = next(self._checkpoints, None)
            cp = self._feed(number, body, signature)
            if cp is None or cp.last_seq <= self.pruned_to:
                continue
            if cp.last_seq > last_row_seq:
                self.report.add(
                    Problem(
                        "tail_truncated",
                        f"checkpoint {number} seals events through {cp.last_seq} but the "
                        f"database ends at event {last_row_seq}: the tail was deleted",
                        "database",
                        last_row_seq + 1,
                        number,
                    )
                )
                break
        for older in sorted(self.copy_checkpoints):
            self.report.add(
                Problem(
                    "checkpoint_missing",
                    f"checkpoint {older} is in the copy but missing from the database (deleted)",
                    "both",
                    None,
                    older,
                )
            )
        self.copy_checkpoints.clear()
        head_seq, head_hash = self.head
        last = self.last_seen
        if last is not None and (head_seq, head_hash) != (last[0], last[2]) and not self.broken:
            if head_seq > last[0]:
                message = (
                    f"the chain ends at event {last[0]} but the head records {head_seq} "
                    f"(tail truncated)"
                )
                self.report.add(Problem("tail_truncated", message, "database", last[0] + 1))
            else:
                message = f"the chain head records event {head_seq} but events run to {last[0]}"
                self.report.add(Problem("chain_broken", message, "database", head_seq + 1))
        elif last is None and head_seq > self.pruned_to and not self.broken:
            self.report.add(
                Problem(
                    "tail_truncated",
                    f"the database holds no events but the head records {head_seq} "
                    f"(tail truncated)",
                    "database",
                    self.pruned_to + 1,
                )
            )
        unsealed = max(0, (last[0] if last else 0) - self.report.sealed_seq)
        if unsealed:
            self.report.notes.append(
                f"{unsealed} event(s) after the last checkpoint are not yet covered by a signature"
            )
        if self.report.last_checkpoint is None and (last is not None):
            self.report.warnings.append(
                "the database holds no signed checkpoint: nothing vouches for these events "
                "against someone who can rewrite the database (is jitgate serve running?)"
            )


# --- the driver ----------------------------------------------------------------------------------
def verify_record(
    *,
    db: Database | None = None,
    copy: CopySource | None = None,
    keyring: Keyring | None = None,
    now: datetime | None = None,
) -> IntegrityReport:
    """Verify the database, a copy, or both against each other (see the module doc)."""
    if db is None and copy is None:
        raise ValueError("nothing to verify: give a database, a copy, or both")
    started = time.perf_counter()
    report = IntegrityReport(database=db is not None, copy=copy.description if copy else None)
    keyring = _choose_keyring(keyring, copy, report)
    if db is not None:
        with database_view(db) as view:
            side = _DatabaseSide(view, keyring, report)
            if copy is not None:
                _copy_pass(copy, keyring, report, side)
            for rows in side.remaining():
                side.walk(rows)
            side.finish()
            if copy is not None and report.matched_seq and report.ok:
                report.notes.append(
                    f"the database matches the copy through event {report.matched_seq}"
                )
        _stale(report, now, db)
    else:
        assert copy is not None
        _copy_pass(copy, keyring, report, None)
    report.seconds = time.perf_counter() - started
    return report


def _choose_keyring(
    keyring: Keyring | None, copy: CopySource | None, report: IntegrityReport
) -> Keyring | None:
    if keyring is not None and len(keyring):
        report.keys = keyring.origin or "given keyring"
        return keyring
    if copy is not None:
        found = copy.keys()
        if found:
            report.keys = f"{copy.description} (keys found in the copy itself)"
            report.warnings.append(
                "no trusted keyring was given: checkpoint signatures were checked against the "
                "public keys stored in the copy; pin the keys with --public-key"
            )
            return Keyring(found, origin=report.keys)
    report.keys = "none"
    return keyring


def _stale(report: IntegrityReport, now: datetime | None, db: Database) -> None:
    if now is None or report.last_checkpoint is None:
        return
    with db.read() as connection:
        row = connection.execute(
            select(audit_checkpoints.c.ts, audit_checkpoints.c.body)
            .order_by(audit_checkpoints.c.number.desc())
            .limit(1)
        ).first()
    if row is None:
        return
    try:
        body = json.loads(row.body)
        interval = int(body["interval_seconds"])
        reason = body["reason"]
    except (ValueError, KeyError, TypeError):
        return
    age = now - row.ts
    if reason != "shutdown" and age > timedelta(seconds=2 * interval) + _GAP_SLACK:
        report.warnings.append(
            f"the newest checkpoint ({report.last_checkpoint}) is {_span(age)} old: no server is "
            f"making checkpoints, or the newest ones were deleted (compare with the copy)"
        )


def _copy_pass(
    copy: CopySource,
    keyring: Keyring | None,
    report: IntegrityReport,
    side: _DatabaseSide | None,
) -> None:
    chain = _CheckpointChain("copy", keyring, report)
    if side is not None:
        side.comparing = True
    seq, running = 1, GENESIS
    diverged = False
    truncated_at: int | None = None
    segments = copy.segments()
    pending: list[CopySegment] = []

    def next_segment() -> CopySegment | None:
        if pending:
            return pending.pop(0)
        return next(segments, None)

    def lookahead_rows() -> list[Row]:
        segment = next(segments, None)
        if segment is None:
            return []
        pending.append(segment)
        rows: list[Row] = []
        for item in segment.batches:
            if item.rows is not None:
                rows.extend(item.rows)
            elif item.data is not None:
                try:
                    rows.extend(parse_batch(item.data))
                except RecordError:
                    break
            if len(rows) >= _WINDOW:
                break
        return rows

    while (segment := next_segment()) is not None:
        for problem in segment.problems:
            report.add(problem)
        cp = chain.feed(segment.number, segment.body, segment.signature)
        report.copy_checkpoints = chain.verified
        if cp is None:
            continue
        if side is not None:
            side.copy_checkpoint(cp.number, segment.body, segment.signature)
        joined, intact = _segment_data(cp, segment, report)
        database = side.take_until(cp.last_seq) if side is not None else None
        if (
            side is not None
            and database is not None
            and intact
            and not diverged
            and cp.last_seq > side.pruned_to
            and (side.seq, side.running) == (seq, running)
            and len(database) == cp.events
            and (not database or (database[0][0], database[-1][0]) == (cp.first_seq, cp.last_seq))
            and batch_bytes(database) == joined
        ):
            # the database holds exactly the copy's bytes: walk the chain once, on its rows
            broken = side.broken
            side.walk(database)
            if side.broken and not broken:
                signed = report.problems[-1]
                report.add(replace(signed, message=f"copy: {signed.message}", where="both"))
            elif database and side.running != cp.head_hash:
                report.add(
                    Problem(
                        "copy_differs",
                        f"copy: the events of checkpoint {cp.number} do not end at its signed head",
                        "both",
                        cp.first_seq,
                        cp.number,
                    )
                )
            else:
                report.copy_events += cp.events
                report.matched_seq = cp.last_seq
            seq, running = cp.last_seq + 1, cp.head_hash
            report.copy_sealed_seq = cp.last_seq
            report.copy_last_checkpoint = cp.number
            continue
        lines: list[str] = []
        if intact:
            try:
                lines = joined.decode("utf-8").split("\n")[:-1]
                if lines and not lines[0].startswith('{"event":'):
                    raise RecordError("not an event line")
                if lines and body_seq(lines[0][9:-154]) != seq:
                    # after a gap (already reported) resume from the batch's own first link:
                    # its bytes are vouched for by the signed batch hash
                    seq, running = body_seq(lines[0][9:-154]), lines[0][-66:-2]
            except (UnicodeDecodeError, RecordError) as exc:
                report.add(
                    Problem(
                        "copy_differs",
                        f"copy: the events of checkpoint {cp.number} are malformed: {exc}",
                        "copy",
                        cp.first_seq,
                        cp.number,
                    )
                )
                intact = False
        if intact:
            problem, _, after = walk_lines(lines, seq, running)
            if problem is not None:
                report.add(
                    Problem("copy_differs", f"copy: {problem[1]}", "copy", problem[0], cp.number)
                )
                intact = False
            elif after != cp.head_hash:
                report.add(
                    Problem(
                        "copy_differs",
                        f"copy: the events of checkpoint {cp.number} do not end at its signed head",
                        "copy",
                        cp.first_seq,
                        cp.number,
                    )
                )
                intact = False
            else:
                report.copy_events += len(lines)
        # continue from the signed head whatever happened: one bad object spoils only itself
        seq, running = cp.last_seq + 1, cp.head_hash
        report.copy_sealed_seq = cp.last_seq
        report.copy_last_checkpoint = cp.number
        if side is None or database is None:
            continue
        if cp.last_seq <= side.pruned_to:
            continue
        if not intact or diverged:
            side.walk(database)
            continue
        if (
            len(database) == len(lines)
            and (not database or (database[0][0], database[-1][0]) == (cp.first_seq, cp.last_seq))
            and batch_bytes(database) == joined
        ):
            side.walk(database)  # the copy was out of step; the database's rows match it
            report.matched_seq = cp.last_seq
            continue
        rows = parse_batch(joined)
        diverged = True
        side.walk(database)
        index = next(
            (i for i, (a, b) in enumerate(zip(database, rows, strict=False)) if a != b),
            min(len(database), len(rows)),
        )
        at = rows[index][0] if index < len(rows) else database[index][0]
        report.matched_seq = at - 1
        window_copy = rows[index : index + _WINDOW]
        if len(window_copy) < _WINDOW:
            window_copy = window_copy + lookahead_rows()[: _WINDOW - len(window_copy)]
        window_db = side.view.between(at, at + _WINDOW)
        if not window_db:
            truncated_at = at  # named once the copy's extent is known
            continue
        report.add(classify(at, window_db, window_copy, recomputed=not side.broken))
    if truncated_at is not None:
        report.add(
            classify(truncated_at, [], [], recomputed=False, tail_of_copy=report.copy_sealed_seq)
        )
    problems, warnings = copy.finish()
    for problem in problems:
        report.add(problem)
    report.warnings.extend(warnings)
    if report.copy_last_checkpoint is None:
        report.warnings.append(f"the copy {copy.description} holds no checkpoint yet")


def _segment_data(
    cp: Checkpoint, segment: CopySegment, report: IntegrityReport
) -> tuple[bytes, bool]:
    """The copy's event lines for a checkpoint (its batches' bytes, joined), after checking
    each listed batch against the hash the checkpoint signed."""
    parts: list[bytes] = []
    intact = True
    given = {(item.batch.first_seq, item.batch.last_seq): item for item in segment.batches}
    for batch in cp.batches:
        item = given.get((batch.first_seq, batch.last_seq))
        where = f"events {batch.first_seq}..{batch.last_seq} of checkpoint {cp.number}"
        if item is None or item.data is None:
            detail = f" ({item.problem})" if item is not None and item.problem else ""
            report.add(
                Problem(
                    "copy_missing",
                    f"copy: the batch of {where} is missing{detail}",
                    "copy",
                    batch.first_seq,
                    cp.number,
                )
            )
            intact = False
            continue
        if sha256_hex(item.data) != batch.sha256:
            report.add(
                Problem(
                    "copy_differs",
                    f"copy: the batch of {where} differs from what the checkpoint signed",
                    "copy",
                    batch.first_seq,
                    cp.number,
                )
            )
            intact = False
            continue
        parts.append(item.data)
    return b"".join(parts), intact
