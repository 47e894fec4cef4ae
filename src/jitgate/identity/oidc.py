"""Sign-in with an OpenID Connect provider (authorization code flow with PKCE, via authlib).

Set up in ``jitgate.toml``::

    [oidc]
    issuer = "https://login.example.com"     # discovery at <issuer>/.well-known/openid-configuration
    client_id = "jitgate"
    client_secret_env = "JITGATE_OIDC_SECRET" # or client_secret = "..."
    role_claim = "jitgate_role"               # a role (admin/approver/auditor), or a list of them
    groups_claim = "groups"                   # approver groups for @approver_group
    # role_map = { "sec-leads" = "admin", "sec" = "approver" }   # claim values -> roles

The ID token is checked here, not trusted: signature against the provider's JWKS (asymmetric
algorithms only), issuer, audience, expiry, and the nonce of this sign-in. A person's role and
groups come from the claims at every sign-in, so a change at the provider takes effect at the
next one. People from the provider get a jitgate user of their own (linked by ``sub``); a
local account with the same name is never taken over.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from jitgate.audit.log import NewEvent, append
from jitgate.clock import Clock
from jitgate.errors import Forbidden, InvalidRequest, Unauthorized
from jitgate.identity.service import ROLES, IdentityService, Principal
from jitgate.store.schema import agents, users

ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
_ROLE_RANK = {"auditor": 0, "approver": 1, "admin": 2}
_NAME_OK = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class OidcError(Unauthorized):
    code = "oidc_error"


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str = "openid profile email"
    username_claim: str = "preferred_username"
    role_claim: str = "jitgate_role"
    groups_claim: str = "groups"
    role_map: Mapping[str, str] = field(default_factory=dict)
    label: str = "single sign-on"


def oidc_settings(raw: Mapping[str, Any]) -> OidcSettings | None:
    """The ``[oidc]`` table of jitgate.toml, or None when OIDC is not configured."""
    table = raw.get("oidc")
    if not table:
        return None
    issuer = str(table.get("issuer", "")).rstrip("/")
    client_id = str(table.get("client_id", ""))
    secret = table.get("client_secret")
    if secret is None and table.get("client_secret_env"):
        secret = os.environ.get(str(table["client_secret_env"]))
    if not issuer or not client_id or not secret:
        raise InvalidRequest(
            "[oidc] needs issuer, client_id and client_secret (or client_secret_env naming a "
            "variable that is set)"
        )
    role_map = table.get("role_map", {})
    if not isinstance(role_map, dict) or any(v not in ROLES for v in role_map.values()):
        raise InvalidRequest(f"[oidc] role_map values must be roles: {', '.join(ROLES)}")
    return OidcSettings(
        issuer=issuer,
        client_id=client_id,
        client_secret=str(secret),
        scopes=str(table.get("scopes", "openid profile email")),
        username_claim=str(table.get("username_claim", "preferred_username")),
        role_claim=str(table.get("role_claim", "jitgate_role")),
        groups_claim=str(table.get("groups_claim", "groups")),
        role_map={str(k): str(v) for k, v in role_map.items()},
        label=str(table.get("label", "single sign-on")),
    )


@dataclass(frozen=True)
class OidcIdentity:
    subject: str  # "<issuer>|<sub>": unique across providers
    name: str
    role: str
    groups: tuple[str, ...]


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def user_name_from(value: str) -> str:
    """A jitgate user name from a claim: lower case, other characters become '-'."""
    name = re.sub(r"[^a-z0-9._-]", "-", value.strip().lower())[:64].strip("-._")
    if not _NAME_OK.fullmatch(name or ""):
        raise OidcError(f"cannot make a user name from {value!r}")
    return name


def identity_from_claims(settings: OidcSettings, claims: Mapping[str, Any]) -> OidcIdentity:
    """Who the validated claims say this is, with their jitgate role and groups."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise OidcError("the ID token has no subject")
    raw_name = claims.get(settings.username_claim) or claims.get("email") or sub
    if not isinstance(raw_name, str):
        raise OidcError(f"claim {settings.username_claim!r} is not text")
    values = _strings(claims.get(settings.role_claim))
    roles = [settings.role_map.get(v, v) for v in values]
    roles = [r for r in roles if r in ROLES]
    if not roles:
        raise OidcError(
            f"your identity provider gave no jitgate role (claim {settings.role_claim!r}); "
            "ask an administrator for access"
        )
    role = max(roles, key=_ROLE_RANK.__getitem__)
    groups = []
    for value in _strings(claims.get(settings.groups_claim)):
        group = value.strip().lower()
        if _NAME_OK.fullmatch(group):
            groups.append(group)
    return OidcIdentity(
        f"{settings.issuer}|{sub}", user_name_from(raw_name), role, tuple(dict.fromkeys(groups))
    )


