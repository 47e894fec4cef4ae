"""What the sync and async gates share: settings, request bodies and reading answers.

Only the I/O differs between :class:`jitgate.client.Gate` and :class:`jitgate.client.AsyncGate`;
everything that decides what a response means lives here, once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from jitgate.client import errors
from jitgate.client.models import Grant, parse_time

Progress = Callable[[str], None]

#: How often a waiting gate asks whether its grant was decided, and how often it says so.
POLL_SECONDS = 1.0
PROGRESS_EVERY_SECONDS = 15.0
DEFAULT_APPROVAL_TIMEOUT = 900.0


def stderr_progress(message: str) -> None:
    """The default progress reporter: one line on stderr, where a person running the agent
    sees it and a program reading stdout does not."""
    sys.stderr.write(f"jitgate: {message}\n")
    sys.stderr.flush()


def quiet(message: str) -> None:
    """A progress reporter that says nothing."""


#: Exchange a fresh OIDC token when the agent session has less than this left.
RENEW_SECONDS = 60


class WorkloadAuth:
    """An agent session exchanged for a workload's OIDC token (``POST /v1/auth/workload``),
    renewed with a fresh token from ``source`` shortly before it expires."""

    def __init__(self, source: Callable[[], str], describe: str) -> None:
        self.source = source
        self.describe = describe
        self.token: str | None = None
        self.expires_at: datetime | None = None
        self.lock = threading.Lock()

    def needs_exchange(self) -> bool:
        if self.token is None or self.expires_at is None:
            return True
        return (self.expires_at - datetime.now(UTC)).total_seconds() < RENEW_SECONDS

    def body(self) -> dict[str, str]:
        token = self.source().strip()
        if not token:
            raise errors.JitgateClientError(f"the workload token from {self.describe} is empty")
        return {"token": token}

    def accept(self, payload: Any) -> None:
        self.token = str(payload["token"])
        self.expires_at = parse_time(payload.get("expires_at"))


def token_file(path: str | os.PathLike[str]) -> Callable[[], str]:
    """A workload token source that reads a file each time (a Kubernetes projected service
    account token, a SPIFFE JWT-SVID written by an agent): the platform keeps it fresh."""
    return lambda: Path(path).read_text(encoding="utf-8")


def github_actions_token(audience: str) -> Callable[[], str]:
    """A workload token source for GitHub Actions (the job needs ``permissions: id-token:
    write``): a fresh OIDC token for ``audience`` from the runner, each time."""

    def fetch() -> str:
        url = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
        bearer = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        if not url or not bearer:
            raise errors.JitgateClientError(
                "not in a GitHub Actions job with `permissions: id-token: write`"
            )
        response = httpx.get(
            url, params={"audience": audience}, headers={"authorization": f"Bearer {bearer}"}
        )
        response.raise_for_status()
        return str(response.json()["value"])

    return fetch


@dataclass
class GateSettings:
    url: str
    token: str | None
    aws_endpoint: str | None = None
    region: str | None = None
    verify: bool | str = True
    timeout: float = 30.0
    approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT
    poll_interval: float = POLL_SECONDS
    progress: Progress = field(default=stderr_progress)
    workload: WorkloadAuth | None = None

    @classmethod
    def resolve(
        cls,
        url: str | None,
        token: str | None,
        *,
        aws_endpoint: str | None,
        region: str | None,
        verify: bool | str,
        timeout: float,
        approval_timeout: float,
        poll_interval: float,
        progress: Progress | None,
        workload_token: Callable[[], str] | None = None,
    ) -> GateSettings:
        url = url or os.environ.get("JITGATE_URL")
        if not url:
            raise errors.JitgateClientError(
                "no jitgate URL: pass url= or set JITGATE_URL to the control plane's address"
            )
        workload: WorkloadAuth | None = None
        if workload_token is not None:
            workload = WorkloadAuth(workload_token, "workload_token=")
        elif not token and os.environ.get("JITGATE_WORKLOAD_TOKEN_FILE"):
            path = os.environ["JITGATE_WORKLOAD_TOKEN_FILE"]
            workload = WorkloadAuth(token_file(path), path)
        if workload is None:
            token = token or os.environ.get("JITGATE_TOKEN")
            if not token:
                raise errors.JitgateClientError(
                    "no jitgate token: pass token= or set JITGATE_TOKEN to the agent's token "
                    "(or JITGATE_WORKLOAD_TOKEN_FILE to an OIDC token file)"
                )
        return cls(
            url=url.rstrip("/"),
            token=token if workload is None else None,
            aws_endpoint=aws_endpoint or os.environ.get("JITGATE_AWS_ENDPOINT") or None,
            region=region,
            verify=verify,
            timeout=timeout,
            approval_timeout=approval_timeout,
            poll_interval=poll_interval,
            progress=progress or quiet,
            workload=workload,
        )

    def headers(self) -> dict[str, str]:
        headers = {"user-agent": "jitgate-sdk"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    @property
    def identity_key(self) -> str:
        """What identifies the caller for caches: the token, or the workload token's source."""
        if self.token:
            return self.token
        return f"workload:{self.workload.describe if self.workload else ''}"


