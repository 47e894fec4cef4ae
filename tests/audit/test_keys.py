"""The signing key: outside the database, 0600, rotated without losing old checkpoints, public
half published at GET /v1/audit/keys; and a KMS key reached through jitgate's own identity."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

import jitgate.cli as cli
from jitgate.audit.copies import FileCopy
from jitgate.audit.integrity import AuditIntegrity
from jitgate.audit.signing import FileSigner, Keyring, KmsSigner, SigningError
from jitgate.clock import FakeClock
from jitgate.core import Jitgate

from .conftest import history, record


def test_init_writes_a_0600_key_file_outside_the_database(home: Path, core: Jitgate) -> None:
    key = home / "audit-signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    record_text = core.db.url
    assert "audit-signing" not in record_text
    from sqlalchemy import text

    core.integrity.checkpoint()
    with core.db.read() as connection:
        stored = " ".join(
            str(v)
            for row in connection.execute(text("SELECT * FROM audit_checkpoints"))
            for v in row
        )
    assert "PRIVATE" not in stored


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    FileSigner(path)
    os.chmod(path, 0o644)
    with pytest.raises(SigningError, match="readable by others"):
        FileSigner(path)


def test_first_use_creates_the_key_when_init_did_not(core: Jitgate, home: Path) -> None:
    (home / "audit-signing.key").unlink()
    made = core.integrity.checkpoint()
    assert made is not None
    assert (home / "audit-signing.key").stat().st_mode & 0o777 == 0o600


def test_keys_endpoint_is_public_and_has_no_secrets(
    api: TestClient, core: Jitgate, clock: FakeClock
) -> None:
    assert api.get("/v1/audit/keys").json() == {"keys": [], "current": None}
    core.integrity.checkpoint()
    body = api.get("/v1/audit/keys").json()  # no token: anyone verifying needs this
    (key,) = body["keys"]
    assert body["current"] == key["fingerprint"]
    assert key["algorithm"] == "ed25519" and key["source"] == "file"
    assert key["not_before"] == "2026-11-28T12:00:00.000Z" and key["not_after"] is None
    assert key["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in json.dumps(body)
    assert Keyring.from_json(json.dumps(body)).get(key["fingerprint"]) is not None


def test_rotation_keeps_old_checkpoints_verifiable(
    integrity: AuditIntegrity,
    core: Jitgate,
    clock: FakeClock,
    file_copy_path: Path,
    api: TestClient,
) -> None:
    history(core, clock, checkpoints=2, per=3)
    old_keyring = integrity.keyring()
    clock.advance(10)
    old, new = integrity.rotate_key()
    assert old != new
    history(core, clock, checkpoints=2, per=3)

    keys = {k["fingerprint"]: k for k in api.get("/v1/audit/keys").json()["keys"]}
    assert keys[old]["not_after"] == "2026-11-28T12:02:20.000Z"  # rotation + 10 s grace
    assert keys[new]["not_before"] == "2026-11-28T12:02:10.000Z" and keys[new]["not_after"] is None
    rotated = [e for e in core.audit.events(types=["audit.key_rotated"])]
    assert [(e.data["old_fingerprint"], e.data["new_fingerprint"]) for e in rotated] == [(old, new)]

    report = integrity.verify(FileCopy(file_copy_path))
    assert report.ok, report.problems
    assert report.checkpoints_checked == report.last_checkpoint == 6
    # a verifier holding only the old keyring can check the old checkpoints, not the new ones
    partial = integrity.verify(keyring=old_keyring)
    assert {p.checkpoint for p in partial.problems} == {4, 5, 6}
    assert {p.kind for p in partial.problems} == {"signature_forged"}


def test_a_retired_key_signing_outside_its_window_is_caught(
    core: Jitgate, clock: FakeClock, home: Path
) -> None:
    core.integrity.checkpoint()
    stolen = (home / "audit-signing.key").read_bytes()
    clock.advance(10)
    core.integrity.rotate_key()
    clock.advance(3600)
    # someone kept the old private key and signs a checkpoint with it an hour later
    (home / "old.key").write_bytes(stolen)
    os.chmod(home / "old.key", 0o600)
    thief = AuditIntegrity(
        core.db, clock, core.integrity.settings, signer=FileSigner(home / "old.key"), sinks=[]
    )
    with pytest.raises(SigningError, match="is valid only"):
        thief.checkpoint()
    # bypassing jitgate's own refusal does not help: the verifier checks the window
    from sqlalchemy import insert

    from jitgate.audit.checkpoint import checkpoint_body, latest_checkpoint
    from jitgate.audit.signing import b64
    from jitgate.store.schema import audit_checkpoints

    with core.db.read() as connection:
        last = latest_checkpoint(connection)
    assert last is not None
    signer = FileSigner(home / "old.key")
    body = checkpoint_body(
        number=last.number + 1,
        when=clock.now(),
        reason="interval",
        interval_seconds=60,
        first_seq=last.last_seq + 1,
        last_seq=last.last_seq,
        head_hash=last.head_hash,
        prev_checkpoint_hash=last.hash,
        batches=[],
        key_fingerprint=signer.fingerprint,
        algorithm="ed25519",
    )
    with core.db.write() as connection:
        connection.execute(
            insert(audit_checkpoints).values(
                number=last.number + 1,
                ts=clock.now(),
                first_seq=last.last_seq + 1,
                last_seq=last.last_seq,
                head_hash=last.head_hash,
                key_fingerprint=signer.fingerprint,
                body=body,
                signature=b64(signer.sign(body.encode())),
                hash="x",
            )
        )
    report = core.integrity.verify()
    assert [p.kind for p in report.problems] == ["key_outside_window"]
    assert "outside its validity window" in report.problems[0].message


def test_cli_keys_and_rotate(core: Jitgate, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.console, "_width", 250)
    runner = CliRunner()
    try:
        # the CLI runs on the wall clock, so it makes the checkpoints itself
        assert runner.invoke(cli.app, ["audit", "checkpoint"]).exit_code == 0
        before = json.loads(runner.invoke(cli.app, ["audit", "keys", "--json"]).stdout)
        rotated = runner.invoke(cli.app, ["audit", "rotate-key"])
        assert rotated.exit_code == 0, rotated.stderr
        assert "signing key rotated" in rotated.stdout
        after = json.loads(runner.invoke(cli.app, ["audit", "keys", "--json"]).stdout)
        assert len(after["keys"]) == 2 and after["current"] != before["current"]
        table = runner.invoke(cli.app, ["audit", "keys"])
        assert "(current)" in table.stdout and "ed25519" in table.stdout
        saved = home / "published-keys.json"
        saved.write_text(json.dumps(after))
        verified = runner.invoke(cli.app, ["audit", "verify", "--public-key", str(saved)])
        assert verified.exit_code == 0, verified.stderr
        assert "signed checkpoints: 3 verified" in verified.stdout
    finally:
        while cli._opened:
            cli._opened.pop().close()


def test_a_single_pem_public_key_is_accepted(core: Jitgate, home: Path, tmp_path: Path) -> None:
    core.integrity.checkpoint()
    pem = tmp_path / "key.pem"
    pem.write_text(core.integrity.public_keys()["keys"][0]["public_key"])
    keyring = Keyring.from_file(pem)
    assert len(keyring) == 1
    assert core.integrity.verify(keyring=keyring).ok


@pytest.mark.slow
def test_a_kms_key_signs_checkpoints(
    core: Jitgate, clock: FakeClock, moto_server: Any, tmp_path: Path
) -> None:
    import dataclasses

    kms = moto_server.client("kms")
    key_id = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    settings = dataclasses.replace(core.integrity.settings, signing="kms", kms_key_id=key_id)
    integrity = AuditIntegrity(core.db, clock, settings, audit=core.audit, kms_client=kms, sinks=[])
    assert isinstance(integrity.signer, KmsSigner)
    record(core, clock, 3)
    made = integrity.checkpoint()
    assert made is not None and made.algorithm == "ecdsa-p256-sha256"
    (entry,) = integrity.public_keys()["keys"]
    assert entry["source"] == f"kms:{key_id}" or entry["source"].startswith("kms:")
    assert integrity.verify().ok  # verified locally with the public key: no AWS needed
    # rotating to another KMS key: its first checkpoint retires the old one
    second = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    clock.advance(60)
    rotated = AuditIntegrity(
        core.db,
        clock,
        dataclasses.replace(settings, kms_key_id=second),
        audit=core.audit,
        kms_client=kms,
        sinks=[],
    )
    rotated.checkpoint()
    keys = rotated.public_keys()["keys"]
    assert [k["not_after"] is None for k in keys] == [False, True]
    assert rotated.verify().ok
    with pytest.raises(Exception, match="the signing key is a KMS key"):
        rotated.rotate_key()
