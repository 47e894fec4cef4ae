"""Sign-in with an OpenID Connect provider that the tests start on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import build_core
from jitgate.api.app import create_control_app
from jitgate.clock import SystemClock
from jitgate.core import Jitgate
from jitgate.identity.oidc import OidcError, OidcSettings, identity_from_claims

from .conftest import PASSWORD, csrf_of
from .oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, run_provider

CAROL = {
    "sub": "u-123",
    "preferred_username": "carol",
    "email": "carol@example.com",
    "jitgate_role": "approver",
    "groups": ["security", "Not A Group!"],
}


@pytest.fixture
def provider() -> Iterator[Provider]:
    with run_provider(
        users={"carol": dict(CAROL), "nobody": {"sub": "u-9", "preferred_username": "nobody"}}
    ) as running:
        running.auto_login = "carol"
        yield running


@pytest.fixture
def sso(home: Path, database_url: str, provider: Provider) -> Iterator[Jitgate]:
    config = home / "jitgate.toml"
    config.write_text(
        config.read_text()
        + f"""
[oidc]
issuer = "{provider.url}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
role_claim = "jitgate_role"
groups_claim = "groups"
label = "Test IdP"
"""
    )
    core = build_core(home, database_url, SystemClock())  # ID tokens carry real time
    yield core
    core.close()


@pytest.fixture
def client(sso: Jitgate) -> Iterator[TestClient]:
    with TestClient(create_control_app(sso), base_url="http://testserver") as made:
        yield made


def start(client: TestClient) -> str:
    page = client.get("/ui/login")
    assert "Sign in with Test IdP" in page.text
    response = client.post(
        "/ui/oidc/start", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return response.headers["location"]


def through_provider(location: str) -> str:
    at_idp = httpx.get(location, follow_redirects=False)
    assert at_idp.status_code == 302, at_idp.text
    return at_idp.headers["location"].replace("http://testserver", "")


def sso_sign_in(client: TestClient) -> httpx.Response:
    return client.get(through_provider(start(client)), follow_redirects=False)


def test_first_sign_in_creates_the_person_with_role_and_groups(
    client: TestClient, sso: Jitgate, provider: Provider
) -> None:
    location = start(client)
    assert location.startswith(f"{provider.url}/authorize?")
    assert (
        "code_challenge_method=S256" in location and "nonce=" in location and "state=" in location
    )
    response = client.get(through_provider(location), follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and "carol" in page.text
    carol = sso.identity.user_principal("carol")
    assert (carol.role, carol.groups) == ("approver", ("security",))
    [created] = sso.audit.events(types=["user.created"])
    assert (
        created.actor == "system:oidc" and created.data["oidc_subject"] == f"{provider.url}|u-123"
    )
    [signin] = sso.audit.events(types=["auth.signin"])
    assert (signin.actor, signin.data["method"]) == ("user:carol", "oidc")


def test_role_and_groups_follow_the_provider(
    client: TestClient, sso: Jitgate, provider: Provider
) -> None:
    assert sso_sign_in(client).status_code == 303
    provider.users["carol"].update(jitgate_role=["auditor", "admin"], groups=["ops"])
    client.cookies.clear()
    assert sso_sign_in(client).status_code == 303
    carol = sso.identity.user_principal("carol")
    assert (carol.role, carol.groups) == ("admin", ("ops",))
    [updated] = sso.audit.events(types=["user.updated"])
    assert updated.data["from"] == {"role": "approver", "groups": ["security"]}


def test_no_role_no_entry(client: TestClient, sso: Jitgate, provider: Provider) -> None:
    provider.auto_login = "nobody"
    response = sso_sign_in(client)
    assert response.status_code == 403
    assert "gave no jitgate role" in response.text
    assert sso.identity.user_principal("nobody") is None
    assert client.get("/ui/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        ("wrong_key", True, "the ID token is not valid"),
        ("audience", "someone-else", "the ID token is not valid"),
        ("nonce_override", "replayed-nonce", "the ID token is not valid"),
        ("nonce_override", "", "the ID token is not valid"),
        ("expired", True, "the ID token is not valid"),
    ],
)
def test_bad_id_tokens_are_refused(
    client: TestClient, sso: Jitgate, provider: Provider, knob: str, value: object, message: str
) -> None:
    setattr(provider, knob, value)
    response = sso_sign_in(client)
    assert response.status_code == 403
    assert message in response.text
    assert sso.identity.user_principal("carol") is None
    assert sso.audit.events(types=["auth.signin_failed"])


def test_the_callback_belongs_to_the_browser_that_started(
    client: TestClient, sso: Jitgate, new_client_factory
) -> None:
    callback = through_provider(start(client))
    # Another browser (an attacker's link in the victim's browser) has no matching state.
    stranger = new_client_factory()
    refused = stranger.get(callback, follow_redirects=False)
    assert refused.status_code == 400 and "expired" in refused.text
    # A forged state in the right browser is refused too.
    forged = callback.replace("state=", "state=x")
    assert client.get(forged, follow_redirects=False).status_code == 403
    assert sso.identity.user_principal("carol") is None


def test_a_local_account_is_never_taken_over(client: TestClient, sso: Jitgate) -> None:
    sso.identity.create_user("carol", "admin", password=PASSWORD)
    response = sso_sign_in(client)
    assert response.status_code == 403
    assert "already belongs to a local account" in response.text
    assert sso.identity.user_principal("carol").role == "admin"


def test_sso_start_needs_the_sign_in_forms_token(client: TestClient) -> None:
    client.get("/ui/login")
    assert client.post("/ui/oidc/start", data={}, follow_redirects=False).status_code == 403
    assert (
        client.post("/ui/oidc/start", data={"csrf_token": "x"}, follow_redirects=False).status_code
        == 403
    )


def test_identity_from_claims_rules() -> None:
    settings = OidcSettings("https://idp", "c", "s", role_map={"sec-leads": "admin"})
    who = identity_from_claims(
        settings,
        {"sub": "1", "preferred_username": "Dana.Q@Example.com", "jitgate_role": "sec-leads"},
    )
    assert (who.name, who.role, who.subject) == ("dana.q-example.com", "admin", "https://idp|1")
    with pytest.raises(OidcError, match="gave no jitgate role"):
        identity_from_claims(settings, {"sub": "1", "jitgate_role": "root"})
    with pytest.raises(OidcError, match="no subject"):
        identity_from_claims(settings, {"jitgate_role": "admin"})


@pytest.fixture
def new_client_factory(sso: Jitgate) -> Iterator:
    opened: list[TestClient] = []
    app = create_control_app(sso)

    def make() -> TestClient:
        made = TestClient(app, base_url="http://testserver")
        made.__enter__()
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.__exit__(None, None, None)
