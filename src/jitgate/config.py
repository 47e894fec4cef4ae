"""Settings: ``$JITGATE_HOME/jitgate.toml`` plus a few environment overrides.

JITGATE_HOME         where jitgate keeps its files (default ./.jitgate)
JITGATE_DATABASE_URL a postgresql+psycopg:// URL to use PostgreSQL instead of SQLite
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jitgate.errors import InvalidRequest
from jitgate.gateway.roles import parse_bucket_accounts, parse_roles
from jitgate.policy.durations import parse_duration
from jitgate.store.db import sqlite_url

CONFIG_NAME = "jitgate.toml"
POLICY_NAME = "policy.cedar"
DATABASE_NAME = "jitgate.db"
MASTER_KEY_NAME = "master.key"

DEFAULT_CONFIG = """\
# jitgate configuration. Durations are written like "90s", "5m", "1h".

[server]
control_listen = "127.0.0.1:8751"   # the control-plane API (agents, approvers)
aws_listen = "127.0.0.1:8750"       # the AWS endpoint agents point endpoint_url at

[database]
# SQLite in this directory by default. For PostgreSQL set JITGATE_DATABASE_URL or:
# url = "postgresql+psycopg://jitgate@db.internal:5432/jitgate"

[grants]
default_duration = "5m"   # when a request names none
lapse_after = "15m"       # a pending request nobody decides lapses after this
# ARNs (shell-style globs) whose reads always need approval, like secrets:
sensitive_arns = [
  # "arn:aws:s3:::payroll/*",
]

[policy]
file = "policy.cedar"

[aws]
region = "us-east-1"
# account_id = "123456789012"          # the account ARNs default to (found via STS if unset)
# upstream_endpoint = "https://..."    # only for sandboxes and tests; agents never choose it

# [aws.roles]   # sign calls into an account as a role, with the agent as source identity
# "123456789012" = "arn:aws:iam::123456789012:role/jitgate-agents"
# (the role trusts jitgate's own identity for sts:AssumeRole and sts:SetSourceIdentity;
#  CloudTrail then names the agent; see docs/decisions.md, D15)

# [aws.bucket_accounts]   # S3 ARNs name no account: the account a bucket is in, when it is
# "partner-exports" = "210987654321"   # not the default one (S3 must then find that owner)

[audit]   # signed checkpoints and write-once copies (docs/audit-integrity.md)
# When a call may go upstream (docs/decisions.md, D9): "fsync" once its "allowed" event is on
# disk; "os" once it is committed to the operating system (survives jitgate being killed; a
# power cut can lose the last 50 ms of events). SQLite only; PostgreSQL follows the server.
durability = "fsync"
# Failures before authentication (unknown key, bad signature or token) are written one by one
# up to these counts a minute, per source address and over all; beyond, they are counted and
# written as one "denials.suppressed" event per source a minute, so a flood cannot fill the log.
failures_per_source = 20
failures_overall = 200
checkpoint_interval = "60s"   # a signed checkpoint at least this often, even when idle
signing = "file"              # Ed25519 key in audit-signing.key (0600); or "kms" + kms_key_id
sink_alarm_after = "5m"       # a copy this far behind raises the alarm (/healthz, audit status)
# retention = "400d"          # prune older events from the database once every sink has them

# [[audit.sinks]]
# type = "file"
# path = "/var/log/jitgate/audit.jsonl"   # append-only; ideally on another disk or host
# [[audit.sinks]]
# type = "s3"
# url = "s3://my-audit-bucket/jitgate"    # bucket with Object Lock; objects in COMPLIANCE mode
# retain_days = 2555
"""


def _listen(value: str, name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequest(f"{name} must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    policy_path: Path
    control_listen: tuple[str, int] = ("127.0.0.1", 8751)
    aws_listen: tuple[str, int] = ("127.0.0.1", 8750)
    default_duration_seconds: int = 300
    lapse_seconds: int = 900
    sensitive_arns: tuple[str, ...] = ()
    aws_region: str = "us-east-1"
    aws_account_id: str | None = None
    upstream_endpoint: str | None = None
    aws_roles: dict[str, str] = field(default_factory=dict)  # account id -> role ARN
    aws_bucket_accounts: dict[str, str] = field(default_factory=dict)  # bucket -> account id
    audit_durability: str = "fsync"
    failures_per_source: int = 20  # a minute, written one by one (audit/flood.py)
    failures_overall: int = 200
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def master_key_path(self) -> Path:
        return self.home / MASTER_KEY_NAME


def home_from_env() -> Path:
    return Path(os.environ.get("JITGATE_HOME", ".jitgate")).resolve()


def load_settings(home: Path | None = None) -> Settings:
    home = (home or home_from_env()).resolve()
    config_path = home / CONFIG_NAME
    raw: dict[str, Any] = {}
    if config_path.exists():
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise InvalidRequest(f"{config_path}: {exc}") from None
    server = raw.get("server", {})
    grants = raw.get("grants", {})
    aws = raw.get("aws", {})
    database_url = os.environ.get("JITGATE_DATABASE_URL") or raw.get("database", {}).get("url")
    if not database_url:
        database_url = sqlite_url(home / DATABASE_NAME)
    policy_file = Path(raw.get("policy", {}).get("file", POLICY_NAME))
    try:
        default_duration = parse_duration(str(grants.get("default_duration", "5m")))
        lapse = parse_duration(str(grants.get("lapse_after", "15m")))
    except ValueError as exc:
        raise InvalidRequest(f"{config_path}: [grants] {exc}") from None
    durability = str(raw.get("audit", {}).get("durability", "fsync"))
    if durability not in ("fsync", "os"):
        raise InvalidRequest(
            f'{config_path}: [audit] durability must be "fsync" or "os", not {durability!r}'
        )
    failure_limits = []
    for name, default in (("failures_per_source", 20), ("failures_overall", 200)):
        value = raw.get("audit", {}).get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequest(
                f"{config_path}: [audit] {name} must be a whole number of at least 1, not {value!r}"
            )
        failure_limits.append(value)
    try:
        roles = parse_roles(aws.get("roles", {}))
        bucket_accounts = parse_bucket_accounts(aws.get("bucket_accounts", {}))
    except ValueError as exc:
        raise InvalidRequest(f"{config_path}: {exc}") from None
    sensitive = grants.get("sensitive_arns", [])
    if not isinstance(sensitive, list) or not all(isinstance(s, str) for s in sensitive):
        raise InvalidRequest(f"{config_path}: [grants] sensitive_arns must be a list of strings")
    return Settings(
        home=home,
        database_url=database_url,
        policy_path=policy_file if policy_file.is_absolute() else home / policy_file,
        control_listen=_listen(server.get("control_listen", "127.0.0.1:8751"), "control_listen"),
        aws_listen=_listen(server.get("aws_listen", "127.0.0.1:8750"), "aws_listen"),
        default_duration_seconds=default_duration,
        lapse_seconds=lapse,
        sensitive_arns=tuple(sensitive),
        aws_region=str(aws.get("region", "us-east-1")),
        aws_account_id=aws.get("account_id"),
        upstream_endpoint=aws.get("upstream_endpoint"),
        aws_roles=roles,
        aws_bucket_accounts=bucket_accounts,
        audit_durability=durability,
        failures_per_source=failure_limits[0],
        failures_overall=failure_limits[1],
        raw=raw,
    )


def parse_listen(value: str, name: str = "listen address") -> tuple[str, int]:
    return _listen(value, name)
