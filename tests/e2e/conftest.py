"""Whole-system fixtures: a moto server in auth mode, jitgate's real servers, real AWS clients.

One stack per xdist worker (session scope): a moto server that checks every SigV4 signature
and IAM permission, seeded with the demo data plus a few extra resources, and a jitgate
server (control plane + AWS endpoint, uvicorn in a thread) whose upstream is that moto.
Destructive tests build a throwaway jitgate of their own (``make_stack``) over the same moto;
nothing they do to jitgate's database reaches the shared stack.

Nothing here uses a fixed port or path, so the suite runs under ``pytest -n 2``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import ipaddress
import itertools
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jitgate.audit.flood import FailureThrottle
from jitgate.audit.log import StoredEvent
from jitgate.clock import SystemClock
from jitgate.config import load_settings
from jitgate.core import Jitgate, build, init_home
from jitgate.identity.service import Principal
from jitgate.sandbox.moto import (
    ACCOUNT_ID,
    REGION,
    MotoServer,
    free_port,
    seed_demo_data,
    start_moto,
)
from jitgate.server import Listeners, ServerThread, build_aws_endpoint
from jitgate.store.db import sqlite_url

VENV_BIN = Path(sys.executable).parent
AWS_CLI = str(VENV_BIN / "aws")
JITGATE_CLI = str(VENV_BIN / "jitgate")

OBJECT_ARN = "arn:aws:s3:::reports/2026/q3.csv"
BUCKET_ARN = "arn:aws:s3:::reports"
Q3_TEXT = "region,revenue\nnorth,1200\nsouth,950\neast,1310\nwest,870\n"


def table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"


def secret_arn(name: str) -> str:
    """A secret's ARN without its random suffix (covers calls by name and by full ARN)."""
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{name}"


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"


def topic_arn(name: str) -> str:
    return f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:{name}"


def object_arn(key: str, bucket: str = "reports") -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


@dataclasses.dataclass(frozen=True)
class Agent:
    name: str
    token: str


@dataclasses.dataclass(frozen=True)
class GrantInfo:
    id: str
    status: str
    agent: Agent
    credentials: dict[str, str] | None
    body: dict[str, Any]

    @property
    def creds(self) -> dict[str, str]:
        assert self.credentials is not None, f"grant {self.id} is {self.status}: no credentials"
        return self.credentials


