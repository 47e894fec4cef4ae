"""A streaming call's grant, re-checked piece by piece (gateway/liveness.py), on a fake clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from jitgate.clock import FakeClock
from jitgate.gateway.errors import AwsError
from jitgate.gateway.liveness import StreamLiveness, check_live
from jitgate.gateway.lookup import GatewayGrant
from jitgate.scope import build_scope


def live_grant(clock: FakeClock, **changes: object) -> GatewayGrant:
    grant = GatewayGrant(
        id="gr-1",
        agent="reporter",
        status="active",
        expires_at=clock.now() + timedelta(minutes=5),
        agent_disabled=False,
        scope=build_scope(("s3:GetObject",), ("arn:aws:s3:::reports/*",)),
    )
    return replace(grant, **changes)  # type: ignore[arg-type]


class Reads:
    """The database as the check sees it: what ``current`` is, and how often it was read."""

    def __init__(self, grant: GatewayGrant | None) -> None:
        self.current = grant
        self.count = 0

    def __call__(self, grant: GatewayGrant) -> GatewayGrant | None:
        self.count += 1
        return self.current


def test_status_is_read_at_most_once_an_interval_and_a_revocation_then_stops_the_call() -> None:
    clock = FakeClock()
    grant = live_grant(clock)
    reads = Reads(grant)
    liveness = StreamLiveness(grant, reads, clock, checked_at=clock.now(), interval=1.0)
    for _ in range(5):
        liveness.check()  # pieces within the first second: no read
    assert reads.count == 0
    reads.current = replace(grant, status="revoked")
    clock.advance(0.5)
    liveness.check()  # not read yet: at most an interval stale
    clock.advance(0.6)
    with pytest.raises(AwsError) as stopped:
        liveness.check()
    assert reads.count == 1
    assert (stopped.value.code, stopped.value.message) == ("AccessDenied", "grant gr-1 was revoked")


def test_expiry_is_checked_at_every_piece_without_a_read() -> None:
    clock = FakeClock()
    grant = live_grant(clock, expires_at=clock.now() + timedelta(seconds=0.3))
    reads = Reads(grant)
    liveness = StreamLiveness(grant, reads, clock, checked_at=clock.now(), interval=60.0)
    liveness.check()
    clock.advance(0.3)
    with pytest.raises(AwsError) as stopped:
        liveness.check()
    assert stopped.value.code == "ExpiredToken"
    assert reads.count == 0


def test_a_disabled_agent_or_a_vanished_grant_stops_the_call() -> None:
    clock = FakeClock()
    grant = live_grant(clock)
    for current, message in (
        (replace(grant, agent_disabled=True), "agent reporter is disabled"),
        (None, "grant gr-1 no longer exists"),
    ):
        liveness = StreamLiveness(grant, Reads(current), clock, clock.now(), interval=1.0)
        clock.advance(1.0)
        with pytest.raises(AwsError, match=message):
            liveness.check()


def test_a_one_call_grant_used_by_this_very_call_does_not_stop_it() -> None:
    clock = FakeClock()
    grant = live_grant(clock, one_call=True)
    liveness = StreamLiveness(
        grant, Reads(replace(grant, status="used")), clock, clock.now(), interval=1.0
    )
    clock.advance(2)
    liveness.check()
    with pytest.raises(AwsError, match="permitted one call"):
        check_live(replace(grant, status="used"), clock.now())  # a new call is refused
