"""The grant state machine, as data. Every status change goes through ``check_transition``.

requested -> denied | pending | active
pending   -> active (approved) | denied | lapsed | revoked (withdrawn)
active    -> expired | revoked | used (a one-exact-call grant after its call)
used      -> revoked (its call may still be streaming: revoking stops it)
"""

from __future__ import annotations

from jitgate.errors import Conflict

REQUESTED = "requested"
PENDING = "pending"
ACTIVE = "active"
DENIED = "denied"
EXPIRED = "expired"
REVOKED = "revoked"
LAPSED = "lapsed"
USED = "used"

STATUSES = (PENDING, ACTIVE, DENIED, EXPIRED, REVOKED, LAPSED, USED)
FINAL = frozenset({DENIED, EXPIRED, REVOKED, LAPSED})

TRANSITIONS: dict[str, frozenset[str]] = {
    REQUESTED: frozenset({DENIED, PENDING, ACTIVE}),
    PENDING: frozenset({ACTIVE, DENIED, LAPSED, REVOKED}),
    ACTIVE: frozenset({EXPIRED, REVOKED, USED}),
    DENIED: frozenset(),
    EXPIRED: frozenset(),
    REVOKED: frozenset(),
    LAPSED: frozenset(),
    USED: frozenset({REVOKED}),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def check_transition(current: str, target: str, grant_id: str) -> None:
    if not can_transition(current, target):
        raise Conflict(f"grant {grant_id} is {current}; it cannot become {target}")
