"""The console in real headless Chromium (Debian's package, driven by Playwright), against a
real jitgate whose AWS endpoint forwards to moto in auth mode: a person signs in, sees a
request appear, approves it, the agent's boto3 call succeeds, they revoke it, the next fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from .conftest import PASSWORD, Stack, screenshot, start_stack

pytestmark = pytest.mark.slow

SECURITY_RULE = """
@id("iam-needs-two-from-security")
@approval("required")
@approvers("2")
@approver_group("security")
@max_duration("15m")
permit (principal, action, resource)
when { resource.service == "iam" };
"""


@pytest.fixture
def stack(moto_server: Any, tmp_path: Path) -> Iterator[Stack]:
    with start_stack(moto_server, tmp_path / "home", policy_extra=SECURITY_RULE) as running:
        yield running


def ask(stack: Stack, token: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.control_url}/v1/grants",
        headers={"authorization": f"Bearer {token}"},
        json={"duration_seconds": 300, **body},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def fetch(stack: Stack, token: str, grant_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.control_url}/v1/grants/{grant_id}",
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_approve_use_revoke_in_the_browser(stack: Stack, browser: Any) -> None:
    core = stack.core
    core.identity.create_user("sam", "admin", groups=["security"], password=PASSWORD)
    _, reporter = core.identity.create_agent("reporter", ["analytics"])
    _, deployer = core.identity.create_agent("deployer", ["platform"])
    key = f"console/{uuid.uuid4().hex}.csv"
    arn = f"arn:aws:s3:::reports/{key}"
    # Some history for the agent: a read the policy issued at once.
    ask(
        stack,
        reporter,
        actions=["s3:GetObject"],
        resources=["arn:aws:s3:::reports/2026/q3.csv"],
        reason="read the Q3 numbers",
    )

    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        # Sign in.
        page.goto(f"{stack.control_url}/ui/")
        assert "/ui/login" in page.url
        page.fill("input[name=name]", "sam")
        page.fill("input[name=password]", PASSWORD)
        page.click("button.primary")
        page.wait_for_selector("text=Nothing waits for a decision")

        # Requests arrive while the inbox is open: they appear without a reload.
        grant = ask(
            stack,
            reporter,
            actions=["s3:PutObject"],
            resources=[arn],
            reason="Write the Q3 summary for the board pack (FIN-212)",
        )
        assert grant["status"] == "pending"
        ask(
            stack,
            deployer,
            actions=["iam:AttachRolePolicy"],
            resources=["arn:aws:iam::123456789012:role/deploy"],
            reason="attach the read-only policy to the deploy role",
            duration_seconds=600,
        )
        ask(
            stack,
            deployer,
            actions=["s3:DeleteObject"],
            resources=["arn:aws:s3:::reports/2025/stale-export.csv"],
            reason="remove the stale export",
            one_call=True,
            operation="DeleteObject",
        )
        card = page.wait_for_selector(f"#req-{grant['id']}", timeout=15_000)
        page.wait_for_selector("article.card >> nth=2", timeout=15_000)
        assert "reporter wants Write access for 5 min" in " ".join(card.inner_text().split())
        assert arn in card.inner_text()
        screenshot(page, "console-inbox.png")

        # Approve, with a comment.
        card.query_selector("input[name=comment]").fill("board pack, fine")
        card.query_selector("button.approve").click()
        page.wait_for_selector(f"text=You approved {grant['id']}.")

        # The agent now holds live credentials; its boto3 call through jitgate succeeds.
        active = fetch(stack, reporter, grant["id"])
        assert active["status"] == "active"
        s3 = stack.s3(active["credentials"])
        s3.put_object(Bucket="reports", Key=key, Body=b"region,revenue\nnorth,1200\n")
        assert (
            stack.moto.client("s3")
            .get_object(Bucket="reports", Key=key)["Body"]
            .read()
            .startswith(b"region")
        )

        # The grant's page shows the call (its outcome is appended just after the response).
        page.goto(f"{stack.control_url}/ui/grants/{grant['id']}")
        page.wait_for_selector("tr.call-allowed >> text=200", timeout=15_000)
        calls = page.inner_text("table.calls")
        assert "s3:PutObject" in calls and "allowed" in calls
        assert "board pack, fine" in page.inner_text("body")
        screenshot(page, "console-grant.png")

        # Revoke it from the active grants page.
        page.goto(f"{stack.control_url}/ui/grants?status=active")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click(f"#row-{grant['id']} button.deny")
        page.wait_for_selector(f"text=You revoked {grant['id']}")

        # The next call fails.
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket="reports", Key=key, Body=b"again")
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        assert "was revoked" in refused.value.response["Error"]["Message"]

        # And the grant's page, refreshing in place, shows the refusal.
        page.goto(f"{stack.control_url}/ui/grants/{grant['id']}")
        page.wait_for_selector("tr.call-denied", timeout=15_000)
        assert "revoked" in page.inner_text("#live")
        screenshot(page, "console-grant-revoked.png")
        assert problems == []  # no script errors, no CSP violations
    finally:
        context.close()


def test_sign_in_with_single_sign_on_in_the_browser(
    moto_server: Any, tmp_path: Path, browser: Any
) -> None:
    from .oidc_provider import CLIENT_ID, CLIENT_SECRET, run_provider

    with run_provider(
        users={"carol": {"sub": "u-1", "preferred_username": "carol", "jitgate_role": "approver"}}
    ) as idp:
        config = f'\n[oidc]\nissuer = "{idp.url}"\nclient_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\nlabel = "Test IdP"\n'
        with start_stack(moto_server, tmp_path / "home", raw_config=config) as stack:
            context = browser.new_context()
            page = context.new_page()
            try:
                page.goto(f"{stack.control_url}/ui/")
                page.click("text=Sign in with Test IdP")
                page.wait_for_selector("text=Test IdP")
                page.click("text=Sign in as carol")
                page.wait_for_selector("text=Pending requests")
                assert "carol" in page.inner_text("header")
                assert stack.core.identity.user_principal("carol").role == "approver"
            finally:
                context.close()
