"""A small OpenID Connect provider the tests start on loopback.

Authorization code flow with PKCE (S256), client_secret_basic or _post, RS256 ID tokens signed
with PyJWT (not the library jitgate verifies with), discovery and JWKS. ``/authorize`` shows a
sign-in page (a browser submits it) or, with ``auto_login`` set, redirects at once. Knobs let a
test make it misbehave: sign with another key, name another audience, drop or change the nonce,
issue an expired token.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from jitgate.sandbox.moto import free_port

CLIENT_ID = "jitgate-console"
CLIENT_SECRET = "test-client-secret-0123456789"


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Provider:
    url: str = ""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # login -> claims
    auto_login: str | None = None
    # misbehaviour, for tests
    wrong_key: bool = False
    audience: str | None = None
    nonce_override: str | None = None
    expired: bool = False
    issued: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.codes: dict[str, dict[str, Any]] = {}

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": "k1",
                    "use": "sig",
                    "alg": "RS256",
                    "n": _b64(numbers.n),
                    "e": _b64(numbers.e),
                }
            ]
        }

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.url,
                    "authorization_endpoint": f"{self.url}/authorize",
                    "token_endpoint": f"{self.url}/token",
                    "jwks_uri": f"{self.url}/jwks",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_basic",
                        "client_secret_post",
                    ],
                }
            )

        async def jwks(request: Request) -> Response:
            return JSONResponse(self.jwks())

        def issue_code(params: dict[str, str], login: str) -> Response:
            code = secrets.token_urlsafe(24)
            self.codes[code] = {**params, "login": login}
            target = (
                params["redirect_uri"] + "?" + urlencode({"code": code, "state": params["state"]})
            )
            return RedirectResponse(target, status_code=302)

        async def authorize(request: Request) -> Response:
            params = (
                dict(request.query_params)
                if request.method == "GET"
                else dict(await request.form())
            )
            if params.get("client_id") != CLIENT_ID or params.get("response_type") != "code":
                return JSONResponse({"error": "unauthorized_client"}, status_code=400)
            if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
                return JSONResponse(
                    {"error": "invalid_request", "error_description": "PKCE required"},
                    status_code=400,
                )
            if request.method == "POST":
                login = str(params.pop("login", ""))
                if login not in self.users:
                    return HTMLResponse("unknown user", status_code=403)
                return issue_code(params, login)
            if self.auto_login:
                return issue_code(params, self.auto_login)
            hidden = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                for k, v in params.items()
            )
            options = "".join(
                f'<button name="login" value="{html.escape(u)}">Sign in as {html.escape(u)}</button>'
                for u in self.users
            )
            return HTMLResponse(
                f"<!doctype html><title>Test IdP</title><h1>Test IdP</h1><form method='post' action='/authorize'>{hidden}{options}</form>"
            )

        async def token(request: Request) -> Response:
            form = dict(await request.form())
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
            header = request.headers.get("authorization", "")
            if header.startswith("Basic "):
                client_id, _, client_secret = base64.b64decode(header[6:]).decode().partition(":")
            if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            grant = self.codes.pop(str(form.get("code", "")), None)
            if grant is None or form.get("grant_type") != "authorization_code":
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            if form.get("redirect_uri") != grant["redirect_uri"]:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "redirect_uri"}, status_code=400
                )
            verifier = str(form.get("code_verifier", ""))
            challenge = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            if challenge != grant["code_challenge"]:
                return JSONResponse(
                    {"error": "invalid_grant", "error_description": "PKCE"}, status_code=400
                )
            now = int(time.time())
            claims = {
                "iss": self.url,
                "aud": self.audience or CLIENT_ID,
                "iat": now - (7200 if self.expired else 0),
                "exp": now + (-3600 if self.expired else 300),
                "nonce": self.nonce_override
                if self.nonce_override is not None
                else grant.get("nonce"),
                **self.users[grant["login"]],
            }
            if claims["nonce"] is None:
                del claims["nonce"]
            key = self.other_key if self.wrong_key else self.key
            id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
            self.issued.append(claims)
            return JSONResponse(
                {
                    "access_token": secrets.token_urlsafe(16),
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "id_token": id_token,
                }
            )

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/jwks", jwks),
                Route("/authorize", authorize, methods=["GET", "POST"]),
                Route("/token", token, methods=["POST"]),
            ]
        )


@contextlib.contextmanager
def run_provider(**kwargs: Any) -> Iterator[Provider]:
    provider = Provider(**kwargs)
    port = free_port()
    provider.url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(
        provider.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test OIDC provider did not start")
        time.sleep(0.02)
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(5)
