"""The hash chain, as pure functions.

Each event is stored as its canonical JSON ``body`` (sorted keys, no spaces, UTF-8) which
includes its own sequence number. Its hash is ``sha256(prev_hash_bytes || body_bytes)``; the
first event's ``prev_hash`` is 64 zeros. Verification needs only the stored rows.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

GENESIS = "0" * 64


# The reference: json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
# with its encoder built once.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)

# orjson writes the same bytes for JSON's own types about four times faster (two events per
# forwarded call), except where it cannot or writes otherwise; those go to the reference:
# - it raises (TypeError) on what it does not take: keys that are not strings, integers beyond
#   64 bits, lone surrogates, and, with these options, datetimes, dataclasses and subclasses of
#   str, int, dict and list (json has its own rules for those);
# - floats below 1e-4 ("1e-5" or "0.00001" where json writes "1e-05") and NaN and infinities
#   (null where json writes NaN): caught by looking for "e-" after a digit, "0.0000" and "null"
#   in its output, which a string may also hold (then the reference runs; the result is the
#   same).
# tests/unit/test_chain.py checks the result against the reference for any JSON value. Beyond
# JSON's types, orjson writes a plain Enum member (its value) and a UUID where json raised;
# events hold neither, and what is hashed is the body as stored, so the chain is unaffected.
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_SMALL_FLOAT = re.compile(r"[0-9]e-")


def canonical_json(value: Any) -> str:
    try:
        text = orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return _CANONICAL.encode(value)
    if "null" in text or "0.0000" in text or ("e-" in text and _SMALL_FLOAT.search(text)):
        return _CANONICAL.encode(value)
    return text


def event_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
        }


def verify_rows(
    rows: Iterable[tuple[int, str, str, str]],
    *,
    expected_head: tuple[int, str] | None = None,
    start: tuple[int, str] | None = None,
) -> VerifyResult:
    """Walk (seq, prev_hash, hash, body) rows in seq order and report the first break.

    - a gap in sequence numbers: an event was deleted (or the order was changed);
    - prev_hash not equal to the previous event's hash: an event was inserted, removed or moved;
    - hash not equal to sha256(prev_hash || body): the event was edited;
    - the body's own seq differs from its row: the event was moved;
    - the last event differs from the recorded chain head: the tail was cut off.

    ``start`` is (first seq, hash it links to) when older events were pruned by retention; the
    hash comes from the signed checkpoint that ends just before it.
    """
    expected_seq, running = start if start is not None else (1, GENESIS)
    sha256 = hashlib.sha256
    fromhex = bytes.fromhex
    checked = 0
    for seq, prev_hash, stored_hash, body in rows:
        if seq != expected_seq:
            what = "missing" if seq > expected_seq else "duplicated or out of order"
            return VerifyResult(
                False,
                checked,
                expected_seq - 1,
                running,
                expected_seq,
                f"event {expected_seq} is {what} (next stored event is {seq})",
            )
        if prev_hash != running:
            return VerifyResult(
                False,
                checked,
                seq - 1,
                running,
                seq,
                f"event {seq} does not link to event {seq - 1} (inserted, removed or reordered)",
            )
        computed = sha256(fromhex(prev_hash) + body.encode("utf-8")).hexdigest()
        if computed != stored_hash:
            return VerifyResult(
                False, checked, seq - 1, running, seq, f"event {seq} was altered (hash mismatch)"
            )
        marker = body.rfind(',"seq":')
        if marker < 0 or not body.startswith(f"{seq},", marker + 7):
            return VerifyResult(
                False, checked, seq - 1, running, seq, f"event {seq} carries a different seq"
            )
        running = stored_hash
        expected_seq += 1
        checked += 1
    head_seq = expected_seq - 1
    if expected_head is not None and expected_head != (head_seq, running):
        recorded_seq, _ = expected_head
        if recorded_seq > head_seq:
            problem = f"the chain ends at event {head_seq} but the head records {recorded_seq} (tail truncated)"
            return VerifyResult(False, checked, head_seq, running, head_seq + 1, problem)
        problem = f"the chain head records event {recorded_seq} but events run to {head_seq}"
        return VerifyResult(False, checked, head_seq, running, recorded_seq + 1, problem)
    return VerifyResult(True, checked, head_seq, running)
