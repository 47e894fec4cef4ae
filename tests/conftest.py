"""Shared fixtures: real databases, an initialised home, the composed services, the HTTP API.

Every fixture that touches a database is parametrized by ``database_url`` and so runs twice:
on a SQLite file in the test's own tmp_path, and on the PostgreSQL named by
``JITGATE_TEST_DATABASE_URL`` (skipped when unset) in a schema of its own that is dropped
afterwards. Nothing here uses a fixed port or path, so the suite runs under ``pytest -n 2``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

with warnings.catch_warnings():
    # starlette asks for "httpx2"; the TestClient works the same on httpx.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from jitgate.api.app import create_control_app
from jitgate.clock import Clock, FakeClock, SystemClock
from jitgate.config import load_settings
from jitgate.core import Jitgate, build, init_home
from jitgate.store.db import sqlite_url

PG_ENV = "JITGATE_TEST_DATABASE_URL"

# A resource the default policy auto-approves, and the bucket it lives in.
OBJECT_ARN = "arn:aws:s3:::reports/2026/q3.csv"
BUCKET_ARN = "arn:aws:s3:::reports"


def libpq_url(sqlalchemy_url: str) -> str:
    """The plain libpq URL (``postgresql://...``) behind a ``postgresql+psycopg://`` URL."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def pg_schema(base_url: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL at ``base_url``; yields a URL whose connections use
    only that schema (``options=-csearch_path=<schema>``), and drops it afterwards."""
    import psycopg

    schema = "jg_" + secrets.token_hex(6)
    admin = libpq_url(base_url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL for an empty database of its own, once per backend.

    ``sqlite``: a file ``jitgate.db`` in this test's tmp_path (WAL mode, as in production).
    ``postgresql``: a fresh schema on the server named by ``JITGATE_TEST_DATABASE_URL`` (a
    ``postgresql+psycopg://`` URL), selected through ``options=-csearch_path=<schema>`` and
    dropped after the test; skipped when the variable is unset.
    """
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "jitgate.db")
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set")
    with pg_schema(base) as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    """A FakeClock at 2026-11-28T12:00:00Z; tests move it with ``clock.advance(seconds)``."""
    return FakeClock()


@pytest.fixture
def home(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialised ``$JITGATE_HOME`` (jitgate.toml, policy.cedar, master.key, migrated DB).

    The environment points at it for the test: ``JITGATE_HOME`` is this directory and
    ``JITGATE_DATABASE_URL`` is ``database_url``, so ``load_settings()`` and the CLI in local
    mode use the same database as the ``core`` fixture.
    """
    path = tmp_path / "home"
    monkeypatch.setenv("JITGATE_HOME", str(path))
    monkeypatch.setenv("JITGATE_DATABASE_URL", database_url)
    monkeypatch.delenv("JITGATE_URL", raising=False)
    monkeypatch.delenv("JITGATE_TOKEN", raising=False)
    init_home(path)
    return path


def build_core(home: Path, database_url: str, clock: Clock, **overrides: Any) -> Jitgate:
    """Compose jitgate from ``home``'s settings with ``database_url`` (and any other
    Settings fields in ``overrides``) swapped in. The caller closes it."""
    settings = dataclasses.replace(load_settings(home), database_url=database_url, **overrides)
    return build(settings, clock)


@pytest.fixture
def core(home: Path, database_url: str, clock: FakeClock) -> Iterator[Jitgate]:
    """The composed services (``jitgate.core.build``) over ``home`` and ``database_url``,
    driven by the FakeClock ``clock``; closed after the test."""
    built = build_core(home, database_url, clock)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def api(core: Jitgate) -> Iterator[TestClient]:
    """A starlette TestClient over the control-plane app for ``core``. Server-side exceptions
    are raised in the test (a 500 is a bug)."""
    with TestClient(create_control_app(core)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a bearer token."""
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def agent_token(core: Jitgate) -> Callable[..., str]:
    """``agent_token(name="agent-1", groups=())`` creates an agent and returns its token."""

    def make(name: str = "agent-1", groups: tuple[str, ...] | list[str] = ()) -> str:
        _, token = core.identity.create_agent(name, list(groups))
        return token

    return make


def _user_token_factory(core: Jitgate, role: str, default_name: str) -> Callable[..., str]:
    def make(name: str = default_name) -> str:
        _, token = core.identity.create_user(name, role)
        return token

    return make


@pytest.fixture
def approver_token(core: Jitgate) -> Callable[..., str]:
    """``approver_token(name="approver-1")`` creates a user with role approver; returns the token."""
    return _user_token_factory(core, "approver", "approver-1")


@pytest.fixture
def admin_token(core: Jitgate) -> Callable[..., str]:
    """``admin_token(name="admin-1")`` creates a user with role admin; returns the token."""
    return _user_token_factory(core, "admin", "admin-1")


@pytest.fixture
def auditor_token(core: Jitgate) -> Callable[..., str]:
    """``auditor_token(name="auditor-1")`` creates a user with role auditor; returns the token."""
    return _user_token_factory(core, "auditor", "auditor-1")


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A real jitgate server (``jitgate.server.serve``: uvicorn plus the sweeper) in a thread."""

    url: str
    core: Jitgate
    aws_url: str | None = None


@contextlib.contextmanager
def run_server(core: Jitgate, endpoint: Any = None) -> Iterator[LiveServer]:
    """Serve ``core``'s control plane (and ``endpoint``, an AWS endpoint app, when given) on
    free ports in a background thread until the block ends."""
    from jitgate.server import Listeners, ServerThread

    control = ("127.0.0.1", free_port())
    aws = ("127.0.0.1", free_port()) if endpoint is not None else None
    thread = ServerThread(core, Listeners(control=control, aws=aws), endpoint=endpoint).start()
    try:
        yield LiveServer(
            f"http://{control[0]}:{control[1]}",
            core,
            f"http://{aws[0]}:{aws[1]}" if aws else None,
        )
    finally:
        thread.stop()


@pytest.fixture
def live_server(home: Path, database_url: str) -> Iterator[LiveServer]:
    """A real server over ``home`` and ``database_url`` with the system clock, on a free port.

    ``live_server.url`` is its base URL and ``live_server.core`` the services behind it (use
    ``live_server.core.identity`` to make tokens). Tests using it are end-to-end: mark them
    ``@pytest.mark.slow``.
    """
    built = build_core(home, database_url, SystemClock())
    try:
        with run_server(built) as server:
            yield server
    finally:
        built.close()


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes
    (returns the last falsy value). For waiting on another thread, process or server, never
    for time to pass: expiry and lapse are tested with the FakeClock."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
