"""What someone with full access to jitgate's database can do to the record.

Every function rewrites the database the way a careful attacker would: after changing events
it recomputes every later hash and the chain head, so the chain in the database verifies on
its own. Only the signing key (outside the database) and the external copy stand in the way.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import text

from jitgate.audit.chain import GENESIS, canonical_json, event_hash
from jitgate.audit.signing import b64, fingerprint_of, public_key_der
from jitgate.store.db import Database


def rows(db: Database) -> list[tuple[int, str, str, str]]:
    with db.read() as connection:
        return [
            (int(r[0]), r[1], r[2], r[3])
            for r in connection.execute(
                text("SELECT seq, prev_hash, hash, body FROM audit_events ORDER BY seq")
            )
        ]


def _with_seq(body: str, seq: int) -> str:
    value = json.loads(body)
    value["seq"] = seq
    return canonical_json(value)


def rechain(db: Database, from_seq: int = 1) -> None:
    """Recompute prev_hash/hash of every event from ``from_seq`` on, and the head."""
    with db.write() as connection:
        previous = GENESIS
        if from_seq > 1:
            previous = connection.execute(
                text("SELECT hash FROM audit_events WHERE seq = :s"), {"s": from_seq - 1}
            ).scalar_one()
        found = connection.execute(
            text("SELECT seq, body FROM audit_events WHERE seq >= :s ORDER BY seq"),
            {"s": from_seq},
        ).all()
        last = from_seq - 1
        for seq, body in found:
            digest = event_hash(previous, body)
            connection.execute(
                text("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s"),
                {"p": previous, "h": digest, "s": seq},
            )
            previous, last = digest, seq
        connection.execute(
            text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"),
            {"s": last, "h": previous},
        )


def edit_event(db: Database, seq: int, **data: Any) -> None:
    """Change fields of an event's data and recompute every later hash and the head."""
    with db.write() as connection:
        body = connection.execute(
            text("SELECT body FROM audit_events WHERE seq = :s"), {"s": seq}
        ).scalar_one()
        value = json.loads(body)
        value["data"].update(data)
        connection.execute(
            text("UPDATE audit_events SET body = :b WHERE seq = :s"),
            {"b": canonical_json(value), "s": seq},
        )
    rechain(db, seq)


def swap_events(db: Database, a: int, b: int) -> None:
    """Exchange two events (each takes the other's place and seq) and recompute."""
    with db.write() as connection:
        body_a = connection.execute(
            text("SELECT body FROM audit_events WHERE seq = :s"), {"s": a}
        ).scalar_one()
        body_b = connection.execute(
            text("SELECT body FROM audit_events WHERE seq = :s"), {"s": b}
        ).scalar_one()
        connection.execute(
            text("UPDATE audit_events SET body = :x WHERE seq = :s"),
            {"x": _with_seq(body_b, a), "s": a},
        )
        connection.execute(
            text("UPDATE audit_events SET body = :x WHERE seq = :s"),
            {"x": _with_seq(body_a, b), "s": b},
        )
    rechain(db, min(a, b))


def delete_event(db: Database, seq: int) -> None:
    """Remove an event, renumber the later ones to close the gap, and recompute."""
    with db.write() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": seq})
        later = connection.execute(
            text("SELECT seq, body FROM audit_events WHERE seq > :s ORDER BY seq"), {"s": seq}
        ).all()
        for old, body in later:
            connection.execute(
                text("UPDATE audit_events SET seq = :n, body = :b WHERE seq = :o"),
                {"n": old - 1, "b": _with_seq(body, old - 1), "o": old},
            )
    rechain(db, seq)


def insert_event(db: Database, at: int, type_: str = "grant.approved", **data: Any) -> None:
    """Slip a made-up event in at ``at``, renumber the later ones, and recompute."""
    with db.write() as connection:
        later = connection.execute(
            text("SELECT seq, body FROM audit_events WHERE seq >= :s ORDER BY seq DESC"), {"s": at}
        ).all()
        template = json.loads(later[-1][1])
        for old, body in later:
            connection.execute(
                text("UPDATE audit_events SET seq = :n, body = :b WHERE seq = :o"),
                {"n": old + 1, "b": _with_seq(body, old + 1), "o": old},
            )
        fake = {**template, "seq": at, "type": type_, "actor": "user:mallory", "data": data}
        connection.execute(
            text(
                "INSERT INTO audit_events (seq, ts, type, actor, body, prev_hash, hash) "
                "VALUES (:s, CURRENT_TIMESTAMP, :t, 'user:mallory', :b, '', '')"
            ),
            {"s": at, "t": type_, "b": canonical_json(fake)},
        )
    rechain(db, at)


