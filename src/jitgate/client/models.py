"""What the SDK hands back: grants and their credentials, parsed from the control plane's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Grant statuses after which nothing changes any more.
FINAL_STATUSES = frozenset({"denied", "lapsed", "revoked", "expired", "used"})


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 UTC instant as jitgate writes it (``2026-11-28T12:00:00Z``)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class GrantCredentials:
    """AWS-shaped credentials for one grant, valid only at jitgate's AWS endpoint.

    ``repr()`` hides the secret parts so that logging a grant never leaks them.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime

    @classmethod
    def from_json(cls, data: dict[str, str]) -> GrantCredentials:
        expiration = parse_time(data["Expiration"])
        assert expiration is not None
        return cls(data["AccessKeyId"], data["SecretAccessKey"], data["SessionToken"], expiration)

    def process_json(self) -> dict[str, Any]:
        """The AWS ``credential_process`` output shape (Version 1)."""
        return {
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": self.expiration.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def seconds_left(self, now: datetime | None = None) -> float:
        return (self.expiration - (now or datetime.now(UTC))).total_seconds()


@dataclass(frozen=True)
class Grant:
    """A grant as the control plane reports it. ``credentials`` is set only while it is active
    and only for the agent that owns it."""

    id: str
    agent: str
    status: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    reason: str
    duration_seconds: int
    expires_at: datetime | None
    decision: dict[str, Any]
    credentials: GrantCredentials | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grant:
        credentials = data.get("credentials")
        return cls(
            id=data["id"],
            agent=data["agent"],
            status=data["status"],
            actions=tuple(data.get("actions", ())),
            resources=tuple(data.get("resources", ())),
            reason=data.get("reason", ""),
            duration_seconds=int(data.get("duration_seconds", 0)),
            expires_at=parse_time(data.get("expires_at")),
            decision=dict(data.get("decision") or {}),
            credentials=GrantCredentials.from_json(credentials) if credentials else None,
            raw={k: v for k, v in data.items() if k != "credentials"},
        )

    @property
    def route(self) -> str:
        """``auto``, ``required`` or ``denied``: how the policy routed the request."""
        return str(self.decision.get("route", ""))

    @property
    def reasons(self) -> list[str]:
        """Why the policy decided as it did (and the approvers' comments on a denial)."""
        reasons = [str(r) for r in self.decision.get("reasons", [])]
        for approval in self.raw.get("approvals", []):
            if approval.get("decision") == "deny" and approval.get("comment"):
                reasons.append(f"{approval['approver']}: {approval['comment']}")
        return reasons

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """The grant as JSON, never with its credentials."""
        return dict(self.raw)


@dataclass(frozen=True)
class PlannedScope:
    """The exact (action, ARN) pairs one or more planned AWS calls need, as jitgate's AWS
    endpoint will check them. Pass it to ``Gate.grant(scope=...)`` to ask for exactly that."""

    actions: tuple[str, ...]
    resources: tuple[str, ...]
    access: tuple[dict[str, str], ...]
    notes: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlannedScope:
        return cls(
            actions=tuple(data.get("actions", ())),
            resources=tuple(data.get("resources", ())),
            access=tuple(dict(a) for a in data.get("access", ())),
            notes=tuple(data.get("notes", ())),
            raw=data,
        )
