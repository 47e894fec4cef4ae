"""Signing in to the console: argon2 passwords, sessions in signed HttpOnly SameSite cookies,
the rate limit on failures, session fixation, and that tokens never open the console."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from starlette.testclient import TestClient

from conftest import bearer
from jitgate.clock import FakeClock
from jitgate.core import Jitgate
from jitgate.identity import passwords
from jitgate.store.schema import console_sessions, users
from jitgate.web.sessions import PRE_COOKIE, SESSION_COOKIE

from .conftest import PASSWORD, csrf_of, set_cookie, sign_in


def post_login(client: TestClient, name: str, password: str) -> object:
    page = client.get("/ui/login")
    return client.post(
        "/ui/login",
        data={"csrf_token": csrf_of(page.text), "name": name, "password": password},
        follow_redirects=False,
    )


def test_passwords_are_argon2id_and_never_stored_plain(core: Jitgate, person) -> None:
    person("ann")
    with core.db.read() as connection:
        stored = connection.execute(
            select(users.c.password_hash).where(users.c.name == "ann")
        ).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert passwords.verify_password(stored, PASSWORD)
    assert not passwords.verify_password(stored, PASSWORD + "x")
    assert not passwords.verify_password(None, PASSWORD)  # no account: same work, still no


def test_sign_in_sets_a_signed_httponly_samesite_cookie(console: TestClient, person) -> None:
    person("ann")
    response = post_login(console, "ann", PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")
    )
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=lax" in cookie.lower() and "path=/ui" in cookie.lower()
    page = console.get("/ui/")
    assert page.status_code == 200 and "ann" in page.text and "Pending requests" in page.text
    # A forged or altered cookie value is refused (it is signed).
    value = console.cookies.get(SESSION_COOKIE)
    payload, timestamp, signature = value.rsplit(".", 2)
    flipped = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    set_cookie(console, SESSION_COOKIE, f"{payload}.{timestamp}.{flipped}")
    assert console.get("/ui/", follow_redirects=False).status_code == 303


def test_wrong_password_and_unknown_name_look_the_same(
    console: TestClient, core: Jitgate, person
) -> None:
    person("ann")
    for name, password in (("ann", "wrong password here"), ("nobody", PASSWORD)):
        response = post_login(console, name, password)
        assert response.status_code == 401
        assert "Wrong name or password." in response.text
    failed = core.audit.events(types=["auth.signin_failed"])
    assert [e.data["name"] for e in failed] == ["ann", "nobody"]
    assert console.get("/ui/", follow_redirects=False).status_code == 303


def test_failed_sign_ins_are_rate_limited(
    console: TestClient, core: Jitgate, person, clock: FakeClock
) -> None:
    person("ann")
    for _ in range(4):
        assert post_login(console, "ann", "not the password").status_code == 401
    locked = post_login(console, "ann", "not the password")
    assert locked.status_code == 429
    # Locked: even the right password is refused until the lock passes.
    again = post_login(console, "ann", PASSWORD)
    assert again.status_code == 429 and "Try again in" in again.text
    assert core.audit.events(types=["auth.locked"])
    clock.advance(minutes=16)
    assert post_login(console, "ann", PASSWORD).status_code == 303


def test_sessions_end_when_idle_expired_signed_out_or_disabled(
    console: TestClient,
    new_client: Callable[[], TestClient],
    core: Jitgate,
    person,
    clock: FakeClock,
) -> None:
    person("ann")
    csrf = sign_in(console, "ann")
    clock.advance(minutes=59)
    assert console.get("/ui/").status_code == 200  # activity keeps it alive
    clock.advance(minutes=61)
    assert console.get("/ui/", follow_redirects=False).status_code == 303  # idle for an hour

    csrf = sign_in(console, "ann")
    response = console.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert console.get("/ui/", follow_redirects=False).status_code == 303

    other = new_client()
    sign_in(other, "ann")
    core.identity.set_user_disabled("ann", True)
    assert other.get("/ui/", follow_redirects=False).status_code == 303
    with core.db.read() as connection:
        assert connection.execute(select(console_sessions)).all() == []


def test_session_fixation(
    console: TestClient, new_client: Callable[[], TestClient], person
) -> None:
    """Whatever the browser holds before signing in never becomes the signed-in session."""
    person("ann")
    attacker = new_client()
    attacker.get("/ui/login")
    planted_pre = attacker.cookies.get(PRE_COOKIE)
    # The attacker plants their pre-session cookie, and a made-up session cookie, in the victim's
    # browser; the victim signs in.
    set_cookie(console, PRE_COOKIE, planted_pre)
    set_cookie(console, SESSION_COOKIE, "attacker-chosen-value")
    page = console.get("/ui/login")
    response = console.post(
        "/ui/login",
        data={"csrf_token": csrf_of(page.text), "name": "ann", "password": PASSWORD},
        follow_redirects=False,
    )
    assert response.status_code == 303
    issued = console.cookies.get(SESSION_COOKIE)
    assert issued not in (None, "attacker-chosen-value")
    assert console.get("/ui/").status_code == 200
    # The attacker's cookies open nothing.
    assert attacker.get("/ui/", follow_redirects=False).status_code == 303
    # And a session from before a new sign-in is ended by it.
    old = issued
    sign_in(console, "ann")
    thief = new_client()
    set_cookie(thief, SESSION_COOKIE, old)
    assert thief.get("/ui/", follow_redirects=False).status_code == 303


def test_tokens_never_open_the_console(
    console: TestClient, agent_token, approver_token, core: Jitgate
) -> None:
    for token in (agent_token("robot"), approver_token("tok-ann")):
        response = console.get("/ui/", headers=bearer(token), follow_redirects=False)
        assert response.status_code == 401
        assert "API and agent tokens are not accepted here" in response.text
        assert console.get("/ui/fragments/inbox", headers=bearer(token)).status_code == 401
    # An agent name is no console account either.
    assert post_login(console, "robot", PASSWORD).status_code == 401


def test_an_agent_token_cannot_approve_through_the_api(
    api: TestClient, agent_token, core: Jitgate
) -> None:
    token = agent_token("robot")
    created = api.post(
        "/v1/grants",
        headers=bearer(token),
        json={
            "actions": ["s3:PutObject"],
            "resources": ["arn:aws:s3:::reports/2026/q3.csv"],
            "reason": "x",
        },
    ).json()
    for verb in ("approve", "deny"):
        response = api.post(f"/v1/grants/{created['id']}/{verb}", headers=bearer(token), json={})
        assert response.status_code == 403
        assert response.json()["message"] == "agents cannot approve or deny grants"


def test_next_is_never_an_open_redirect(console: TestClient, person) -> None:
    person("ann")
    for target in ("https://evil.example/", "//evil.example/ui/", "/v1/grants", "/ui\\..\\x"):
        page = console.get("/ui/login")
        response = console.post(
            "/ui/login",
            data={
                "csrf_token": csrf_of(page.text),
                "name": "ann",
                "password": PASSWORD,
                "next": target,
            },
            follow_redirects=False,
        )
        assert response.headers["location"] == "/ui/", target
        console.cookies.clear()


def test_security_headers(console: TestClient) -> None:
    response = console.get("/ui/login")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
