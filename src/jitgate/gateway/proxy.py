"""Reaching AWS through an egress proxy: the HTTPS_PROXY, HTTP_PROXY and NO_PROXY settings
botocore honours, so jitgate's forwarded calls leave the network the way its own botocore
calls (STS, assumed roles) already do.

An https origin is reached through a CONNECT tunnel, with TLS end to end to AWS (the proxy
sees only the host name); an http origin (a sandbox, a test) gets absolute-form requests.
Only ``http://`` proxies are supported; the operator sets them, never the agent.
"""

from __future__ import annotations

import base64
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


class ProxyConfigError(RuntimeError):
    """A proxy setting jitgate cannot use (it refuses to start rather than go around it)."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    # "Basic ..." when the URL names a user: never logged, not even in a repr.
    authorization: str | None = field(repr=False)

    @property
    def shown(self) -> str:
        """How errors and logs name it: without the user and password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy(url: str, setting: str) -> Proxy:
    """``url`` as an environment variable holds it ("http://user:pass@host:3128", or without
    a scheme, which curl and botocore read as http)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        # Not urllib's words: they quote the URL's pieces, the password among them (one
        # holding "/", "?" or "#" unencoded is read as the port).
        raise ProxyConfigError(
            f"{setting}: the proxy URL is not valid (its host and port could not be read; "
            "characters such as / ? # @ in a user or password must be %-encoded)"
        ) from None
    if port == 0:
        raise ProxyConfigError(f"{setting}: the proxy URL names port 0")
    if parts.scheme != "http":
        raise ProxyConfigError(
            f"{setting}: jitgate reaches proxies over http:// only (a CONNECT tunnel carries "
            f"TLS to AWS end to end), not {parts.scheme}://"
        )
    if not parts.hostname:
        raise ProxyConfigError(f"{setting}: the proxy URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyConfigError(f"{setting}: a proxy URL is a scheme, host and port only")
    authorization = None
    if parts.username is not None:
        user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user_pass.encode("utf-8")).decode("ascii")
    return Proxy(parts.hostname, port or 80, authorization)


class ProxySettings:
    """Which proxy, if any, reaches an origin."""

    def __init__(
        self,
        *,
        https: Proxy | None = None,
        http: Proxy | None = None,
        no_proxy: str | None = None,
    ) -> None:
        self.https = https
        self.http = http
        self._no_proxy = {"no": no_proxy} if no_proxy else {}

    @classmethod
    def from_environment(cls) -> ProxySettings:
        """HTTPS_PROXY, HTTP_PROXY and NO_PROXY (either case; the lower-case one wins), read
        with urllib's rules, as botocore reads them."""
        found = urllib.request.getproxies_environment()
        return cls(
            https=parse_proxy(found["https"], "HTTPS_PROXY") if found.get("https") else None,
            http=parse_proxy(found["http"], "HTTP_PROXY") if found.get("http") else None,
            no_proxy=found.get("no"),
        )

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self.https if scheme == "https" else self.http
        if proxy is None:
            return None
        if self._no_proxy:
            # What botocore matches NO_PROXY against: the URL's netloc, which names the port
            # only when it is not the scheme's own.
            default = 443 if scheme == "https" else 80
            netloc = host if port == default else f"{host}:{port}"
            if urllib.request.proxy_bypass_environment(netloc, self._no_proxy):
                return None
        return proxy

    def __bool__(self) -> bool:
        return self.https is not None or self.http is not None
