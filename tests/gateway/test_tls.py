"""The AWS endpoint speaks TLS when given a certificate; boto3 verifies it against our CA."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jitgate.clock import SystemClock
from jitgate.config import load_settings
from jitgate.core import build
from jitgate.sandbox.moto import MotoServer, free_port, seed_demo_data, start_moto
from jitgate.server import Listeners, ServerThread, build_aws_endpoint

pytestmark = pytest.mark.slow


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jitgate test")])
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
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
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


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    server = start_moto()
    seed_demo_data(server)
    yield server
    server.stop()


def test_boto3_reads_through_the_tls_endpoint(
    home: Path, database_url: str, tmp_path: Path, moto: MotoServer
) -> None:
    cert, key = self_signed(tmp_path)
    settings = dataclasses.replace(load_settings(home), database_url=database_url)
    core = build(settings, SystemClock())
    endpoint = build_aws_endpoint(
        core,
        upstream_endpoint=moto.endpoint,
        credentials=moto.credentials,
        account_id="123456789012",
    )
    control, aws = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
    server = ServerThread(core, Listeners(control, aws, str(cert), str(key)), endpoint).start()
    try:
        _, token = core.identity.create_agent("reader")
        grant = httpx.post(
            f"http://127.0.0.1:{control[1]}/v1/grants",
            headers={"authorization": f"Bearer {token}"},
            json={
                "actions": ["s3:GetObject"],
                "resources": ["arn:aws:s3:::reports/2026/q3.csv"],
                "reason": "tls",
            },
        ).json()
        credentials = grant["credentials"]
        s3 = boto3.client(
            "s3",
            endpoint_url=f"https://127.0.0.1:{aws[1]}",
            region_name="us-east-1",
            verify=str(cert),
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
        body = s3.get_object(Bucket="reports", Key="2026/q3.csv")["Body"].read()
        assert body.startswith(b"region,revenue")
        # The certificate really is ours: a client trusting only the system CAs refuses it.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{aws[1]}/", timeout=5)
    finally:
        server.stop()
        core.close()