def grant_body(
    actions: Sequence[str],
    resources: Sequence[str],
    *,
    minutes: float | None,
    seconds: int | None,
    reason: str,
) -> dict[str, Any]:
    if isinstance(actions, str) or isinstance(resources, str):
        raise TypeError("actions and resources are lists of strings, not a single string")
    body: dict[str, Any] = {
        "actions": list(actions),
        "resources": list(resources),
        "reason": reason,
    }
    if seconds is not None and minutes is not None:
        raise TypeError("give minutes= or seconds=, not both")
    if minutes is not None:
        body["duration_seconds"] = round(minutes * 60)
    elif seconds is not None:
        body["duration_seconds"] = seconds
    return body


_BY_STATUS: dict[int, type[errors.JitgateClientError]] = {
    400: errors.RequestRefused,
    401: errors.AuthenticationFailed,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    413: errors.RequestRefused,
    422: errors.RequestRefused,
}


def unreachable(url: str, exc: Exception) -> errors.JitgateUnavailable:
    return errors.JitgateUnavailable(f"cannot reach jitgate at {url}: {exc}")


def read(response: httpx.Response) -> Any:
    """The JSON of a successful answer, or the matching exception with jitgate's message."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code < 400:
        if payload is None:
            raise errors.JitgateClientError(
                f"jitgate answered HTTP {response.status_code} without JSON",
                status=response.status_code,
            )
        return payload
    message = code = None
    if isinstance(payload, dict):
        message, code = payload.get("message"), payload.get("error")
    cls = _BY_STATUS.get(response.status_code, errors.JitgateClientError)
    if code == "unsupported_operation":
        cls = errors.ScopeUnavailable
    raise cls(
        message or f"HTTP {response.status_code} from {response.request.url.path}",
        status=response.status_code,
        code=code,
    )


def check_usable(grant: Grant) -> Grant:
    """``grant`` if it is active with credentials; otherwise the exception that says why."""
    if grant.status == "active" and grant.credentials is not None:
        return grant
    if grant.status == "denied":
        why = "; ".join(grant.reasons) or "no policy permits it"
        raise errors.GrantDenied(f"grant {grant.id} was denied: {why}", grant)
    if grant.status == "active":
        raise errors.GrantNotActive(
            f"grant {grant.id} is active but jitgate gave no credentials "
            "(only the agent that owns a grant receives them)",
            grant,
        )
    raise errors.GrantNotActive(f"grant {grant.id} is {grant.status}; it cannot be used", grant)


def pending_message(grant: Grant, console_url: str | None) -> str:
    where = f" or at {console_url}/grants/{grant.id}" if console_url else ""
    why = "; ".join(grant.reasons)
    return (
        f"grant {grant.id} ({', '.join(grant.actions)}) is waiting for a human approver"
        f"{f' ({why})' if why else ''}: `jitgate grants approve {grant.id}`{where}"
    )


class Waiter:
    """Decides, for a polling loop, when to say something and when to give up."""

    def __init__(self, settings: GateSettings, grant: Grant, timeout: float | None) -> None:
        self.settings = settings
        self.grant = grant
        self.timeout = settings.approval_timeout if timeout is None else timeout
        self.started = time.monotonic()
        self.last_said = self.started

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def timed_out(self) -> bool:
        return self.elapsed() >= self.timeout

    def sleep_seconds(self) -> float:
        return max(0.0, min(self.settings.poll_interval, self.timeout - self.elapsed()))

    def tick(self, grant: Grant) -> None:
        self.grant = grant
        now = time.monotonic()
        if now - self.last_said >= PROGRESS_EVERY_SECONDS:
            self.last_said = now
            self.settings.progress(
                f"still waiting for approval of {grant.id} "
                f"({self.elapsed():.0f}s of {self.timeout:.0f}s)"
            )

    def timeout_error(self) -> errors.ApprovalTimeout:
        return errors.ApprovalTimeout(
            f"grant {self.grant.id} was not approved within {self.timeout:.0f}s; "
            "the request was withdrawn",
            self.grant,
        )
