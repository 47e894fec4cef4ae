"""Is a grant live at this instant, and does it stay live while its call streams?

A call is checked when its ``call.allowed`` event is recorded. A streamed body or answer can
last much longer than that check (a 1 GiB upload, a slow download, a long poll), and revoking a
grant or disabling its agent is how an incident is stopped: it must stop a call already under
way too, not only the next one. ``StreamLiveness`` re-checks an allowed call's grant as its
pieces pass: the expiry at every piece (no I/O), the status and the agent's flag from the
database at most once per interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from jitgate.clock import Clock
from jitgate.gateway.errors import AwsError
from jitgate.gateway.lookup import GatewayGrant

# How stale the status a streaming call is checked against may be: a revoked grant or a
# disabled agent stops a call in flight within about this long (one database read per
# streaming call per interval).
STREAM_CHECK_SECONDS = 1.0


def check_live(grant: GatewayGrant, now: datetime) -> None:
    """Raise the AWS error a call under ``grant`` gets at ``now`` if the grant is not live."""
    if grant.agent_disabled:
        raise AwsError(
            "AccessDenied", f"agent {grant.agent} is disabled; grant {grant.id} no longer works"
        )
    if grant.status == "pending":
        raise AwsError("AccessDenied", f"grant {grant.id} is waiting for approval")
    if grant.status == "revoked":
        raise AwsError("AccessDenied", f"grant {grant.id} was revoked")
    if grant.status == "used":
        raise AwsError("AccessDenied", f"grant {grant.id} permitted one call and it has been made")
    if grant.status in ("denied", "lapsed"):
        raise AwsError("AccessDenied", f"grant {grant.id} is {grant.status}")
    if grant.status == "expired" or grant.expires_at is None or now >= grant.expires_at:
        raise AwsError(
            "ExpiredToken",
            f"The security token included in the request is expired (grant {grant.id})",
        )
    if grant.status != "active":
        raise AwsError("AccessDenied", f"grant {grant.id} is {grant.status}")


class StreamLiveness:
    """Checks, piece by piece, that an allowed call's grant is still live.

    ``read`` re-reads the grant's status, expiry and agent flag (None if the grant is gone).
    A one-call grant is ``used`` by the very call that streams, so that status does not stop it.
    """

    def __init__(
        self,
        grant: GatewayGrant,
        read: Callable[[GatewayGrant], GatewayGrant | None],
        clock: Clock,
        checked_at: datetime,
        interval: float = STREAM_CHECK_SECONDS,
    ) -> None:
        self.grant = grant
        self._read = read
        self._clock = clock
        self._interval = timedelta(seconds=interval)
        self._next_read = checked_at + self._interval

    def check(self) -> None:
        """Raise the AWS error that ends the call if its grant stopped being live."""
        now = self._clock.now()
        if now >= self._next_read:
            self._next_read = now + self._interval
            fresh = self._read(self.grant)
            if fresh is None:
                raise AwsError("AccessDenied", f"grant {self.grant.id} no longer exists")
            self.grant = fresh
        grant = self.grant
        if grant.one_call and grant.status == "used":
            grant = replace(grant, status="active")  # used up by this very call
        check_live(grant, now)
