"""The worked example, end to end: what `make demo` tells.

An agent needs to read one object from a reporting bucket. It asks jitgate for exactly that,
the policy issues it at once, the agent reads the object with plain boto3 through jitgate, is
refused the object next to it, the grant expires, the same read fails, and the record of every
step verifies. Everything is real: a moto server plays AWS and checks jitgate's signatures,
jitgate runs its two listeners, and the agent talks to both over HTTP.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import boto3
import httpx
from botocore.config import Config
from botocore.exceptions import ClientError
from rich.console import Console
from rich.panel import Panel

from jitgate.cli import render
from jitgate.config import load_settings
from jitgate.core import build, init_home
from jitgate.sandbox.moto import ACCOUNT_ID, REGION, free_port, seed_demo_data, start_moto
from jitgate.server import Listeners, ServerThread, build_aws_endpoint

GRANT_SECONDS = 15  # five minutes in real use; short here so you can watch it expire
OBJECT_ARN = "arn:aws:s3:::reports/2026/q3.csv"

console = Console(width=None if sys.stdout.isatty() else 150)


class DemoFailed(Exception):
    pass


def step(number: int, text: str) -> None:
    console.print(f"\n[bold cyan]{number}.[/bold cyan] [bold]{text}[/bold]")


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)
    console.print(f"   [green]✓[/green] {what}")


def main() -> int:
    console.print(
        Panel(
            "An agent needs one object from a reporting bucket. It never holds an AWS key: it asks\n"
            "jitgate for exactly that read, for minutes, and jitgate checks and records every call.",
            title="jitgate: the worked example",
        )
    )
    moto = start_moto()
    home = Path(tempfile.mkdtemp(prefix="jitgate-demo-"))
    try:
        seed_demo_data(moto)
        init_home(home)
        core = build(load_settings(home))
        _ship_the_record_out(core, moto, home)
        endpoint = build_aws_endpoint(
            core,
            upstream_endpoint=moto.endpoint,
            credentials=moto.credentials,
            account_id=ACCOUNT_ID,
        )
        control, aws = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
        server = ServerThread(core, Listeners(control, aws), endpoint).start()
        try:
            return _story(
                core,
                f"http://{control[0]}:{control[1]}",
                f"http://{aws[0]}:{aws[1]}",
                moto.endpoint,
            )
        finally:
            server.stop()
            core.close()
    except DemoFailed as exc:
        console.print(f"\n[bold red]demo failed:[/bold red] {exc}")
        return 1
    finally:
        moto.stop()


def _story(core, control_url: str, endpoint_url: str, moto_url: str) -> int:  # type: ignore[no-untyped-def]
    console.print(
        f"moto plays AWS at {moto_url} (it checks every signature); jitgate's AWS endpoint is {endpoint_url}"
    )

    step(1, "An admin registers the agent. Its token is shown once; jitgate keeps only a hash.")
    _, token = core.identity.create_agent("reporter", ["analytics"])
    console.print(f"   agent [bold]reporter[/bold], token {token[:14]}…")

    step(2, f"The agent asks for s3:GetObject on {OBJECT_ARN}, with a reason.")
    agent_api = httpx.Client(base_url=control_url, headers={"authorization": f"Bearer {token}"})
    response = agent_api.post(
        "/v1/grants",
        json={
            "actions": ["s3:GetObject"],
            "resources": [OBJECT_ARN],
            "duration_seconds": GRANT_SECONDS,
            "reason": "build the Q3 revenue summary",
        },
    )
    grant = response.json()
    console.print(render.grant_panel({**grant, "credentials": None}))
    expect(
        response.status_code == 201 and grant["status"] == "active",
        "a low-risk read by a known agent is approved automatically by policy",
    )
    credentials = grant["credentials"]
    expect(
        credentials["AccessKeyId"].startswith("ASIA"),
        "credentials in STS shape, valid only at jitgate and only until the grant expires",
    )

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        config=Config(retries={"max_attempts": 1}),
    )

    step(3, "The agent reads the object with plain boto3, endpoint_url pointed at jitgate.")
    body = s3.get_object(Bucket="reports", Key="2026/q3.csv")["Body"].read().decode()
    console.print("   " + body.strip().replace("\n", "\n   "))
    expect(
        body.startswith("region,revenue"),
        "jitgate checked the call against the grant, re-signed it as itself, and forwarded it",
    )

    step(4, "The agent tries the object next to it.")
    code, message = _error_of(lambda: s3.get_object(Bucket="reports", Key="2026/payroll.csv"))
    console.print(f"   {code}: {message}")
    expect(
        code == "AccessDenied",
        "refused, naming the action and ARN the grant lacks; the refusal is recorded",
    )

    step(
        5, f"The grant expires on its own after {GRANT_SECONDS} seconds (five minutes in real use)."
    )
    expires = time.time() + GRANT_SECONDS + 0.2
    while (left := expires - time.time()) > 0:
        console.print(f"   {left:4.1f}s left", end="\r")
        time.sleep(min(left, 1.0))
    deadline = time.time() + 3
    while time.time() < deadline and not core.audit.events(
        grant_id=grant["id"], types=["grant.expired"]
    ):
        time.sleep(0.1)
    expect(
        bool(core.audit.events(grant_id=grant["id"], types=["grant.expired"])),
        "the sweeper recorded grant.expired",
    )

    step(6, "The same read, with the same credentials, now fails.")
    code, message = _error_of(lambda: s3.get_object(Bucket="reports", Key="2026/q3.csv"))
    console.print(f"   {code}: {message}")
    expect(code == "ExpiredToken", "between tasks the agent holds nothing that works")

    step(7, "The record: every request, decision, call and expiry, in a hash chain.")
    time.sleep(0.3)  # call outcomes are written just after the response
    events = [e.as_dict() for e in core.audit.events(limit=1000)]
    console.print(render.events_table(events))
    result = core.audit.verify()
    expect(
        result.ok, f"audit chain verifies: {result.checked} events, head {result.head_hash[:16]}…"
    )
    types = [e["type"] for e in events]
    for wanted in (
        "grant.requested",
        "grant.decided",
        "grant.activated",
        "call.allowed",
        "call.completed",
        "call.denied",
        "grant.expired",
    ):
        expect(wanted in types, f"the record holds {wanted}")
    _verify_from_the_copy(core, control_url)

    console.print(
        Panel(
            "A static key would have read payroll.csv too, tomorrow as well, for whoever turned\n"
            "the agent against you. This grant read one object, for fifteen seconds, on the record.",
            title="the contrast",
        )
    )
    return 0


AUDIT_BUCKET, AUDIT_PREFIX = "jitgate-audit", "demo"


def _ship_the_record_out(core, moto, home: Path) -> None:  # type: ignore[no-untyped-def]
    """Copies the database administrator cannot rewrite: an S3 bucket with Object Lock
    (COMPLIANCE mode), written with jitgate's own AWS identity, and an append-only file."""
    from jitgate.audit.sinks import FileSink, S3Sink

    s3 = moto.client("s3")
    s3.create_bucket(Bucket=AUDIT_BUCKET, ObjectLockEnabledForBucket=True)
    core.integrity.set_sinks(
        [S3Sink(s3, AUDIT_BUCKET, AUDIT_PREFIX, retain_days=1), FileSink(home / "audit.jsonl")]
    )


