"""Fixtures for the record's integrity: a populated log with signed checkpoints, a file copy,
and an S3 copy in a moto server with Object Lock (one moto per test worker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jitgate.audit.copies import FileCopy, S3Copy
from jitgate.audit.integrity import AuditIntegrity
from jitgate.audit.log import NewEvent
from jitgate.audit.sinks import FileSink, S3Sink
from jitgate.clock import FakeClock
from jitgate.core import Jitgate


def record(core: Jitgate, clock: FakeClock, count: int, start: int = 0) -> list[int]:
    """Append ``count`` distinct events (one per transaction)."""
    seqs = []
    for i in range(start, start + count):
        seqs += core.audit.record(
            clock.now(),
            NewEvent(
                "call.allowed",
                "agent:reporter",
                agent="reporter",
                grant_id=f"gr-{i // 4}",
                data={"n": i, "operation": "GetObject", "key": f"2026/q{i % 4 + 1}.csv"},
            ),
        )
    return seqs


def history(core: Jitgate, clock: FakeClock, checkpoints: int = 3, per: int = 10) -> None:
    """``checkpoints`` intervals, each with ``per`` events and an interval checkpoint."""
    for n in range(checkpoints):
        record(core, clock, per, start=n * per)
        clock.advance(core.integrity.settings.checkpoint_interval_seconds)
        core.integrity.tick()


@pytest.fixture
def file_copy_path(tmp_path: Path) -> Path:
    return tmp_path / "copy" / "audit.jsonl"


@pytest.fixture
def integrity(core: Jitgate, file_copy_path: Path) -> AuditIntegrity:
    """``core.integrity`` shipping to a file sink at ``file_copy_path``."""
    core.integrity.set_sinks([FileSink(file_copy_path)])
    return core.integrity


@pytest.fixture
def file_copy(file_copy_path: Path) -> FileCopy:
    return FileCopy(file_copy_path)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Any]:
    """A moto server in auth mode with jitgate's identity (jitgate.sandbox.moto)."""
    from jitgate.sandbox.moto import start_moto

    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class S3Place:
    client: Any
    bucket: str
    prefix: str

    def sink(self) -> S3Sink:
        return S3Sink(self.client, self.bucket, self.prefix, retain_days=1)

    def copy(self) -> S3Copy:
        return S3Copy(self.client, self.bucket, self.prefix)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@pytest.fixture
def s3(moto_server: Any) -> S3Place:
    """A fresh bucket with Object Lock enabled, in the session's moto server."""
    client = moto_server.client("s3")
    bucket = f"audit-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return S3Place(client, bucket, "jitgate/prod")
