"""CSRF: every state-changing console route refuses a post without the session's token, with
another session's token, or from another origin — and the test knows every such route."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.routing import Mount
from starlette.testclient import TestClient

from jitgate.api.app import create_control_app
from jitgate.core import Jitgate
from jitgate.identity.service import Principal

from .conftest import PASSWORD, csrf_of, request_grant, sign_in

PAGES = [
    "/ui/",
    "/ui/grants",
    "/ui/grants?status=active",
    "/ui/agents",
    "/ui/users",
    "/ui/audit",
    "/ui/policy",
]


def console_post_routes(core: Jitgate) -> set[str]:
    app = create_control_app(core)
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/ui")
    return {
        "/ui" + route.path
        for route in mount.app.routes  # type: ignore[attr-defined]
        if "POST" in (getattr(route, "methods", None) or set())
    }


@pytest.fixture
def world(core: Jitgate, person, agent: Principal) -> dict[str, Any]:
    person("root", "admin")
    person("ann")
    person("victim", "auditor")
    pending = request_grant(core, agent)
    other = request_grant(core, agent)
    active = request_grant(core, agent, (["s3:GetObject"], ["arn:aws:s3:::reports/2026/q3.csv"]))
    return {"pending": pending, "other": other, "active": active}


def cases(world: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """Route template -> (a concrete path, the form fields besides the token)."""
    pending, active = world["pending"], world["active"]
    return {
        "/ui/login": ("/ui/login", {"name": "ann", "password": PASSWORD}),
        "/ui/logout": ("/ui/logout", {}),
        "/ui/grants/{grant_id}/approve": (
            f"/ui/grants/{pending.id}/approve",
            {"fingerprint": pending.fingerprint, "comment": "csrf"},
        ),
        "/ui/grants/{grant_id}/deny": (f"/ui/grants/{world['other'].id}/deny", {"comment": "csrf"}),
        "/ui/grants/{grant_id}/revoke": (f"/ui/grants/{active.id}/revoke", {"comment": "csrf"}),
        "/ui/agents": ("/ui/agents", {"name": "planted-agent", "groups": "", "owner": ""}),
        "/ui/agents/{name}/{verb}": ("/ui/agents/bot/disable", {}),
        "/ui/users": (
            "/ui/users",
            {"name": "planted-admin", "role": "admin", "password": PASSWORD},
        ),
        "/ui/users/{name}/{verb}": (
            "/ui/users/victim/password",
            {"password": "attacker password 1"},
        ),
        "/ui/policy/explain": (
            "/ui/policy/explain",
            {"agent": "bot", "actions": "s3:GetObject", "resources": "arn:aws:s3:::reports/a"},
        ),
        "/ui/oidc/start": ("/ui/oidc/start", {}),
    }


def state(core: Jitgate) -> list[tuple[str, str]]:
    """Everything a successful post would change shows up as a new audit event."""
    return [
        (e.type, e.actor)
        for e in core.audit.events(limit=10_000)
        if e.type not in ("access.denied", "auth.signin_failed")
    ]


def test_every_post_route_is_covered(core: Jitgate, world: dict[str, Any]) -> None:
    assert console_post_routes(core) == set(cases(world))


@pytest.mark.parametrize(
    "attack",
    [
        "no token",
        "empty token",
        "another session's token",
        "login token",
        "cross-origin",
        "cross-site fetch",
    ],
)
def test_forged_posts_are_refused(
    attack: str,
    core: Jitgate,
    world: dict[str, Any],
    console: TestClient,
    new_client: Callable[[], TestClient],
) -> None:
    own = sign_in(console, "root")
    other = sign_in(new_client(), "ann")
    login_token = csrf_of(new_client().get("/ui/login").text)
    for template, (path, fields) in cases(world).items():
        if template == "/ui/oidc/start":
            continue  # covered in test_oidc.py, where single sign-on is configured
        token = {
            "no token": None,
            "empty token": "",
            "another session's token": other,
            "login token": login_token,
            "cross-origin": own,
            "cross-site fetch": own,
        }[attack]
        if template == "/ui/login" and attack in ("another session's token", "login token"):
            token = own  # the session token is not the sign-in form's token
        headers = {}
        if attack == "cross-origin":
            headers["origin"] = "https://evil.example"
        if attack == "cross-site fetch":
            headers["sec-fetch-site"] = "cross-site"
        data = dict(fields)
        if token is not None:
            data["csrf_token"] = token
        before = state(core)
        response = console.post(path, data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403, (template, attack, response.status_code)
        assert state(core) == before, (template, attack)
        assert console.get("/ui/", follow_redirects=False).status_code == 200  # still signed in


def test_the_right_token_works(core: Jitgate, world: dict[str, Any], console: TestClient) -> None:
    """The positive control: the same posts with the session's token do what they say."""
    token = sign_in(console, "root")
    for template, (path, fields) in cases(world).items():
        if template in ("/ui/login", "/ui/logout", "/ui/oidc/start"):
            continue
        response = console.post(
            path,
            data={**fields, "csrf_token": token},
            headers={"origin": "http://testserver"},
            follow_redirects=False,
        )
        assert response.status_code in (200, 303), (
            template,
            response.status_code,
            response.text[:500],
        )
    types = [e.type for e in core.audit.events(limit=10_000)]
    for expected in (
        "grant.approved",
        "grant.denied",
        "grant.revoked",
        "agent.created",
        "agent.disabled",
        "user.created",
        "user.password_set",
    ):
        assert expected in types


def test_every_form_on_every_page_carries_the_token(
    core: Jitgate, world: dict[str, Any], console: TestClient
) -> None:
    token = sign_in(console, "root")
    pages = [*PAGES, f"/ui/grants/{world['pending'].id}", f"/ui/grants/{world['active'].id}"]
    seen = 0
    for path in pages:
        html = console.get(path).text
        for form in re.findall(r"<form\b.*?</form>", html, flags=re.S):
            if 'method="post"' not in form:
                continue
            seen += 1
            assert f'name="csrf_token" value="{token}"' in form, (path, form[:200])
    assert seen >= 10
    login = TestClient(create_control_app(core), base_url="http://testserver").get("/ui/login").text
    assert 'name="csrf_token"' in login
