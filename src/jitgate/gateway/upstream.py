"""Where jitgate sends a call, and with which identity.

The agent never chooses the destination: it is either the override from jitgate's own settings
(sandbox, tests) or the service's regional AWS endpoint, built from a region that has already
been checked against a strict pattern.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials as BotoCredentials

from jitgate.gateway.http_client import HttpClient, Origin
from jitgate.gateway.proxy import ProxySettings
from jitgate.gateway.roles import AssumeRole, RoleSessions, SessionCredentials

_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d")
# How long an upload that asked for "100 Continue" waits for it before sending its body anyway,
# as botocore and curl do (RFC 9110 10.1.1: a server may never answer it).
CONTINUE_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class Destination:
    host: str  # host[:port] as sent in the Host header
    base_path: str  # path prefix of an override endpoint ("" normally)
    origin: Origin  # where to connect: scheme, host and port

    def target(self, raw_path: str, query: str) -> str:
        """The request target sent upstream: the path (under the override's prefix) and query."""
        return f"{self.base_path}{raw_path}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class SigningIdentity:
    access_key: str
    secret_key: str
    token: str | None


class Upstream:
    def __init__(
        self,
        *,
        endpoint_override: str | None = None,
        credentials: BotoCredentials | None = None,
        pool_size: int = 256,
        pool_wait_seconds: float = 30.0,
        roles: dict[str, str] | None = None,
        role_sessions: RoleSessions | None = None,
        bucket_accounts: dict[str, str] | None = None,
    ) -> None:
        """``roles``: {account id: role ARN} to sign as per target account (gateway/roles.py);
        ``role_sessions`` assumes them (built from jitgate's own identity when not given);
        ``bucket_accounts``: {bucket: account id}, the account each listed S3 bucket is in."""
        self._override: Destination | None = None
        if endpoint_override:
            parts = urlsplit(endpoint_override)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"upstream endpoint {endpoint_override!r} is not an http(s) URL")
            try:
                origin = Origin.parse(parts.scheme, parts.netloc)
            except ValueError:
                raise ValueError(
                    f"upstream endpoint {endpoint_override!r} has a bad port"
                ) from None
            self._override = Destination(parts.netloc, parts.path.rstrip("/"), origin)
        self._credentials = credentials or botocore.session.get_session().get_credentials()
        self.roles = dict(roles or {})
        self.bucket_accounts = dict(bucket_accounts or {})
        self._role_sessions = role_sessions
        self._pool_size = pool_size
        self._pool_wait_seconds = pool_wait_seconds
        self.client: HttpClient | None = None
        # Real AWS, or an https override: TLS settings are read (and checked) at start.
        self._over_tls = self._override is None or self._override.origin.scheme == "https"

    async def start(self) -> None:
        if self.client is None:
            # Waiting for a pooled connection (all may be busy with slow calls) is bounded;
            # then no silence longer than read_seconds. No total: a 1 GiB object may take
            # minutes.
            self.client = HttpClient(
                limit=self._pool_size,
                pool_wait_seconds=self._pool_wait_seconds,
                connect_seconds=10.0,
                read_seconds=300.0,
                keepalive_seconds=30.0,
                continue_wait_seconds=CONTINUE_WAIT_SECONDS,
                ssl_context=upstream_tls(ca_bundle()) if self._over_tls else None,
                # HTTPS_PROXY, HTTP_PROXY, NO_PROXY: the egress botocore itself would take.
                proxies=ProxySettings.from_environment(),
            )

    async def close(self) -> None:
        if self._role_sessions is not None:
            self._role_sessions.close()
        if self.client is not None:
            await self.client.close()
            self.client = None

    def destination(self, service: str, region: str) -> Destination:
        if self._override is not None:
            return self._override
        if not _REGION.fullmatch(region):
            raise ValueError(f"invalid region {region!r}")
        suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        host = f"{service}.{region}.{suffix}"
        return Destination(host, "", Origin("https", host, 443))

    async def role_identity(self, role: str, agent: str) -> SigningIdentity:
        """A session of ``role`` for ``agent`` (assumed by jitgate's own identity)."""
        if self._role_sessions is None:
            raise RuntimeError("no role sessions: Upstream was built without roles")
        session = await self._role_sessions.session(role, agent)
        return SigningIdentity(session.access_key, session.secret_key, session.token)

    def identity(self) -> SigningIdentity:
        if self._credentials is None:
            raise RuntimeError(
                "jitgate has no AWS credentials of its own (botocore credential chain is empty)"
            )
        frozen = self._credentials.get_frozen_credentials()
        return SigningIdentity(frozen.access_key, frozen.secret_key, frozen.token)


def sts_client(
    credentials: BotoCredentials | None,
    region: str,
    endpoint_override: str | None,
    config: BotoConfig | None = None,
) -> Any:
    """A botocore STS client signed by jitgate's own identity (``credentials``, else the
    credential chain), at the region's endpoint or the override's. Each has a botocore session
    of its own: sessions are not safe to share between threads."""
    options: dict[str, Any] = {"region_name": region, "config": config}
    if endpoint_override:
        options["endpoint_url"] = endpoint_override
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options.update(
            aws_access_key_id=frozen.access_key,
            aws_secret_access_key=frozen.secret_key,
            aws_session_token=frozen.token,
        )
    return botocore.session.Session().create_client("sts", **options)


def sts_assume_role(
    credentials: BotoCredentials | None, region: str, endpoint_override: str | None
) -> AssumeRole:
    """AssumeRole through botocore, signed by jitgate's own identity (blocking: RoleSessions
    runs it in a worker thread). The STS endpoint is the region's, or the override's."""

    def assume(role: str, name: str, source: str, seconds: int) -> SessionCredentials:
        # Short timeouts and few retries: a call waits for this (RoleSessions bounds the wait).
        config = BotoConfig(
            connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"}
        )
        sts = sts_client(credentials, region, endpoint_override, config)
        answer = sts.assume_role(
            RoleArn=role, RoleSessionName=name, SourceIdentity=source, DurationSeconds=seconds
        )["Credentials"]
        return SessionCredentials(
            answer["AccessKeyId"],
            answer["SecretAccessKey"],
            answer["SessionToken"],
            answer["Expiration"].astimezone(UTC),
        )

    return assume


def ca_bundle() -> str | None:
    """The CA bundle botocore would use: AWS_CA_BUNDLE, or the profile's ``ca_bundle``."""
    return botocore.session.get_session().get_config_variable("ca_bundle") or None


def upstream_tls(bundle: str | None) -> ssl.SSLContext:
    """Certificates checked against ``bundle`` alone when there is one (a proxy or an endpoint
    with a private CA), as botocore and the AWS CLI do; otherwise against the system's trust
    store (which honours SSL_CERT_FILE and SSL_CERT_DIR)."""
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        raise RuntimeError(
            f"cannot load the CA bundle {bundle!r} (AWS_CA_BUNDLE or the profile's ca_bundle):"
            f" {exc}"
        ) from exc
