"""A whole jitgate stack for agent-side tests: moto in auth mode as AWS, jitgate's control plane
and AWS endpoint on free ports, an agent and an approver.

moto starts once per test process (it is slow to start and its demo data is only read, or
written under keys unique to a test); each test gets its own jitgate home, database and server.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import run_server, wait_for
from jitgate.clock import SystemClock
from jitgate.config import load_settings
from jitgate.core import Jitgate, build, init_home
from jitgate.identity.service import Principal
from jitgate.sandbox.moto import ACCOUNT_ID, MotoServer, seed_demo_data, start_moto
from jitgate.server import build_aws_endpoint
from jitgate.store.db import sqlite_url

OBJECT_ARN = "arn:aws:s3:::reports/2026/q3.csv"
BUCKET_ARN = "arn:aws:s3:::reports"
TABLE_ARN = f"arn:aws:dynamodb:us-east-1:{ACCOUNT_ID}:table/orders"
SECRET_ARN = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT_ID}:secret:prod/db"


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto server (auth mode, seeded with the demo data) for this test process."""
    server = start_moto()
    try:
        seed_demo_data(server)
        yield server
    finally:
        server.stop()


@dataclass
class Stack:
    url: str  # the control plane
    aws_url: str  # the AWS endpoint
    core: Jitgate
    home: Path
    agent: str
    token: str  # the agent's bearer token
    approver: Principal
    approver_token: str
    moto: MotoServer

    def approve_next(self, *, deny: bool = False, comment: str = "") -> threading.Thread:
        """In the background, decide the agent's next pending grant as the approver."""

        def decide() -> None:
            pending = wait_for(
                lambda: self.core.grants.list(self.approver, status="pending"), timeout=20
            )
            if pending:
                decide = self.core.grants.deny if deny else self.core.grants.approve
                decide(self.approver, pending[0].id, comment)

        thread = threading.Thread(target=decide, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def stack(tmp_path: Path, moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """jitgate (SQLite home in tmp_path, system clock) in front of ``moto``, serving."""
    home = tmp_path / "home"
    monkeypatch.setenv("JITGATE_HOME", str(home))
    monkeypatch.delenv("JITGATE_DATABASE_URL", raising=False)
    for name in (
        "JITGATE_URL",
        "JITGATE_TOKEN",
        "JITGATE_AWS_ENDPOINT",
        "JITGATE_WORKLOAD_TOKEN_FILE",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    init_home(home)
    settings = dataclasses.replace(
        load_settings(home), database_url=sqlite_url(home / "jitgate.db"), aws_account_id=ACCOUNT_ID
    )
    core = build(settings, SystemClock())
    endpoint = build_aws_endpoint(
        core, upstream_endpoint=moto.endpoint, credentials=moto.credentials, account_id=ACCOUNT_ID
    )
    _, token = core.identity.create_agent("reporter", ["analysts"])
    _, approver_token = core.identity.create_user("alice", "approver")
    approver = core.identity.authenticate(approver_token)
    try:
        with run_server(core, endpoint) as server:
            assert server.aws_url is not None
            yield Stack(
                server.url,
                server.aws_url,
                core,
                home,
                "reporter",
                token,
                approver,
                approver_token,
                moto,
            )
    finally:
        core.close()


@pytest.fixture
def messages() -> tuple[list[str], Callable[[str], None]]:
    """A progress sink for a Gate: (the list it fills, the callable to pass as progress=)."""
    said: list[str] = []
    return said, said.append
