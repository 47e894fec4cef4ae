"""Sinks: where the write-once copy of the record goes.

- ``FileSink``: one append-only JSON Lines file (``O_APPEND``, fsync after every record, read
  back before it counts as shipped). Put it on a disk jitgate's database administrator does
  not control, or make it append-only (``chattr +a``) or forward it with a log shipper.
- ``S3Sink``: one object per batch, per checkpoint and per key, written with Object Lock in
  COMPLIANCE mode so that nobody (root included) can overwrite or delete it before its
  retention date. Names sort in order (``events/<first>-<last>.jsonl``,
  ``checkpoints/<number>.json``, ``keys/<fingerprint>.json``).

Every ``put_*`` is idempotent, so the shipper may send a record again after a crash
(at-least-once): the file sink skips bytes it finds already at its end, the S3 sink skips an
object that exists with the same SHA-256. A put returns only once the record has been read
back intact.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from jitgate.audit.records import (
    batch_object_name,
    checkpoint_object_name,
    key_line,
    key_object_name,
    sha256_hex,
)
from jitgate.errors import JitgateError


class SinkError(JitgateError):
    """A sink refused or lost a record; shipping to it stops until it recovers."""

    code = "audit_sink_error"
    status = 503


class Sink(Protocol):
    name: str
    kind: str

    def open(self) -> None: ...
    def put_key(self, entry: dict[str, Any]) -> None: ...
    def put_batch(self, first_seq: int, last_seq: int, data: bytes) -> None: ...
    def put_checkpoint(self, number: int, record: bytes) -> None: ...
    def describe(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class FileSink:
    kind = "file"

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or f"file:{socket.gethostname()}:{self.path}"
        self._fd: int | None = None
        self._check_tail = True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": "file", "path": str(self.path)}

    def open(self) -> None:
        if self._fd is not None:
            return
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror}") from None
        if created:
            _fsync_dir(self.path.parent)
        self._repair_torn_tail(fd)
        self._fd = fd
        self._check_tail = True

    def _repair_torn_tail(self, fd: int) -> None:
        """A crash mid-write leaves a last line without its newline; it was never acknowledged
        (the cursor did not move), so cut it off and let the shipper write it again."""
        size = os.fstat(fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            position = size
            while position > 0:
                step = min(65536, position)
                position -= step
                handle.seek(position)
                chunk = handle.read(step)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    os.ftruncate(fd, position + newline + 1)
                    return
            os.ftruncate(fd, 0)

    def _append(self, data: bytes) -> None:
        try:
            self._write(data)
        except BaseException:
            self._check_tail = True  # it may have landed: look before writing it again
            raise

    def _write(self, data: bytes) -> None:
        self.open()
        assert self._fd is not None
        if self._check_tail:
            # after a restart the previous process may have written this record and died
            # before its cursor moved: never write it twice
            self._check_tail = False
            size = os.fstat(self._fd).st_size
            if size >= len(data):
                with open(self.path, "rb") as handle:
                    handle.seek(size - len(data))
                    if handle.read(len(data)) == data:
                        return
        try:
            offset = os.fstat(self._fd).st_size
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            raise SinkError(f"{self.path}: {exc.strerror}") from None
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            if handle.read(len(data)) != data:
                raise SinkError(f"{self.path}: what was appended does not read back")

    def put_key(self, entry: dict[str, Any]) -> None:
        self._append(key_line(entry).encode("utf-8"))

    def put_batch(self, first_seq: int, last_seq: int, data: bytes) -> None:
        self._append(data)

    def put_checkpoint(self, number: int, record: bytes) -> None:
        self._append(record)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class S3Sink:
    kind = "s3"

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        retain_days: int = 2555,
        object_lock: bool = True,
        name: str | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retain_days = retain_days
        self.object_lock = object_lock
        self.name = name or f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._checked = False

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": "s3",
            "bucket": self.bucket,
            "prefix": self.prefix,
            "object_lock": self.object_lock,
            "retain_days": self.retain_days,
        }

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def open(self) -> None:
        if self._checked or not self.object_lock:
            return
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - botocore's errors; name the bucket
            if "ObjectLockConfigurationNotFound" in _reason(exc):
                raise SinkError(
                    f"s3://{self.bucket} does not have Object Lock enabled (create it with "
                    f"ObjectLockEnabledForBucket, or set object_lock = false)"
                ) from None
            raise SinkError(
                f"s3://{self.bucket}: cannot read its Object Lock configuration ({_reason(exc)}); "
                f"create the bucket with Object Lock enabled"
            ) from None
        state = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if state != "Enabled":
            raise SinkError(f"s3://{self.bucket} does not have Object Lock enabled")
        self._checked = True

    def _existing(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except Exception as exc:  # noqa: BLE001
            if _status(exc) == 404:
                return None
            raise SinkError(f"s3://{self.bucket}/{key}: {_reason(exc)}") from None

    def _put(self, name: str, data: bytes, content_type: str) -> None:
        self.open()
        key = self.key(name)
        digest = sha256_hex(data)
        existing = self._existing(key)
        if existing is not None:
            if existing.get("Metadata", {}).get("sha256") == digest:
                return  # shipped before a crash; at-least-once, never twice
            raise SinkError(
                f"s3://{self.bucket}/{key} already exists with different content: another "
                f"jitgate (or someone else) writes to this prefix"
            )
        arguments: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
            "Metadata": {"sha256": digest},
            "ChecksumAlgorithm": "SHA256",
        }
        if self.object_lock:
            # S3 enforces retention by its own clock, so the date is wall-clock time
            arguments["ObjectLockMode"] = "COMPLIANCE"
            arguments["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=self.retain_days
            )
        try:
            self.client.put_object(**arguments)
        except Exception as exc:  # noqa: BLE001
            raise SinkError(f"s3://{self.bucket}/{key}: {_reason(exc)}") from None
        back = self._existing(key)
        if back is None or back.get("Metadata", {}).get("sha256") != digest:
            raise SinkError(f"s3://{self.bucket}/{key} does not read back as written")
        if int(back.get("ContentLength", -1)) != len(data):
            raise SinkError(f"s3://{self.bucket}/{key} reads back with a different length")
        if self.object_lock and back.get("ObjectLockMode") != "COMPLIANCE":
            raise SinkError(f"s3://{self.bucket}/{key} is not locked in COMPLIANCE mode")

    def put_key(self, entry: dict[str, Any]) -> None:
        self._put(
            key_object_name(entry["fingerprint"]),
            key_line(entry).encode("utf-8"),
            "application/json",
        )

    def put_batch(self, first_seq: int, last_seq: int, data: bytes) -> None:
        self._put(batch_object_name(first_seq, last_seq), data, "application/x-ndjson")

    def put_checkpoint(self, number: int, record: bytes) -> None:
        self._put(checkpoint_object_name(number), record, "application/json")

    def close(self) -> None:
        pass


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
        code = response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NotFound"):
            return 404
    return None


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code')}: {error.get('Message')}"
    return str(exc) or type(exc).__name__
