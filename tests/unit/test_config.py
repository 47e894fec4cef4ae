"""Settings from jitgate.toml, and the policy file as the running services see it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import OBJECT_ARN, build_core
from jitgate.clock import FakeClock
from jitgate.config import DEFAULT_CONFIG, load_settings
from jitgate.core import init_home
from jitgate.errors import Conflict, InvalidRequest, PolicyError


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "jitgate.toml").write_text(text, encoding="utf-8")


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JITGATE_DATABASE_URL", raising=False)
    write_config(tmp_path, DEFAULT_CONFIG)
    settings = load_settings(tmp_path)
    assert settings.database_url == f"sqlite+pysqlite:///{tmp_path / 'jitgate.db'}"
    assert settings.policy_path == tmp_path / "policy.cedar"
    assert settings.control_listen == ("127.0.0.1", 8751)
    assert settings.aws_listen == ("127.0.0.1", 8750)
    assert (settings.default_duration_seconds, settings.lapse_seconds) == (300, 900)
    assert settings.audit_durability == "fsync"
    assert (settings.failures_per_source, settings.failures_overall) == (20, 200)
    assert settings.sensitive_arns == ()


def test_environment_database_url_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, '[database]\nurl = "sqlite+pysqlite:////elsewhere.db"\n')
    monkeypatch.delenv("JITGATE_DATABASE_URL", raising=False)
    assert load_settings(tmp_path).database_url == "sqlite+pysqlite:////elsewhere.db"
    monkeypatch.setenv("JITGATE_DATABASE_URL", "postgresql+psycopg://db/jitgate")
    assert load_settings(tmp_path).database_url == "postgresql+psycopg://db/jitgate"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[grants\n", "jitgate.toml: "),
        ('[grants]\nlapse_after = "soon"\n', "[grants] 'soon' is not a duration"),
        (
            '[grants]\nsensitive_arns = "arn:aws:s3:::x/*"\n',
            "sensitive_arns must be a list of strings",
        ),
        (
            '[server]\ncontrol_listen = "localhost"\n',
            "control_listen must be HOST:PORT, got 'localhost'",
        ),
        ('[server]\naws_listen = "127.0.0.1:99999"\n', "aws_listen must be HOST:PORT"),
        ('[audit]\ndurability = "sometimes"\n', '[audit] durability must be "fsync" or "os"'),
        ("[audit]\nfailures_per_source = 0\n", "[audit] failures_per_source must be a whole"),
        ('[audit]\nfailures_overall = "many"\n', "[audit] failures_overall must be a whole"),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    write_config(tmp_path, text)
    with pytest.raises(InvalidRequest) as info:
        load_settings(tmp_path)
    assert message in info.value.message


def test_init_refuses_to_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JITGATE_DATABASE_URL", raising=False)
    written = init_home(tmp_path / "h")
    assert [p.name for p in written] == ["jitgate.toml", "policy.cedar", "master.key"]
    key = (tmp_path / "h" / "master.key").read_bytes()
    with pytest.raises(Conflict, match="already exist; use --force to overwrite"):
        init_home(tmp_path / "h")
    init_home(tmp_path / "h", force=True)
    assert (tmp_path / "h" / "master.key").read_bytes() == key  # grants issued before stay valid


def test_a_master_key_readable_by_others_is_refused(
    home: Path, database_url: str, clock: FakeClock
) -> None:
    os.chmod(home / "master.key", 0o644)
    with pytest.raises(PermissionError, match="is readable by others"):
        build_core(home, database_url, clock)


def test_configured_sensitive_arns_and_durations_reach_the_grants(
    home: Path, database_url: str, clock: FakeClock
) -> None:
    config = (home / "jitgate.toml").read_text(encoding="utf-8")
    config = config.replace('default_duration = "5m"', 'default_duration = "2m"')
    config = config.replace('  # "arn:aws:s3:::payroll/*",', '  "arn:aws:s3:::payroll/*",')
    (home / "jitgate.toml").write_text(config, encoding="utf-8")
    core = build_core(home, database_url, clock)
    try:
        _, token = core.identity.create_agent("agent-1")
        agent = core.identity.authenticate(token)
        payroll, _ = core.grants.request(
            agent, actions=["s3:GetObject"], resources=["arn:aws:s3:::payroll/2026.csv"], reason="r"
        )
        assert payroll.status == "pending"
        assert payroll.decision["policies"] == ["sensitive-reads-need-approval"]
        report, _ = core.grants.request(
            agent, actions=["s3:GetObject"], resources=[OBJECT_ARN], reason="r"
        )
        assert (report.status, report.duration_seconds) == ("active", 120)
    finally:
        core.close()


def test_a_broken_policy_file_at_start_is_refused(
    home: Path, database_url: str, clock: FakeClock
) -> None:
    (home / "policy.cedar").write_text(
        '@approval("auto")\npermit (principal, action, resource)', encoding="utf-8"
    )
    with pytest.raises(PolicyError) as info:
        build_core(home, database_url, clock)
    assert (
        info.value.message == f"{home / 'policy.cedar'}:1: does not parse: unexpected end of input"
    )


def test_a_running_service_keeps_its_last_good_policy(
    home: Path, database_url: str, clock: FakeClock
) -> None:
    core = build_core(home, database_url, clock)
    try:
        _, token = core.identity.create_agent("agent-1")
        agent = core.identity.authenticate(token)
        path = home / "policy.cedar"
        mtime = path.stat().st_mtime
        path.write_text("permit (principal, action, resource);\n", encoding="utf-8")
        os.utime(path, (mtime + 10, mtime + 10))
        grant, _ = core.grants.request(
            agent, actions=["s3:GetObject"], resources=[OBJECT_ARN], reason="r"
        )
        assert grant.status == "active"
        assert grant.decision["policies"] == ["auto-approve-low-risk-reads"]
        assert core.policy.last_error == (
            f'{path}:1: a permit needs @approval("auto") or @approval("required")'
        )
        path.write_text(
            '@id("all")\n@approval("required")\npermit (principal, action, resource);\n'
        )
        os.utime(path, (mtime + 20, mtime + 20))
        grant, _ = core.grants.request(
            agent, actions=["s3:GetObject"], resources=[OBJECT_ARN], reason="r"
        )
        assert (grant.status, grant.decision["policies"]) == ("pending", ["all"])
        assert core.policy.last_error is None
    finally:
        core.close()
