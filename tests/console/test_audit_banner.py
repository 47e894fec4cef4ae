"""A record at risk shows on every console page, not only in /healthz."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from jitgate.clock import FakeClock
from jitgate.core import Jitgate
from jitgate.identity.service import Principal

from .conftest import sign_in


def test_stalled_checkpoints_raise_a_banner_on_every_page(
    core: Jitgate, clock: FakeClock, console: TestClient, person: Callable[..., Principal]
) -> None:
    person("alice", "approver")
    sign_in(console, "alice")
    core.integrity.checkpoint("interval")
    assert "The audit record is at risk" not in console.get("/ui/").text

    clock.advance(600)  # no checkpoint for ten minutes: the checkpointer has stalled
    for page in ("/ui/", "/ui/grants", "/ui/audit", "/ui/policy"):
        html = console.get(page).text
        assert "The audit record is at risk" in html, page
        assert "checkpoints have stalled" in html, page


def test_the_sign_in_page_shows_no_banner(
    core: Jitgate, clock: FakeClock, console: TestClient
) -> None:
    clock.advance(600)
    assert "The audit record is at risk" not in console.get("/ui/login").text
