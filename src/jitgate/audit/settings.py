"""The ``[audit]`` section of jitgate.toml (read from ``Settings.raw``).

```toml
[audit]
checkpoint_interval = "60s"     # a signed checkpoint at least this often, even when idle
signing = "file"                # "file": Ed25519 key in signing_key_file; "kms": kms_key_id
signing_key_file = "audit-signing.key"
# kms_key_id = "alias/jitgate-audit"
keyring_file = "audit-keys.json"
max_batch_events = 10000        # events per shipped batch (object)
sink_alarm_after = "5m"         # a sink this far behind raises the alarm
# retention = "400d"            # delete older events from the database, once shipped and verified

[[audit.sinks]]
type = "file"
path = "audit.jsonl"

[[audit.sinks]]
type = "s3"
url = "s3://my-audit-bucket/jitgate"
retain_days = 2555              # Object Lock COMPLIANCE retention per object
# region = "us-east-1"
# endpoint_url = "http://127.0.0.1:5000"  # sandboxes and tests only
```
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jitgate.config import Settings
from jitgate.errors import InvalidRequest

DEFAULT_INTERVAL = 60
DEFAULT_ALARM_AFTER = 300
DEFAULT_MAX_BATCH = 10_000
SIGNING_KEY_NAME = "audit-signing.key"
KEYRING_NAME = "audit-keys.json"

_PART = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_span(text: str) -> int:
    """Seconds in "90s", "5m", "1h30m", "400d"; ValueError naming the text otherwise."""
    compact = str(text).strip()
    if not compact or _PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration like '60s', '5m', '12h' or '400d'")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


@dataclass(frozen=True)
class SinkConfig:
    type: str  # "file" | "s3"
    name: str
    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""
    retain_days: int = 2555
    region: str | None = None
    endpoint_url: str | None = None
    object_lock: bool = True


@dataclass(frozen=True)
class AuditSettings:
    home: Path
    checkpoint_interval_seconds: int = DEFAULT_INTERVAL
    signing: str = "file"
    signing_key_path: Path = Path(SIGNING_KEY_NAME)
    kms_key_id: str | None = None
    keyring_path: Path = Path(KEYRING_NAME)
    max_batch_events: int = DEFAULT_MAX_BATCH
    sink_alarm_after_seconds: int = DEFAULT_ALARM_AFTER
    retention_seconds: int | None = None
    sinks: tuple[SinkConfig, ...] = field(default_factory=tuple)
    aws_region: str = "us-east-1"


def split_s3_url(url: str) -> tuple[str, str]:
    """("bucket", "prefix") from s3://bucket/prefix (prefix without slashes at the ends)."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    return bucket, prefix.strip("/")


def _path(home: Path, value: Any) -> Path:
    path = Path(str(value))
    return path if path.is_absolute() else home / path


def _sink(home: Path, raw: Any, where: str) -> SinkConfig:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a table")
    kind = raw.get("type")
    if kind == "file":
        if "path" not in raw:
            raise ValueError(f"{where}: a file sink needs path")
        path = _path(home, raw["path"])
        # the host is part of the default name: each server keeps a whole file of its own
        name = raw.get("name") or f"file:{socket.gethostname()}:{path}"
        return SinkConfig("file", str(name), path=path)
    if kind == "s3":
        if "url" in raw:
            bucket, prefix = split_s3_url(str(raw["url"]))
        elif "bucket" in raw:
            bucket, prefix = str(raw["bucket"]), str(raw.get("prefix", "")).strip("/")
        else:
            raise ValueError(f'{where}: an s3 sink needs url = "s3://bucket/prefix"')
        retain = int(raw.get("retain_days", 2555))
        if retain < 1:
            raise ValueError(f"{where}: retain_days must be at least 1")
        return SinkConfig(
            "s3",
            str(raw.get("name") or f"s3://{bucket}/{prefix}".rstrip("/")),
            bucket=bucket,
            prefix=prefix,
            retain_days=retain,
            region=raw.get("region"),
            endpoint_url=raw.get("endpoint_url"),
            object_lock=bool(raw.get("object_lock", True)),
        )
    raise ValueError(f'{where}: type must be "file" or "s3", got {kind!r}')


def load_audit_settings(settings: Settings) -> AuditSettings:
    home = settings.home
    where = f"{home / 'jitgate.toml'}: [audit]"
    raw = settings.raw.get("audit", {})
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be a table")
    try:
        interval = parse_span(raw.get("checkpoint_interval", f"{DEFAULT_INTERVAL}s"))
        alarm = parse_span(raw.get("sink_alarm_after", f"{DEFAULT_ALARM_AFTER}s"))
        retention = parse_span(raw["retention"]) if raw.get("retention") else None
        max_batch = int(raw.get("max_batch_events", DEFAULT_MAX_BATCH))
        if max_batch < 1:
            raise ValueError("max_batch_events must be at least 1")
        signing = str(raw.get("signing", "file"))
        if signing not in ("file", "kms"):
            raise ValueError(f'signing must be "file" or "kms", got {signing!r}')
        if signing == "kms" and not raw.get("kms_key_id"):
            raise ValueError('signing = "kms" needs kms_key_id')
        sinks_raw = raw.get("sinks", [])
        if not isinstance(sinks_raw, list):
            raise ValueError("sinks must be an array of tables ([[audit.sinks]])")
        sinks = tuple(_sink(home, s, f"sinks[{i}]") for i, s in enumerate(sinks_raw))
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError("two sinks have the same name")
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{where} {exc}") from None
    return AuditSettings(
        home=home,
        checkpoint_interval_seconds=interval,
        signing=signing,
        signing_key_path=_path(home, raw.get("signing_key_file", SIGNING_KEY_NAME)),
        kms_key_id=raw.get("kms_key_id"),
        keyring_path=_path(home, raw.get("keyring_file", KEYRING_NAME)),
        max_batch_events=max_batch,
        sink_alarm_after_seconds=alarm,
        retention_seconds=retention,
        sinks=sinks,
        aws_region=settings.aws_region,
    )
