"""The grant state machine, as data. Every status change goes through ``check_transition``.

requested -> denied | pending | active
pending   -> active (approved) | denied | lapsed | revoked (withdrawn)
active    -> expired | revoked
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

STATUSES = (PENDING, ACTIVE, DENIED, EXPIRED, REVOKED, LAPSED)
FINAL = frozenset({DENIED, EXPIRED, REVOKED, LAPSED})

TRANSITIONS: dict[str, frozenset[str]] = {
    REQUESTED: frozenset({DENIED, PENDING, ACTIVE}),
    PENDING: frozenset({ACTIVE, DENIED, LAPSED, REVOKED}),
    ACTIVE: frozenset({EXPIRED, REVOKED}),
    DENIED: frozenset(),
    EXPIRED: frozenset(),
    REVOKED: frozenset(),
    LAPSED: frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def check_transition(current: str, target: str, grant_id: str) -> None:
    if not can_transition(current, target):
        raise Conflict(f"grant {grant_id} is {current}; it cannot become {target}")
