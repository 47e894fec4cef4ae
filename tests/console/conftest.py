"""Console fixtures: people with passwords, signed-in browsers-in-a-test-client, and (for the
slow tests) a whole stack — moto in auth mode, jitgate's two listeners, headless Chromium.

The browser is Debian's ``chromium`` driven by Playwright's Python package through
``executable_path``; no browser is ever downloaded. Screenshots go to ``artifacts/`` at the
repository root (gitignored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from jitgate.api.app import create_control_app
from jitgate.clock import SystemClock
from jitgate.config import load_settings
from jitgate.core import Jitgate, build, init_home
from jitgate.identity.service import Principal

PASSWORD = "correct horse battery staple"
OBJECT_ARN = "arn:aws:s3:::reports/2026/q3.csv"
WRITE = (["s3:PutObject"], [OBJECT_ARN])  # needs one approval under the default policy
READ = (["s3:GetObject"], [OBJECT_ARN])  # issued at once under the default policy

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def console(core: Jitgate) -> Iterator[TestClient]:
    """A TestClient over the control app (the console is mounted at /ui); cookies persist."""
    with TestClient(create_control_app(core), base_url="http://testserver") as client:
        yield client


@pytest.fixture
def new_client(core: Jitgate) -> Iterator[Callable[[], TestClient]]:
    """More clients over the same app: a second browser, an attacker's browser."""
    opened: list[TestClient] = []
    app = create_control_app(core)

    def make() -> TestClient:
        client = TestClient(app, base_url="http://testserver")
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def person(core: Jitgate) -> Callable[..., Principal]:
    """``person(name, role="approver", groups=())`` creates someone with password PASSWORD."""

    def make(name: str, role: str = "approver", groups: tuple[str, ...] = ()) -> Principal:
        core.identity.create_user(name, role, groups=list(groups), password=PASSWORD)
        principal = core.identity.user_principal(name)
        assert principal is not None
        return principal

    return make


def set_cookie(client: TestClient, name: str, value: str) -> None:
    """Put a cookie in a test client's jar as the server would have (host testserver)."""
    client.cookies.set(name, value, domain="testserver.local", path="/ui")


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> str:
    """Sign in through the form like a person; returns the session's CSRF token."""
    page = client.get("/ui/login")
    assert page.status_code == 200, page.text
    response = client.post(
        "/ui/login",
        data={"csrf_token": csrf_of(page.text), "name": name, "password": password, "next": "/ui/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    inbox = client.get("/ui/")
    assert inbox.status_code == 200
    return csrf_of(inbox.text)


@pytest.fixture
def agent(core: Jitgate) -> Principal:
    """Agent "bot" (no owner), authenticated."""
    _, token = core.identity.create_agent("bot", ["analytics"])
    return core.identity.authenticate(token)


def request_grant(
    core: Jitgate, agent: Principal, scope: tuple[list[str], list[str]] = WRITE, **kw: Any
) -> Any:
    grant, _ = core.grants.request(
        agent, actions=scope[0], resources=scope[1], reason=kw.pop("reason", "fix a typo"), **kw
    )
    return grant


# --- the whole stack, for browser and gateway tests ---------------------------------------------
@dataclasses.dataclass
class Stack:
    core: Jitgate
    control_url: str
    aws_url: str
    moto: Any

    def s3(self, credentials: dict[str, str]) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.aws_url,
            region_name="us-east-1",
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    from jitgate.sandbox.moto import seed_demo_data, start_moto

    server = start_moto()
    try:
        seed_demo_data(server)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def start_stack(
    moto: Any, home: Path, policy_extra: str = "", raw_config: str = ""
) -> Iterator[Stack]:
    from jitgate.sandbox.moto import ACCOUNT_ID, free_port
    from jitgate.server import Listeners, ServerThread, build_aws_endpoint
    from jitgate.store.db import sqlite_url

    init_home(home)
    if policy_extra:
        policy = home / "policy.cedar"
        policy.write_text(policy.read_text() + policy_extra)
    if raw_config:
        config = home / "jitgate.toml"
        config.write_text(config.read_text() + raw_config)
    settings = dataclasses.replace(
        load_settings(home), database_url=sqlite_url(home / "jitgate.db")
    )
    core = build(settings, SystemClock())
    endpoint = build_aws_endpoint(
        core, upstream_endpoint=moto.endpoint, credentials=moto.credentials, account_id=ACCOUNT_ID
    )
    control, aws = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
    thread = ServerThread(core, Listeners(control, aws), endpoint).start()
    try:
        yield Stack(core, f"http://127.0.0.1:{control[1]}", f"http://127.0.0.1:{aws[1]}", moto)
    finally:
        thread.stop()
        core.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright (never a downloaded browser).

    Module-scoped: Playwright's sync API keeps an event loop marked running in this thread
    while it is open, and any later test of the same worker that calls asyncio.run would fail
    ("cannot be called from a running event loop")."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