@dataclass(frozen=True)
class Transaction:
    """What one sign-in must remember between the redirect out and the callback."""

    state: str
    nonce: str
    code_verifier: str
    next: str = "/ui/"

    def as_dict(self) -> dict[str, str]:
        return {
            "state": self.state,
            "nonce": self.nonce,
            "cv": self.code_verifier,
            "next": self.next,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transaction:
        return cls(
            str(data["state"]), str(data["nonce"]), str(data["cv"]), str(data.get("next", "/ui/"))
        )


class OidcClient:
    """The relying party. Discovery and keys are fetched on first use and cached."""

    METADATA_TTL = 3600.0

    def __init__(self, settings: OidcSettings, clock: Clock, *, timeout: float = 10.0) -> None:
        self.settings = settings
        self.clock = clock
        self.timeout = timeout
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret,
            scope=self.settings.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=self.timeout,
        )

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._metadata_at > self.METADATA_TTL:
            url = f"{self.settings.issuer}/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as http:
                    response = await http.get(url)
                response.raise_for_status()
                metadata = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise OidcError(
                    f"cannot read the identity provider's discovery document: {exc}"
                ) from None
            if str(metadata.get("issuer", "")).rstrip("/") != self.settings.issuer:
                raise OidcError("the identity provider's discovery document names another issuer")
            self._metadata, self._metadata_at = metadata, time.monotonic()
        return self._metadata

    async def _key_set(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            metadata = await self.metadata()
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as http:
                    response = await http.get(metadata["jwks_uri"])
                response.raise_for_status()
                self._keys = KeySet.import_key_set(response.json())
            except (httpx.HTTPError, ValueError, KeyError, JoseError) as exc:
                raise OidcError(f"cannot read the identity provider's keys: {exc}") from None
        return self._keys

    async def begin(self, redirect_uri: str, next_url: str = "/ui/") -> tuple[str, Transaction]:
        """The URL to send the browser to, and what to remember until it comes back."""
        metadata = await self.metadata()
        transaction = Transaction(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            code_verifier=secrets.token_urlsafe(48),
            next=next_url,
        )
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=transaction.state,
                code_verifier=transaction.code_verifier,
                nonce=transaction.nonce,
            )
        return url, transaction

    async def finish(
        self, params: Mapping[str, str], transaction: Transaction, redirect_uri: str
    ) -> dict[str, Any]:
        """Exchange the code from the callback and return the ID token's validated claims."""
        if params.get("error"):
            raise OidcError(f"the identity provider refused the sign-in: {params['error']}")
        if not secrets.compare_digest(str(params.get("state", "")), transaction.state):
            raise OidcError("the sign-in response does not belong to this browser (state mismatch)")
        code = params.get("code")
        if not code:
            raise OidcError("the sign-in response carries no authorization code")
        metadata = await self.metadata()
        try:
            async with self._client(redirect_uri) as client:
                token = await client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=transaction.code_verifier,
                    redirect_uri=redirect_uri,
                )
        except Exception as exc:  # noqa: BLE001 - authlib raises several types; all mean "no"
            raise OidcError(f"the identity provider did not accept the code: {exc}") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the identity provider returned no ID token")
        return await self.validate_id_token(id_token, transaction.nonce)

    async def validate_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        allowed = [
            a
            for a in (await self.metadata()).get("id_token_signing_alg_values_supported", ["RS256"])
            if a in ALLOWED_ALGORITHMS
        ] or ["RS256"]
        try:
            try:
                decoded = jwt.decode(id_token, await self._key_set(), algorithms=allowed)
            except JoseError:
                # The provider may have rotated its keys since they were fetched.
                decoded = jwt.decode(
                    id_token, await self._key_set(refresh=True), algorithms=allowed
                )
            now = int(self.clock.now().timestamp())
            registry = jwt.JWTClaimsRegistry(
                now=now,
                leeway=60,
                iss={"essential": True, "value": self.settings.issuer},
                aud={"essential": True, "value": self.settings.client_id},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                nonce={"essential": True, "value": nonce},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise OidcError(f"the ID token is not valid: {exc}") from None
        claims = dict(decoded.claims)
        audience = claims.get("aud")
        if (
            isinstance(audience, list)
            and len(audience) > 1
            and claims.get("azp") != self.settings.client_id
        ):
            raise OidcError("the ID token was issued to another client (azp)")
        return claims


def provision(identity: IdentityService, who: OidcIdentity) -> Principal:
    """The jitgate user for an OIDC identity: created at first sign-in, role and groups
    refreshed at every one. Never takes over a local account or an agent's name."""
    db, clock = identity.db, identity.clock
    for _attempt in range(2):
        with db.write() as connection:
            row = connection.execute(
                select(users).where(users.c.oidc_subject == who.subject)
            ).first()
            if row is not None:
                if row.disabled:
                    raise Forbidden(f"user {row.name!r} is disabled")
                if row.role != who.role or tuple(row.groups or ()) != who.groups:
                    connection.execute(
                        update(users)
                        .where(users.c.name == row.name)
                        .values(role=who.role, groups=list(who.groups))
                    )
                    append(
                        connection,
                        clock.now(),
                        [
                            NewEvent(
                                "user.updated",
                                "oidc",
                                data={
                                    "name": row.name,
                                    "role": who.role,
                                    "groups": list(who.groups),
                                    "from": {"role": row.role, "groups": list(row.groups or ())},
                                },
                            )
                        ],
                    )
                return Principal("user", row.name, who.role, who.groups)
            taken = connection.execute(select(users.c.name).where(users.c.name == who.name)).first()
            agent = connection.execute(
                select(agents.c.name).where(agents.c.name == who.name)
            ).first()
        if taken is not None or agent is not None:
            raise Forbidden(
                f"the name {who.name!r} already belongs to a local {'account' if taken else 'agent'}; "
                "an administrator must resolve it before this person can sign in"
            )
        try:
            identity.create_user(
                who.name,
                who.role,
                groups=who.groups,
                oidc_subject=who.subject,
                actor=Principal("system", "oidc"),
            )
        except IntegrityError:
            continue  # created by a concurrent first sign-in: read it again
        return Principal("user", who.name, who.role, who.groups)
    raise OidcError("could not create the user; try signing in again")