def _verify_from_the_copy(core, control_url: str) -> None:  # type: ignore[no-untyped-def]
    from jitgate.audit.copies import FileCopy, S3Copy
    from jitgate.audit.signing import Keyring
    from jitgate.audit.verify import verify_record

    step(8, "The record leaves jitgate's reach: signed, and shipped to write-once copies.")
    core.integrity.checkpoint("manual")
    shipped = core.integrity.ship()
    expect(
        not any(shipped.values()),
        f"checkpoints (Ed25519) and events shipped to s3://{AUDIT_BUCKET}/{AUDIT_PREFIX} "
        f"(Object Lock, COMPLIANCE) and {core.settings.home / 'audit.jsonl'}",
    )
    keys = Keyring.from_json(httpx.get(f"{control_url}/v1/audit/keys").text, "GET /v1/audit/keys")
    s3 = core.integrity.sinks[0].client  # jitgate's own identity in the sandbox
    copy = S3Copy(s3, AUDIT_BUCKET, AUDIT_PREFIX)
    report = verify_record(copy=copy, keyring=keys)  # no database access at all
    expect(
        report.ok,
        f"the S3 copy verifies on its own: {report.copy_events} events under "
        f"{report.copy_checkpoints} signed checkpoints, keys from GET /v1/audit/keys",
    )
    denied = core.audit.events(types=["call.denied"])[0].seq
    from sqlalchemy import text

    from jitgate.audit.chain import event_hash

    with core.db.write() as connection:  # someone with the database erases the refusal...
        rows = connection.execute(
            text("SELECT seq, body FROM audit_events WHERE seq >= :s ORDER BY seq"), {"s": denied}
        ).all()
        previous = connection.execute(
            text("SELECT hash FROM audit_events WHERE seq = :s"), {"s": denied - 1}
        ).scalar_one()
        for seq, body in rows:  # ...rewrites it as harmless and recomputes every later hash
            if seq == denied:
                body = body.replace('"type":"call.denied"', '"type":"call.completed"')
            digest = event_hash(previous, body)
            connection.execute(
                text("UPDATE audit_events SET body = :b, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"b": body, "p": previous, "h": digest, "s": seq},
            )
            previous = digest
        connection.execute(text("UPDATE audit_head SET hash = :h"), {"h": previous})
    report = core.integrity.verify(S3Copy(s3, AUDIT_BUCKET, AUDIT_PREFIX), keyring=keys)
    named = [p.message for p in report.problems if p.seq == denied]
    console.print(f"   {named[0] if named else report.problems}", highlight=False)
    expect(
        core.audit.verify().ok and not report.ok and bool(named),
        f"an attacker with the database rewrote event {denied} and every later hash; the chain "
        f"alone still verifies, the S3 copy names the edit",
    )
    file_report = core.integrity.verify(FileCopy(core.settings.home / "audit.jsonl"), keyring=keys)
    expect(not file_report.ok, "so does the append-only file copy")


def _error_of(call) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    try:
        call()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return str(error.get("Code")), str(error.get("Message"))
    return "none", "the call succeeded"


if __name__ == "__main__":
    sys.exit(main())
