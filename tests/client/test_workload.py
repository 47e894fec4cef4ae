"""Workload identity: OIDC JWTs from keys made here, a JWKS served locally, exchanged at
``POST /v1/auth/workload`` for agent sessions; every bad token refused and recorded."""

from __future__ import annotations

import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from conftest import OBJECT_ARN, bearer, build_core
from jitgate.api.app import create_control_app
from jitgate.clock import SystemClock
from jitgate.core import Jitgate
from jitgate.errors import InvalidRequest
from jitgate.identity.workload import load_workload_settings

GITHUB = "https://token.actions.githubusercontent.com"
CLUSTER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "https://jitgate.example.com"


class Jwks:
    """Signing keys made in the test, their public JWKS served on loopback."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.keys: list[dict[str, Any]] = []
        for kid, key, alg in (("rsa-1", self.rsa, "RS256"), ("ec-1", self.ec, "ES256")):
            algorithm = jwt.get_algorithm_by_name(alg)
            jwk = json.loads(algorithm.to_jwk(key.public_key()))
            self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})
        body = json.dumps({"keys": self.keys}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def token(
        self,
        sub: str,
        *,
        iss: str = GITHUB,
        aud: str = AUDIENCE,
        lifetime: int = 300,
        age: int = 0,
        kid: str = "rsa-1",
        key: Any = None,
        alg: str = "RS256",
        drop: tuple[str, ...] = (),
        **extra: Any,
    ) -> str:
        now = int(time.time()) - age
        claims = {
            "iss": iss,
            "aud": aud,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            **extra,
        }
        for name in drop:
            claims.pop(name)
        signing = key if key is not None else (self.ec if alg == "ES256" else self.rsa)
        return jwt.encode(claims, signing, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    yield served
    served.close()


def config(jwks_url: str) -> str:
    return f"""
[workload_identity]
session_minutes = 30

[[workload_identity.issuers]]
name = "github-actions"
issuer = "{GITHUB}"
jwks_url = "{jwks_url}"
audience = "{AUDIENCE}"
algorithms = ["RS256"]
max_token_lifetime = "1h"

[[workload_identity.issuers.agents]]
agent = "reports-ci"
claims = {{ sub = "repo:acme/reports:ref:refs/heads/main" }}

[[workload_identity.issuers.agents]]
agent = "reports-ci-any"
claims = {{ repository = "acme/reports", sub = "repo:acme/reports:environment:*" }}

[[workload_identity.issuers]]
name = "cluster"
issuer = "{CLUSTER}"
jwks_url = "{jwks_url}"
audience = "{AUDIENCE}"
algorithms = ["ES256"]
require_jti = false

[[workload_identity.issuers.agents]]
agent = "k8s-reporter"
claims = {{ sub = "system:serviceaccount:reports:reporter" }}