_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test in this worker uses (xdist workers have stacks of their own)."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@dataclasses.dataclass
class Stack:
    """moto + a running jitgate over it, with helpers that act as agent, approver and client."""

    moto: MotoServer
    core: Jitgate
    home: Path
    control_url: str
    aws_url: str
    thread: ServerThread
    approver: Principal
    approver_token: str
    admin_token: str
    ca_file: str | None = None  # the certificate to trust when the AWS endpoint speaks TLS

    # --- identities and grants -----------------------------------------------------------
    def agent(self, prefix: str = "agent") -> Agent:
        name = unique(prefix)
        _, token = self.core.identity.create_agent(name)
        return Agent(name, token)

    def request_grant(
        self,
        actions: list[str],
        resources: list[str],
        *,
        agent: Agent | None = None,
        duration: int = 300,
        reason: str = "e2e test",
    ) -> GrantInfo:
        """POST /v1/grants as the agent (the real control-plane API); no approval."""
        agent = agent or self.agent()
        response = httpx.post(
            f"{self.control_url}/v1/grants",
            headers={"authorization": f"Bearer {agent.token}"},
            json={
                "actions": actions,
                "resources": resources,
                "duration_seconds": duration,
                "reason": reason,
            },
            timeout=10,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return GrantInfo(body["id"], body["status"], agent, body.get("credentials"), body)

    def fetch_grant(self, grant: GrantInfo) -> GrantInfo:
        response = httpx.get(
            f"{self.control_url}/v1/grants/{grant.id}",
            headers={"authorization": f"Bearer {grant.agent.token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return GrantInfo(body["id"], body["status"], grant.agent, body.get("credentials"), body)

    def grant(
        self,
        actions: list[str],
        resources: list[str],
        *,
        agent: Agent | None = None,
        duration: int = 300,
    ) -> GrantInfo:
        """A live grant: requested through the API, approved by a human if policy wants one."""
        grant = self.request_grant(actions, resources, agent=agent, duration=duration)
        if grant.status == "pending":
            self.core.grants.approve(self.approver, grant.id, "e2e")
            grant = self.fetch_grant(grant)
        assert grant.status == "active", grant.body
        return grant

    # --- clients ---------------------------------------------------------------------------
    def client(
        self,
        service: str,
        credentials: dict[str, str] | None,
        *,
        endpoint_url: str | None = None,
        **config: Any,
    ) -> Any:
        """A boto3 client pointed at jitgate's AWS endpoint, holding only ``credentials``
        (missing ones are filled with junk), without retries."""
        credentials = credentials or {}
        options: dict[str, Any] = {"retries": {"max_attempts": 1, "mode": "standard"}}
        options.update(config)
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=endpoint_url or self.aws_url,
            region_name=REGION,
            aws_access_key_id=credentials.get("AccessKeyId", "AKIANOTHING"),
            aws_secret_access_key=credentials.get("SecretAccessKey", "nothing"),
            aws_session_token=credentials.get("SessionToken"),
            config=Config(**options),
            verify=self.ca_file,
        )

    def direct(self, service: str) -> Any:
        """A client talking to moto directly as jitgate (to see what really happened)."""
        return self.moto.client(service)

    # --- the record ------------------------------------------------------------------------
    def events(self, grant_id: str | None = None, prefix: str = "call.") -> list[StoredEvent]:
        return self.core.audit.events(grant_id=grant_id, type_prefix=prefix, limit=10_000)

    def wait_events(
        self,
        grant_id: str | None,
        predicate: Callable[[list[StoredEvent]], bool],
        timeout: float = 5.0,
    ) -> list[StoredEvent]:
        """Call outcomes are written just after the response: poll until they are there."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(grant_id)
            if predicate(events) or time.monotonic() > deadline:
                return events
            time.sleep(0.02)

    def denial(self, request_id: str, timeout: float = 5.0) -> StoredEvent:
        """The call.denied event of the call the gateway answered with ``request_id``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.core.audit.events(
                types=["call.denied"], newest_first=True, limit=200
            ):
                if event.data.get("request_id") == request_id:
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no call.denied event for request {request_id}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.thread.stop()
        self.core.close()


def start_stack(
    moto: MotoServer,
    home: Path,
    *,
    upstream: str | None = None,
    credentials: Any = None,
    database_url: str | None = None,
    tls: tuple[Path, Path] | None = None,
    failures: FailureThrottle | None = None,
    shutdown_grace: float = 2.0,
    roles: dict[str, str] | None = None,
    bucket_accounts: dict[str, str] | None = None,
) -> Stack:
    """A running jitgate over a fresh ``home``; ``tls`` = (certificate, key) for the AWS
    endpoint."""
    init_home(home)
    settings = load_settings(home)
    # These tests fail authentication on purpose, hundreds of times a minute from 127.0.0.1,
    # and check each failure's own event: no flood limit here unless a test brings one.
    settings = dataclasses.replace(
        settings,
        database_url=database_url or sqlite_url(home / "jitgate.db"),
        failures_per_source=1_000_000,
        failures_overall=1_000_000,
        aws_bucket_accounts=bucket_accounts or {},
    )
    core = build(settings, SystemClock())
    endpoint = build_aws_endpoint(
        core,
        upstream_endpoint=upstream or moto.endpoint,
        credentials=credentials or moto.credentials,
        account_id=ACCOUNT_ID,
        failures=failures,
        roles=roles,
    )
    control, aws = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
    cert, key = (str(tls[0]), str(tls[1])) if tls else (None, None)
    thread = ServerThread(
        core, Listeners(control, aws, cert, key), endpoint, shutdown_grace=shutdown_grace
    ).start()
    _, approver_token = core.identity.create_user("approver", "approver")
    _, admin_token = core.identity.create_user("admin", "admin")
    return Stack(
        moto=moto,
        core=core,
        home=home,
        control_url=f"http://127.0.0.1:{control[1]}",
        aws_url=f"{'https' if tls else 'http'}://127.0.0.1:{aws[1]}",
        thread=thread,
        approver=core.identity.authenticate(approver_token),
        approver_token=approver_token,
        admin_token=admin_token,
        ca_file=cert,
    )


def self_signed_certificate(directory: Path, dns_names: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and ``dns_names``) and its key, in PEM files (the
    certificate is its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jitgate e2e")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                + [x509.DNSName(name) for name in dns_names]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def seed_extra(moto: MotoServer) -> dict[str, str]:
    """What the demo data lacks: a second table, a second queue, a topic, more secrets."""
    dynamodb = moto.client("dynamodb")
    dynamodb.create_table(  # type: ignore[attr-defined]
        TableName="customers",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="customers", Item={"id": {"S": "c-1"}, "name": {"S": "ann"}})  # type: ignore[attr-defined]
    moto.client("sqs").create_queue(QueueName="other")  # type: ignore[attr-defined]
    topic = moto.client("sns").create_topic(Name="alerts")["TopicArn"]  # type: ignore[attr-defined]
    secrets = moto.client("secretsmanager")
    secrets.create_secret(Name="prod/db-backup", SecretString="backup-password")  # type: ignore[attr-defined]
    secrets.create_secret(Name="prod/api", SecretString="api-key")  # type: ignore[attr-defined]
    role = moto.client("iam").create_role(  # type: ignore[attr-defined]
        RoleName="report-fn-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return 1\n")
    moto.client("lambda").create_function(  # type: ignore[attr-defined]
        FunctionName="report-fn",
        Runtime="python3.12",
        Role=role,
        Handler="index.handler",
        Code={"ZipFile": code.getvalue()},
    )
    return {"topic": topic}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = start_moto()
    try:
        seed_demo_data(server)
        seed_extra(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stack(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack of this worker. Tests use their own agents, grants and object keys."""
    built = start_stack(moto_server, tmp_path_factory.mktemp("jitgate-home"))
    try:
        yield built
    finally:
        built.stop()


@pytest.fixture
def make_stack(moto_server: MotoServer, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """``make_stack(**kwargs)``: a throwaway jitgate (own home and database) over the shared
    moto, for tests that break jitgate's database or need an upstream of their own."""
    started: list[Stack] = []

    def make(**kwargs: Any) -> Stack:
        home = tmp_path / f"home-{len(started)}"
        built = start_stack(moto_server, home, **kwargs)
        started.append(built)
        return built

    yield make
    for built in started:
        with contextlib.suppress(Exception):
            built.stop()


# --- the AWS CLI -----------------------------------------------------------------------------
@pytest.fixture
def aws_cli(tmp_path: Path, stack: Stack) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``aws_cli(credentials, *args)`` runs ``.venv/bin/aws`` against jitgate with only the
    grant's credentials in its environment (no host config or profile can leak in)."""
    config = tmp_path / "aws-config"
    shared = tmp_path / "aws-credentials"
    config.write_text("")
    shared.write_text("")

    def run(
        credentials: dict[str, str], *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "LANG": "C.UTF-8",
            "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(shared),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_RETRY_MODE": "standard",
            "AWS_PAGER": "",
        }
        result = subprocess.run(
            [AWS_CLI, "--endpoint-url", stack.aws_url, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"aws {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    return run
