"""Workload identity: agents authenticate with OIDC JWTs from their platform, not static tokens.

A workload (a GitHub Actions job, a Kubernetes pod, a SPIFFE-identified service) presents a JWT
its platform issued to ``POST /v1/auth/workload``. jitgate checks it against a trusted issuer
from ``jitgate.toml`` and, if every check passes, maps its claims to one agent and answers with
a short-lived agent session token (``jgw_...``), used like an agent token until it expires
(never later than the JWT itself, and at most ``session_minutes``).

The checks, each a refusal that is recorded (``auth.workload_refused``) with its reason:

- the issuer (``iss``) is configured; its keys come from its JWKS URL (PyJWT's ``PyJWKClient``,
  cached); the signature verifies with the key the token names (``kid``);
- the algorithm is one of the issuer's pinned asymmetric algorithms (never ``none``/HMAC);
- the audience (``aud``) is the configured one; ``exp``, ``iat``, ``sub`` are present,
  ``exp``/``nbf`` hold (with a small leeway), and the token lives no longer than
  ``max_token_lifetime``;
- the token was never exchanged before: ``(iss, jti)`` is kept until the token expires (tokens
  without ``jti`` are keyed by their hash, if the issuer allows that);
- a mapping rule of the issuer matches the claims (first match wins), and names an existing,
  enabled agent.

Configuration::

    [workload_identity]
    session_minutes = 60

    [[workload_identity.issuers]]
    name = "github-actions"
    issuer = "https://token.actions.githubusercontent.com"
    jwks_url = "https://token.actions.githubusercontent.com/.well-known/jwks"
    audience = "https://jitgate.example.com"
    algorithms = ["RS256"]

    [[workload_identity.issuers.agents]]
    agent = "reports-ci"
    claims = { sub = "repo:acme/reports:ref:refs/heads/main" }

Claim patterns are exact strings or shell-style globs (``*``); a claim path with ``/`` reaches
into nested claims (``"kubernetes.io/namespace"``).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from jitgate.audit.log import NewEvent, append
from jitgate.clock import Clock, isoformat
from jitgate.errors import InvalidRequest, JitgateError, NotFound, Unauthorized
from jitgate.identity import tokens
from jitgate.policy.durations import parse_duration
from jitgate.store.db import Database
from jitgate.store.schema import agents, workload_jti, workload_sessions

SESSION_PREFIX = "jgw_"
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_TOKEN_BYTES = 16 * 1024


class WorkloadRefused(JitgateError):
    """An OIDC token was refused. ``reason`` is a stable word for the record."""

    code = "workload_token_refused"
    status = 401

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AgentRule:
    agent: str
    claims: Mapping[str, str]

    def matches(self, claims: Mapping[str, Any]) -> bool:
        for path, pattern in self.claims.items():
            value = _claim(claims, path)
            if not isinstance(value, str) or not fnmatch.fnmatchcase(value, pattern):
                return False
        return True


@dataclass(frozen=True)
class TrustedIssuer:
    name: str
    issuer: str
    jwks_url: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256",)
    max_lifetime_seconds: int = 3600
    leeway_seconds: int = 30
    require_jti: bool = True
    rules: tuple[AgentRule, ...] = ()


@dataclass(frozen=True)
class WorkloadSettings:
    issuers: tuple[TrustedIssuer, ...] = ()
    session_seconds: int = 3600

    def issuer(self, iss: str) -> TrustedIssuer | None:
        return next((i for i in self.issuers if i.issuer == iss), None)


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _seconds(value: Any, where: str) -> int:
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise InvalidRequest(f"jitgate.toml: {where}: {exc}") from None


def load_workload_settings(raw: Mapping[str, Any]) -> WorkloadSettings:
    """``[workload_identity]`` from jitgate.toml, refusing anything unsafe by name."""
    section = raw.get("workload_identity")
    if section is None:
        return WorkloadSettings()
    if not isinstance(section, Mapping):
        raise InvalidRequest("jitgate.toml: [workload_identity] must be a table")
    session_minutes = section.get("session_minutes", 60)
    if not isinstance(session_minutes, int | float) or not 0 < session_minutes <= 720:
        raise InvalidRequest("jitgate.toml: workload_identity.session_minutes must be 1-720")
    issuers: list[TrustedIssuer] = []
    for i, entry in enumerate(section.get("issuers", [])):
        where = f"workload_identity.issuers[{i}]"
        if not isinstance(entry, Mapping):
            raise InvalidRequest(f"jitgate.toml: {where} must be a table")
        for key in ("name", "issuer", "jwks_url", "audience"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise InvalidRequest(f"jitgate.toml: {where}.{key} is required (a string)")
        algorithms = tuple(entry.get("algorithms", ["RS256"]))
        bad = [a for a in algorithms if a not in ASYMMETRIC]
        if not algorithms or bad:
            raise InvalidRequest(
                f"jitgate.toml: {where}.algorithms: {', '.join(map(str, bad)) or 'none given'} "
                f"not allowed; pin asymmetric algorithms ({', '.join(sorted(ASYMMETRIC))})"
            )
        if not str(entry["jwks_url"]).startswith(
            ("https://", "http://127.0.0.1", "http://localhost")
        ):
            raise InvalidRequest(f"jitgate.toml: {where}.jwks_url must be https (or loopback)")
        rules: list[AgentRule] = []
        for j, rule in enumerate(entry.get("agents", [])):
            claims = rule.get("claims") if isinstance(rule, Mapping) else None
            if (
                not isinstance(rule, Mapping)
                or not isinstance(rule.get("agent"), str)
                or not isinstance(claims, Mapping)
                or not claims
                or not all(isinstance(v, str) and v for v in claims.values())
            ):
                raise InvalidRequest(
                    f'jitgate.toml: {where}.agents[{j}] needs agent = "NAME" and a non-empty '
                    "claims table of strings"
                )
            if all(v == "*" for v in claims.values()):
                raise InvalidRequest(
                    f"jitgate.toml: {where}.agents[{j}] matches every token; name the workload"
                )
            rules.append(AgentRule(rule["agent"], dict(claims)))
        issuers.append(
            TrustedIssuer(
                name=entry["name"],
                issuer=entry["issuer"],
                jwks_url=entry["jwks_url"],
                audience=entry["audience"],
                algorithms=algorithms,
                max_lifetime_seconds=_seconds(
                    entry.get("max_token_lifetime", "1h"), f"{where}.max_token_lifetime"
                ),
                leeway_seconds=_seconds(entry.get("leeway", "30s"), f"{where}.leeway"),
                require_jti=bool(entry.get("require_jti", True)),
                rules=tuple(rules),
            )
        )
    names = [i.issuer for i in issuers]
    if len(set(names)) != len(names):
        raise InvalidRequest("jitgate.toml: workload_identity.issuers lists an issuer twice")
    return WorkloadSettings(tuple(issuers), round(session_minutes * 60))


@dataclass(frozen=True)
class VerifiedToken:
    issuer: TrustedIssuer
    claims: Mapping[str, Any]
    agent: str
    replay_key: str
    expires_at: datetime


@dataclass
class WorkloadIdentity:
    """Verifies OIDC tokens and exchanges them for agent sessions."""

    db: Database
    clock: Clock
    settings: WorkloadSettings
    _jwks: dict[str, jwt.PyJWKClient] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.settings.issuers)

    def _client(self, issuer: TrustedIssuer) -> jwt.PyJWKClient:
        client = self._jwks.get(issuer.jwks_url)
        if client is None:
            client = jwt.PyJWKClient(issuer.jwks_url, cache_keys=True, lifespan=300, timeout=10)
            self._jwks[issuer.jwks_url] = client
        return client

    def verify(self, token: str) -> VerifiedToken:
        """Every check but the replay cache; raises WorkloadRefused naming the first failure."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            raise WorkloadRefused("malformed", "the token is missing or too large")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise WorkloadRefused("malformed", f"the token is not a JWT: {exc}") from None
        iss = unverified.get("iss")
        issuer = self.settings.issuer(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise WorkloadRefused("unknown_issuer", f"issuer {str(iss)[:200]!r} is not trusted")
        if header.get("alg") not in issuer.algorithms:
            raise WorkloadRefused(
                "algorithm",
                f"algorithm {str(header.get('alg'))[:20]!r} is not allowed for {issuer.name} "
                f"(pinned: {', '.join(issuer.algorithms)})",
            )
        try:
            key = self._client(issuer).get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise WorkloadRefused(
                "jwks_unavailable", f"cannot fetch {issuer.name}'s keys: {exc}"
            ) from None
        except jwt.PyJWTError as exc:
            raise WorkloadRefused(
                "unknown_key", f"no key of {issuer.name} signs it: {exc}"
            ) from None
        required = ["exp", "iat", "iss", "aud", "sub"] + (["jti"] if issuer.require_jti else [])
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(issuer.algorithms),
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=issuer.leeway_seconds,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise WorkloadRefused("expired", "the token has expired") from None
        except jwt.InvalidAudienceError:
            raise WorkloadRefused(
                "audience",
                f"the token is not for this jitgate (audience must be {issuer.audience!r})",
            ) from None
        except jwt.InvalidSignatureError:
            raise WorkloadRefused("signature", "the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise WorkloadRefused("claims", f"the token lacks a required claim: {exc}") from None
        except jwt.ImmatureSignatureError:
            raise WorkloadRefused("not_yet_valid", "the token is not valid yet") from None
        except jwt.PyJWTError as exc:
            raise WorkloadRefused("invalid", f"the token is invalid: {exc}") from None
        lifetime = int(claims["exp"]) - int(claims["iat"])
        if lifetime > issuer.max_lifetime_seconds:
            raise WorkloadRefused(
                "lifetime",
                f"the token lives {lifetime}s, longer than {issuer.max_lifetime_seconds}s allowed",
            )
        rule = next((r for r in issuer.rules if r.matches(claims)), None)
        if rule is None:
            raise WorkloadRefused(
                "no_mapping",
                f"no agent is mapped to {issuer.name} subject {str(claims['sub'])[:200]!r}",
            )
        jti = claims.get("jti")
        replay_key = (
            str(jti)[:255]
            if isinstance(jti, str) and jti
            else "sha256:" + hashlib.sha256(token.encode()).hexdigest()
        )
        return VerifiedToken(
            issuer,
            claims,
            rule.agent,
            replay_key,
            datetime.fromtimestamp(int(claims["exp"]), UTC),
        )

    def exchange(self, token: str) -> dict[str, Any]:
        """Verify ``token``, spend it, and issue an agent session; record either outcome."""
        now = self.clock.now()
        try:
            verified = self.verify(token)
            return self._issue(verified, now)
        except WorkloadRefused as exc:
            self._record_refusal(token, exc, now)
            raise

    def _issue(self, verified: VerifiedToken, now: datetime) -> dict[str, Any]:
        issuer, claims = verified.issuer, verified.claims
        expires = min(
            verified.expires_at + timedelta(seconds=issuer.leeway_seconds),
            now + timedelta(seconds=self.settings.session_seconds),
        )
        issued = tokens.issue("w")  # jgw_<id>_<secret>; only sha256(secret) is stored
        session_token = issued.token
        try:
            with self.db.write() as connection:
                connection.execute(delete(workload_jti).where(workload_jti.c.expires_at < now))
                connection.execute(
                    delete(workload_sessions).where(workload_sessions.c.expires_at < now)
                )
                seen = connection.execute(
                    select(workload_jti.c.jti).where(
                        workload_jti.c.issuer == issuer.issuer,
                        workload_jti.c.jti == verified.replay_key,
                    )
                ).first()
                if seen is not None:
                    raise WorkloadRefused("replay", "the token was already used")
                connection.execute(
                    insert(workload_jti).values(
                        issuer=issuer.issuer,
                        jti=verified.replay_key,
                        expires_at=verified.expires_at + timedelta(seconds=issuer.leeway_seconds),
                    )
                )
                agent = connection.execute(
                    select(agents.c.disabled).where(agents.c.name == verified.agent)
                ).first()
                if agent is None:
                    raise WorkloadRefused("no_agent", f"agent {verified.agent!r} does not exist")
                if agent.disabled:
                    raise WorkloadRefused("agent_disabled", f"agent {verified.agent!r} is disabled")
                connection.execute(
                    insert(workload_sessions).values(
                        token_id=issued.token_id,
                        token_hash=issued.token_hash,
                        agent=verified.agent,
                        issuer=issuer.issuer,
                        subject=str(claims["sub"])[:512],
                        created_at=now,
                        expires_at=expires,
                    )
                )
                append(
                    connection,
                    now,
                    [
                        NewEvent(
                            "auth.workload",
                            f"workload:{issuer.name}",
                            agent=verified.agent,
                            data={
                                "issuer": issuer.issuer,
                                "subject": str(claims["sub"])[:512],
                                "jti": verified.replay_key,
                                "session": issued.token_id,
                                "expires_at": isoformat(expires),
                            },
                        )
                    ],
                )
        except IntegrityError:
            raise WorkloadRefused("replay", "the token was already used") from None
        return {"token": session_token, "agent": verified.agent, "expires_at": isoformat(expires)}

    def _record_refusal(self, token: str, exc: WorkloadRefused, now: datetime) -> None:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, TypeError, ValueError):
            unverified = {}
        data: dict[str, Any] = {"reason": exc.reason, "message": exc.message}
        for claim in ("iss", "sub", "aud", "jti"):
            if claim in unverified:
                data[f"unverified_{claim}"] = str(unverified[claim])[:300]
        with self.db.write() as connection:
            append(connection, now, [NewEvent("auth.workload_refused", "anonymous", data=data)])


def parse_session(token: str) -> tuple[str, str] | None:
    """(token id, secret) of a ``jgw_<id>_<secret>`` session token, or None."""
    if not token.startswith(SESSION_PREFIX):
        return None
    parsed = tokens.parse("jga_" + token[len(SESSION_PREFIX) :])
    return (parsed.token_id, parsed.secret) if parsed else None


def authenticate_session(db: Database, clock: Clock, token: str) -> Any:
    """The agent principal behind a workload session token, or Unauthorized."""
    from jitgate.identity.service import Principal

    parsed = parse_session(token)
    if parsed is None:
        raise Unauthorized("invalid bearer token")
    token_id, secret = parsed
    with db.read() as connection:
        row = connection.execute(
            select(workload_sessions, agents.c.disabled, agents.c.groups)
            .join(agents, agents.c.name == workload_sessions.c.agent)
            .where(workload_sessions.c.token_id == token_id)
        ).first()
    if row is None or not tokens.secret_matches(secret, row.token_hash):
        raise Unauthorized("invalid bearer token")
    if clock.now() >= row.expires_at:
        raise Unauthorized("workload session expired; exchange a fresh OIDC token")
    if row.disabled:
        raise Unauthorized(f"agent {row.agent!r} is disabled")
    return Principal("agent", row.agent, None, tuple(row.groups))


def require_enabled(identity: WorkloadIdentity | None) -> WorkloadIdentity:
    if identity is None or not identity.enabled:
        raise NotFound("workload identity is not configured on this jitgate")
    return identity


__all__: Sequence[str] = [
    "WorkloadIdentity",
    "WorkloadRefused",
    "WorkloadSettings",
    "authenticate_session",
    "load_workload_settings",
]