[[workload_identity.issuers.agents]]
agent = "spiffe-reporter"
claims = {{ sub = "spiffe://example.org/ns/reports/sa/*" }}
"""


@pytest.fixture
def wcore(home: Path, database_url: str, jwks: Jwks) -> Iterator[Jitgate]:
    """jitgate with two trusted issuers and four mapped agents, on the system clock (JWTs carry
    real time)."""
    with (home / "jitgate.toml").open("a", encoding="utf-8") as handle:
        handle.write(config(jwks.url))
    core = build_core(home, database_url, SystemClock())
    for name in ("reports-ci", "reports-ci-any", "k8s-reporter", "spiffe-reporter"):
        core.identity.create_agent(name)
    try:
        yield core
    finally:
        core.close()


@pytest.fixture
def wapi(wcore: Jitgate) -> Iterator[TestClient]:
    with TestClient(create_control_app(wcore)) as client:
        yield client


Exchange = Callable[[str], Any]


@pytest.fixture
def exchange(wapi: TestClient) -> Exchange:
    return lambda token: wapi.post("/v1/auth/workload", json={"token": token})


def refusals(core: Jitgate) -> list[str]:
    return [e.data["reason"] for e in core.audit.events(types=["auth.workload_refused"], limit=100)]


def test_a_github_actions_token_becomes_an_agent_session(
    wcore: Jitgate, wapi: TestClient, jwks: Jwks, exchange: Exchange
) -> None:
    token = jwks.token("repo:acme/reports:ref:refs/heads/main", repository="acme/reports")
    response = exchange(token)
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["agent"] == "reports-ci" and session["token"].startswith("jgw_")
    assert wcore.identity.authenticate(session["token"]).name == "reports-ci"
    granted = wapi.post(
        "/v1/grants",
        json={"actions": ["s3:GetObject"], "resources": [OBJECT_ARN], "reason": "ci report"},
        headers=bearer(session["token"]),
    )
    assert granted.status_code == 201 and granted.json()["agent"] == "reports-ci"
    assert "credentials" in granted.json()  # the agent itself, so it gets credentials
    (event,) = wcore.audit.events(types=["auth.workload"], limit=10)
    assert event.agent == "reports-ci"
    assert event.data["subject"] == "repo:acme/reports:ref:refs/heads/main"
    assert token not in json.dumps(event.data)  # the JWT itself is never recorded

    # Replayed: refused, and recorded.
    again = exchange(token)
    assert again.status_code == 401 and again.json()["error"] == "workload_token_refused"
    assert "already used" in again.json()["message"]
    assert refusals(wcore) == ["replay"]


def test_claim_globs_kubernetes_and_spiffe(jwks: Jwks, exchange: Exchange) -> None:
    env = jwks.token("repo:acme/reports:environment:prod", repository="acme/reports")
    assert exchange(env).json()["agent"] == "reports-ci-any"
    k8s = jwks.token(
        "system:serviceaccount:reports:reporter",
        iss=CLUSTER,
        alg="ES256",
        kid="ec-1",
        drop=("jti",),
    )
    assert exchange(k8s).json()["agent"] == "k8s-reporter"
    spiffe = jwks.token(
        "spiffe://example.org/ns/reports/sa/nightly", iss=CLUSTER, alg="ES256", kid="ec-1"
    )
    assert exchange(spiffe).json()["agent"] == "spiffe-reporter"
    # Without a jti, the token's hash is its replay key.
    assert exchange(k8s).status_code == 401


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda j: j.token(
                "repo:acme/reports:ref:refs/heads/main",
                key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ),
            "signature",
        ),
        (
            lambda j: j.token("repo:acme/reports:ref:refs/heads/main", age=900, lifetime=300),
            "expired",
        ),
        (
            lambda j: j.token(
                "repo:acme/reports:ref:refs/heads/main", aud="https://elsewhere.example.com"
            ),
            "audience",
        ),
        (
            lambda j: j.token(
                "repo:acme/reports:ref:refs/heads/main", iss="https://evil.example.com"
            ),
            "unknown_issuer",
        ),
        (lambda j: j.token("repo:acme/other:ref:refs/heads/main"), "no_mapping"),
        (lambda j: j.token("repo:acme/reports:ref:refs/heads/main", lifetime=7200), "lifetime"),
        (lambda j: j.token("repo:acme/reports:ref:refs/heads/main", drop=("jti",)), "claims"),
        (lambda j: j.token("repo:acme/reports:ref:refs/heads/main", kid="nope"), "unknown_key"),
        (lambda j: j.token("system:serviceaccount:reports:reporter", iss=CLUSTER), "algorithm"),
        (
            lambda j: jwt.encode(
                {"iss": GITHUB, "sub": "repo:acme/reports:ref:refs/heads/main", "aud": AUDIENCE},
                None,
                algorithm="none",
            ),
            "algorithm",
        ),
        (
            lambda j: jwt.encode(
                {"iss": GITHUB, "sub": "x", "aud": AUDIENCE},
                "secret-secret-secret-secret-32b!",
                algorithm="HS256",
                headers={"kid": "rsa-1"},
            ),
            "algorithm",
        ),
        (lambda j: "not.a.jwt", "malformed"),
    ],
    ids=[
        "forged",
        "expired",
        "wrong-audience",
        "unknown-issuer",
        "no-mapping",
        "too-long",
        "no-jti",
        "unknown-kid",
        "wrong-alg",
        "alg-none",
        "hmac",
        "garbage",
    ],
)
def test_bad_tokens_are_refused_and_recorded(
    wcore: Jitgate, jwks: Jwks, exchange: Exchange, make: Callable[[Jwks], str], reason: str
) -> None:
    response = exchange(make(jwks))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "workload_token_refused"
    assert refusals(wcore) == [reason]
    assert wcore.audit.events(types=["auth.workload"], limit=10) == []
    assert wcore.audit.verify().ok


def test_disabled_agents_lose_their_sessions(
    wcore: Jitgate, jwks: Jwks, exchange: Exchange, wapi: TestClient
) -> None:
    session = exchange(jwks.token("repo:acme/reports:ref:refs/heads/main")).json()["token"]
    assert wapi.get("/v1/grants", headers=bearer(session)).status_code == 200
    wcore.identity.set_agent_disabled("reports-ci", True)
    assert wapi.get("/v1/grants", headers=bearer(session)).status_code == 401
    refused = exchange(jwks.token("repo:acme/reports:ref:refs/heads/main"))
    assert refused.status_code == 401 and refusals(wcore) == ["agent_disabled"]
    assert (
        wapi.get("/v1/grants", headers=bearer("jgw_AAAAAAAAAAAAAAAA_" + "x" * 43)).status_code
        == 401
    )


def test_not_configured_and_bad_bodies(api: TestClient, wapi: TestClient) -> None:
    assert api.post("/v1/auth/workload", json={"token": "x"}).status_code == 404
    assert wapi.post("/v1/auth/workload", json={"token": ""}).status_code == 401
    assert wapi.post("/v1/auth/workload", json={"jwt": "x"}).status_code == 400


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        ('algorithms = ["HS256"]', "pin asymmetric algorithms"),
        ('algorithms = ["none"]', "pin asymmetric algorithms"),
        ('jwks_url = "http://keys.example.com/jwks"', "must be https"),
        ('agents = [{ agent = "a", claims = { sub = "*" } }]', "matches every token"),
        ('agents = [{ agent = "a" }]', "claims table"),
    ],
)
def test_unsafe_configuration_is_refused(snippet: str, problem: str) -> None:
    import tomllib

    entry = {
        "name": "x",
        "issuer": "https://issuer.example.com",
        "jwks_url": "https://issuer.example.com/jwks",
        "audience": "jitgate",
    }
    entry.update(tomllib.loads(snippet))
    with pytest.raises(InvalidRequest, match=problem):
        load_workload_settings({"workload_identity": {"issuers": [entry]}})


@pytest.mark.slow
def test_the_sdk_and_credentials_authenticate_with_a_token_file(
    wcore: Jitgate, jwks: Jwks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import jitgate.cli as cli
    from conftest import run_server
    from jitgate.client import Gate, token_file

    path = tmp_path / "token"
    path.write_text(
        jwks.token("system:serviceaccount:reports:reporter", iss=CLUSTER, alg="ES256", kid="ec-1")
    )
    with run_server(wcore) as server:
        with Gate(server.url, workload_token=token_file(path), progress=None) as gate:
            grant = gate.request(["s3:GetObject"], [OBJECT_ARN], reason="nightly report")
            assert grant.agent == "k8s-reporter" and grant.credentials is not None
            # The platform rotates the file; once the session nears its end the SDK exchanges
            # the fresh token (the old one could not be exchanged again).
            path.write_text(
                jwks.token(
                    "system:serviceaccount:reports:reporter", iss=CLUSTER, alg="ES256", kid="ec-1"
                )
            )
            assert gate.settings.workload is not None
            gate.settings.workload.expires_at = None
            assert [g.id for g in gate.list_grants()] == [grant.id]
        assert len(wcore.audit.events(types=["auth.workload"], limit=10)) == 2

        path.write_text(
            jwks.token(
                "system:serviceaccount:reports:reporter", iss=CLUSTER, alg="ES256", kid="ec-1"
            )
        )
        monkeypatch.setenv("JITGATE_WORKLOAD_TOKEN_FILE", str(path))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.delenv("JITGATE_TOKEN", raising=False)
        args = [
            "credentials",
            "--server",
            server.url,
            "-a",
            "s3:GetObject",
            "-r",
            OBJECT_ARN,
            "--reason",
            "cli",
        ]
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["Version"] == 1
        # The same file again: the spent token is not exchanged again; the session it was
        # exchanged for is reused (kept 0600 beside the grant ids).
        again = CliRunner().invoke(cli.app, args)
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["AccessKeyId"] == json.loads(result.stdout)["AccessKeyId"]
        (saved,) = (tmp_path / "cache" / "jitgate" / "credential-process").glob("session-*.json")
        assert saved.stat().st_mode & 0o077 == 0
        saved.unlink()  # without it, the spent token is refused as a replay, and recorded
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 1 and "already used" in result.stderr
        assert refusals(wcore) == ["replay"]