def delete_tail(db: Database, keep_through: int, *, checkpoints_too: bool = True) -> None:
    """Cut every event after ``keep_through`` (and, with ``checkpoints_too``, every checkpoint
    that would give it away) and point the head at what is left."""
    with db.write() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE seq > :s"), {"s": keep_through})
        if checkpoints_too:
            connection.execute(
                text("DELETE FROM audit_checkpoints WHERE last_seq > :s"), {"s": keep_through}
            )
    rechain(db, keep_through + 1 if keep_through else 1)


def checkpoint_body(db: Database, number: int) -> dict[str, Any]:
    with db.read() as connection:
        body = connection.execute(
            text("SELECT body FROM audit_checkpoints WHERE number = :n"), {"n": number}
        ).scalar_one()
    return json.loads(body)


def replace_checkpoint(
    db: Database, number: int, *, key: ed25519.Ed25519PrivateKey | None = None, **changes: Any
) -> None:
    """Rewrite a checkpoint's body. Without ``key`` the old signature is kept (it no longer
    matches); with ``key`` the attacker signs it with a key of their own."""
    value = checkpoint_body(db, number)
    value.update(changes)
    with db.write() as connection:
        signature = connection.execute(
            text("SELECT signature FROM audit_checkpoints WHERE number = :n"), {"n": number}
        ).scalar_one()
        if key is not None:
            value["key_fingerprint"] = fingerprint_of(public_key_der(key.public_key()))
        body = canonical_json(value)
        if key is not None:
            signature = b64(key.sign(body.encode()))
        connection.execute(
            text(
                "UPDATE audit_checkpoints SET body = :b, signature = :s, head_hash = :h, "
                "last_seq = :l WHERE number = :n"
            ),
            {
                "b": body,
                "s": signature,
                "h": value["head_hash"],
                "l": value["last_seq"],
                "n": number,
            },
        )


def delete_checkpoint(db: Database, number: int) -> None:
    with db.write() as connection:
        connection.execute(text("DELETE FROM audit_checkpoints WHERE number = :n"), {"n": number})


def head_hash_at(db: Database, seq: int) -> str:
    with db.read() as connection:
        return str(
            connection.execute(
                text("SELECT hash FROM audit_events WHERE seq = :s"), {"s": seq}
            ).scalar_one()
        )


def forge_checkpoints(db: Database, key: ed25519.Ed25519PrivateKey) -> None:
    """Re-make every checkpoint from the (rewritten) database and sign it with the attacker's
    own key: heads, batch hashes and links all consistent. Only the key is wrong."""
    from jitgate.audit.checkpoint import Batch, checkpoint_body
    from jitgate.audit.records import batch_bytes, sha256_hex
    from jitgate.clock import parse_iso

    events = {r[0]: r for r in rows(db)}
    with db.write() as connection:
        stored = connection.execute(
            text("SELECT number, body FROM audit_checkpoints ORDER BY number")
        ).all()
        previous = GENESIS
        fingerprint = fingerprint_of(public_key_der(key.public_key()))
        for number, body in stored:
            value = json.loads(body)
            first, last = value["first_seq"], value["last_seq"]
            batches = []
            for b in value["batches"]:
                part = [events[s] for s in range(b["first_seq"], b["last_seq"] + 1)]
                batches.append(Batch(b["first_seq"], b["last_seq"], sha256_hex(batch_bytes(part))))
            new = checkpoint_body(
                number=number,
                when=parse_iso(value["ts"]),
                reason=value["reason"],
                interval_seconds=value["interval_seconds"],
                first_seq=first,
                last_seq=last,
                head_hash=events[last][2] if last else GENESIS,
                prev_checkpoint_hash=previous,
                batches=batches,
                key_fingerprint=fingerprint,
                algorithm="ed25519",
            )
            connection.execute(
                text(
                    "UPDATE audit_checkpoints SET body = :b, signature = :s, head_hash = :h, "
                    "key_fingerprint = :f WHERE number = :n"
                ),
                {
                    "b": new,
                    "s": b64(key.sign(new.encode())),
                    "h": events[last][2] if last else GENESIS,
                    "f": fingerprint,
                    "n": number,
                },
            )
            import hashlib

            previous = hashlib.sha256(new.encode()).hexdigest()
