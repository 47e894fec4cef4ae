"""The running server keeps the record: a checkpoint at start, every interval and on shutdown,
each shipped to the configured sinks; the control plane publishes keys and status."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import OBJECT_ARN, bearer, build_core, run_server, wait_for
from jitgate.audit.checkpoint import load_checkpoints
from jitgate.audit.copies import FileCopy
from jitgate.clock import SystemClock


@pytest.mark.slow
def test_a_server_checkpoints_ships_and_seals_on_shutdown(
    home: Path, database_url: str, tmp_path: Path
) -> None:
    copy = tmp_path / "server-copy.jsonl"
    config = home / "jitgate.toml"
    text = config.read_text()
    assert 'checkpoint_interval = "60s"' in text  # jitgate init's default
    config.write_text(
        text.replace('checkpoint_interval = "60s"', 'checkpoint_interval = "1s"')
        + f'\n[[audit.sinks]]\ntype = "file"\npath = "{copy}"\n'
    )
    core = build_core(home, database_url, SystemClock())
    try:
        _, agent = core.identity.create_agent("reporter")
        _, auditor = core.identity.create_user("alice", "auditor")
        with run_server(core) as server:
            client = httpx.Client(base_url=server.url, timeout=10)
            granted = client.post(
                "/v1/grants",
                headers=bearer(agent),
                json={"actions": ["s3:GetObject"], "resources": [OBJECT_ARN], "reason": "q3"},
            )
            assert granted.status_code == 201
            head = core.audit.head()[0]

            def sealed_and_shipped() -> bool:
                status = client.get("/v1/audit/status", headers=bearer(auditor)).json()
                return (
                    status["checkpoint"]["last_seq"] >= head
                    and status["sinks"][0]["shipped_seq"] >= head
                )

            assert wait_for(sealed_and_shipped, timeout=10)
            keys = client.get("/v1/audit/keys").json()
            assert len(keys["keys"]) == 1 and keys["current"] == keys["keys"][0]["fingerprint"]
            health = client.get("/healthz").json()
            assert health["audit_alarm"] is False
            assert client.get("/v1/audit/status", headers=bearer(agent)).status_code == 403
            checkpoints = client.get("/v1/audit/checkpoints", headers=bearer(auditor)).json()
            assert checkpoints["checkpoints"][0]["reason"] == "startup"
            integrity = client.get("/v1/audit/integrity", headers=bearer(auditor)).json()
            assert integrity["ok"] is True
        with core.db.read() as connection:
            made = load_checkpoints(connection)
        assert made[0].reason == "startup" and made[-1].reason == "shutdown"
        assert any(c.reason == "interval" for c in made)
        report = core.integrity.verify(FileCopy(copy))
        assert report.ok, report.problems
        assert report.copy_last_checkpoint == made[-1].number  # the shutdown one was shipped
        assert report.matched_seq == core.audit.head()[0]
    finally:
        core.close()
