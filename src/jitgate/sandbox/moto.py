"""Start a moto server in its auth mode, give jitgate an IAM identity in it, seed demo data.

moto's ``INITIAL_NO_AUTH_ACTION_COUNT`` lets the first few calls through unsigned; we spend
them creating jitgate's own IAM user and access key, and from then on moto checks every
request's SigV4 signature and IAM permissions, like AWS. Anything jitgate forwards must
therefore be correctly re-signed with jitgate's key.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import boto3
from botocore.credentials import Credentials

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
_BOOTSTRAP_CALLS = 3  # CreateUser, PutUserPolicy, CreateAccessKey

ADMIN_POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)

DEMO_OBJECTS = {
    "2026/q3.csv": "region,revenue\nnorth,1200\nsouth,950\neast,1310\nwest,870\n",
    "2026/q2.csv": "region,revenue\nnorth,1100\nsouth,900\neast,1250\nwest,820\n",
    "2026/payroll.csv": "name,salary\nalice,100\nbob,90\n",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    """A moto server subprocess on loopback with jitgate's identity inside it."""

    port: int
    process: subprocess.Popen[bytes]
    credentials: Credentials
    ca_file: str | None = None  # served over HTTPS with this self-signed certificate

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    def client(self, service: str, **kwargs: object) -> object:
        """A boto3 client talking to moto directly as jitgate (for seeding and checks)."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.credentials.access_key,
            aws_secret_access_key=self.credentials.secret_key,
            verify=self.ca_file,
            **kwargs,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with code {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"moto server did not listen on port {port} within {timeout}s")


def start_moto(
    port: int | None = None, *, auth: bool = True, tls: tuple[str, str] | None = None
) -> MotoServer:
    """Start moto on loopback; with ``auth`` it checks signatures and IAM after bootstrap;
    with ``tls`` = (certificate, key) it serves HTTPS (the certificate must name 127.0.0.1)."""
    port = port or free_port()
    env = dict(os.environ)
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_BOOTSTRAP_CALLS if auth else 10**9)
    env.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
    serve_tls = ["-c", tls[0], "-k", tls[1]] if tls else []
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), *serve_tls],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # moto ignores signatures during bootstrap: these credentials only create jitgate's own.
    bootstrap = Credentials("bootstrap", "bootstrap")
    server = MotoServer(port, process, bootstrap, tls[0] if tls else None)
    try:
        _wait_for_port(port, process)
        iam = server.client("iam")
        iam.create_user(UserName="jitgate")  # type: ignore[attr-defined]
        iam.put_user_policy(  # type: ignore[attr-defined]
            UserName="jitgate", PolicyName="jitgate-admin", PolicyDocument=ADMIN_POLICY
        )
        key = iam.create_access_key(UserName="jitgate")["AccessKey"]  # type: ignore[attr-defined]
    except BaseException:
        process.kill()
        raise
    server.credentials = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    return server


def seed_demo_data(moto: MotoServer) -> None:
    """The worked example's reports bucket, plus a table, a queue and a secret."""
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="reports")  # type: ignore[attr-defined]
    for key, text in DEMO_OBJECTS.items():
        s3.put_object(Bucket="reports", Key=key, Body=text.encode())  # type: ignore[attr-defined]
    dynamodb = moto.client("dynamodb")
    dynamodb.create_table(  # type: ignore[attr-defined]
        TableName="orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName="orders", Item={"id": {"S": "o-1"}, "total": {"N": "42"}})  # type: ignore[attr-defined]
    moto.client("sqs").create_queue(QueueName="jobs")  # type: ignore[attr-defined]
    moto.client("secretsmanager").create_secret(
        Name="prod/db", SecretString='{"password":"hunter2"}'
    )  # type: ignore[attr-defined]
