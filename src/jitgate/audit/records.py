"""The wire formats of the external copy: event lines, checkpoint records, key records.

Every record is one line of JSON (JSON Lines). Lines are built by string concatenation so that
the stored canonical bytes of an event or a checkpoint appear *verbatim* inside them: a verifier
recovers the exact bytes that were hashed or signed by slicing, without re-serialising, and the
line is still ordinary JSON for anyone else (a SIEM, ``jq``)::

    {"event":<body>,"hash":"<64 hex>","prev_hash":"<64 hex>"}
    {"checkpoint":<body>,"signature":"<base64>"}
    {"key":{"algorithm":...,"fingerprint":...,"not_before":...,"public_key":...}}

A *batch* is a run of consecutive event lines, each ending in ``\\n``; its hash is the SHA-256
of those bytes. In S3 each batch is one object; in a file the lines are appended in order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from jitgate.audit.chain import canonical_json

Row = tuple[int, str, str, str]  # (seq, prev_hash, hash, body), as stored in audit_events

EVENT_PREFIX = '{"event":'
CHECKPOINT_PREFIX = '{"checkpoint":'
KEY_PREFIX = '{"key":'
_SIGNATURE_MARK = ',"signature":"'
_HASH_MARK = ',"hash":"'
_PREV_MARK = '","prev_hash":"'
_EVENT_SUFFIX_LEN = len(_HASH_MARK) + 64 + len(_PREV_MARK) + 64 + 2  # 154


class RecordError(ValueError):
    """A line that is not a well-formed record."""


def event_line(prev_hash: str, digest: str, body: str) -> str:
    return EVENT_PREFIX + body + _HASH_MARK + digest + _PREV_MARK + prev_hash + '"}\n'


def batch_bytes(rows: Iterable[Row]) -> bytes:
    """The bytes of a batch: one event line per row, in order."""
    return "".join(
        EVENT_PREFIX + body + _HASH_MARK + digest + _PREV_MARK + prev + '"}\n'
        for _, prev, digest, body in rows
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def body_seq(body: str) -> int:
    """The top-level ``seq`` of a canonical event body (the last ``,"seq":`` in it: keys are
    sorted, ``data`` comes before ``seq``, and a quote inside a string is always escaped)."""
    marker = body.rfind(',"seq":')
    if marker < 0:
        raise RecordError("event body has no seq")
    end = marker + 7
    stop = body.find(",", end)
    try:
        return int(body[end:stop])
    except ValueError:
        raise RecordError("event body has a malformed seq") from None


def parse_event_line(line: str) -> Row:
    """(seq, prev_hash, hash, body) from an event line (without its newline)."""
    if (
        not line.startswith(EVENT_PREFIX)
        or not line.endswith('"}')
        or len(line) < len(EVENT_PREFIX) + _EVENT_SUFFIX_LEN + 2
        or line[-154:-145] != _HASH_MARK
        or line[-81:-66] != _PREV_MARK
    ):
        raise RecordError("not an event line")
    body = line[9:-154]
    return body_seq(body), line[-66:-2], line[-145:-81], body


def parse_batch(data: bytes) -> list[Row]:
    """The rows of a batch; RecordError naming the line when one is malformed."""
    text = data.decode("utf-8")
    if text and not text.endswith("\n"):
        raise RecordError("batch does not end with a newline (torn write)")
    rows: list[Row] = []
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        try:
            rows.append(parse_event_line(line))
        except RecordError as exc:
            raise RecordError(f"line {number}: {exc}") from None
    return rows


def checkpoint_line(body: str, signature: str) -> str:
    return CHECKPOINT_PREFIX + body + _SIGNATURE_MARK + signature + '"}\n'


def parse_checkpoint_line(line: str) -> tuple[str, str]:
    """(body, signature) from a checkpoint record line (without its newline)."""
    mark = line.rfind(_SIGNATURE_MARK)
    if not line.startswith(CHECKPOINT_PREFIX) or mark < 0 or not line.endswith('"}'):
        raise RecordError("not a checkpoint record")
    return line[len(CHECKPOINT_PREFIX) : mark], line[mark + len(_SIGNATURE_MARK) : -2]


def key_line(entry: dict[str, Any]) -> str:
    return KEY_PREFIX + canonical_json(entry) + "}\n"


def parse_key_line(line: str) -> dict[str, Any]:
    if not line.startswith(KEY_PREFIX):
        raise RecordError("not a key record")
    try:
        value = json.loads(line)["key"]
    except (ValueError, KeyError, TypeError):
        raise RecordError("malformed key record") from None
    if not isinstance(value, dict):
        raise RecordError("malformed key record")
    return value


# --- object names in an S3 copy (zero-padded so that names sort in order) -------------------
def batch_object_name(first_seq: int, last_seq: int) -> str:
    return f"events/{first_seq:020d}-{last_seq:020d}.jsonl"


def checkpoint_object_name(number: int) -> str:
    return f"checkpoints/{number:020d}.json"


def key_object_name(fingerprint: str) -> str:
    return f"keys/{fingerprint}.json"
