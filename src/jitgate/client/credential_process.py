"""``jitgate credentials``: AWS ``credential_process`` output for a grant.

An ``~/.aws/config`` profile such as::

    [profile reports]
    region = us-east-1
    endpoint_url = http://127.0.0.1:8750
    credential_process = jitgate credentials --action s3:GetObject --resource arn:aws:s3:::reports/2026/q3.csv --reason "Q3 summary"

makes the AWS CLI and every AWS SDK ask jitgate for the grant by themselves. Each time the SDK
wants credentials it runs the command, which prints::

    {"Version": 1, "AccessKeyId": "...", "SecretAccessKey": "...", "SessionToken": "...",
     "Expiration": "2026-11-28T12:05:00Z"}

SDKs run ``credential_process`` again whenever the credentials are within minutes of expiring,
which for a five-minute grant is every call. So the command remembers the id of the grant it
last obtained for the same jitgate, token and scope (the id only, never a secret; in
``$XDG_CACHE_HOME/jitgate/credential-process``, mode 0700) and hands out that grant's
credentials while jitgate still reports it active with time left; only then does it request a
new grant. ``--no-reuse`` asks for a fresh grant every time.

With workload identity (``JITGATE_WORKLOAD_TOKEN_FILE``), an OIDC token can be exchanged only
once, while the platform rewrites the file only every so often; so the agent session it was
exchanged for is kept beside the grant id (mode 0600, until it expires — never longer than the
OIDC token in the file, which is as sensitive) and reused by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jitgate.client import errors
from jitgate.client._core import check_usable
from jitgate.client.gate import Gate
from jitgate.client.models import Grant

#: Do not hand out credentials with less time left than this; request a new grant instead.
MIN_SECONDS_LEFT = 30


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jitgate" / "credential-process"


def cache_key(
    url: str, token: str, actions: Sequence[str], resources: Sequence[str], seconds: int
) -> str:
    material = json.dumps(
        [
            url.rstrip("/"),
            hashlib.sha256(token.encode()).hexdigest(),
            sorted(actions),
            sorted(resources),
            seconds,
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _read_cached(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("grant_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _write_cached(path: Path, grant_id: str) -> None:
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs a grant
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"grant_id": grant_id}, handle)
        os.replace(tmp, path)


def _session_path(base: Path, gate: Gate) -> Path:
    key = hashlib.sha256(f"{gate.settings.url}\0{gate.settings.identity_key}".encode()).hexdigest()
    return base / f"session-{key[:32]}.json"


def _restore_session(gate: Gate, path: Path) -> None:
    workload = gate.settings.workload
    if workload is None or workload.token is not None:
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        workload.accept(saved)
    except (OSError, ValueError, KeyError, TypeError):
        return
    if workload.needs_exchange():
        workload.token = workload.expires_at = None


def _save_session(gate: Gate, path: Path) -> None:
    workload = gate.settings.workload
    if workload is None or workload.token is None or workload.expires_at is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "token": workload.token,
                    "expires_at": workload.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
                handle,
            )
        os.replace(tmp, path)


def _reusable(gate: Gate, grant_id: str) -> Grant | None:
    try:
        grant = gate.get(grant_id)
    except errors.NotFound:
        return None
    if (
        grant.status == "active"
        and grant.credentials is not None
        and grant.credentials.seconds_left() > MIN_SECONDS_LEFT
    ):
        return grant
    return None


def obtain(
    gate: Gate,
    actions: Sequence[str],
    resources: Sequence[str],
    *,
    minutes: float,
    reason: str,
    approval_timeout: float | None = None,
    reuse: bool = True,
    cache: Path | None = None,
) -> Grant:
    """An active grant for exactly this scope: the remembered one while it lasts, else new."""
    seconds = round(minutes * 60)
    base = cache or cache_dir()
    session = _session_path(base, gate)
    _restore_session(gate, session)
    try:
        return _obtain(gate, actions, resources, seconds, reason, approval_timeout, reuse, base)
    finally:
        _save_session(gate, session)


def _obtain(
    gate: Gate,
    actions: Sequence[str],
    resources: Sequence[str],
    seconds: int,
    reason: str,
    approval_timeout: float | None,
    reuse: bool,
    base: Path,
) -> Grant:
    path = base / (
        cache_key(gate.settings.url, gate.settings.identity_key, actions, resources, seconds)
        + ".json"
    )
    if reuse:
        cached = _read_cached(path)
        if cached:
            grant = _reusable(gate, cached)
            if grant is not None:
                return grant
    grant = gate.request(actions, resources, reason=reason, seconds=seconds)
    if grant.status == "pending":
        grant = gate.wait(grant, approval_timeout)
    grant = check_usable(grant)
    if reuse:
        _write_cached(path, grant.id)
    return grant


def process_output(grant: Grant) -> dict[str, Any]:
    """The credential_process JSON for an active grant."""
    usable = check_usable(grant)
    assert usable.credentials is not None
    return usable.credentials.process_json()
