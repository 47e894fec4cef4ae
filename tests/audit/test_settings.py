"""The [audit] section of jitgate.toml."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from jitgate.audit.settings import load_audit_settings, parse_span
from jitgate.config import Settings
from jitgate.errors import InvalidRequest


def settings(tmp_path: Path, audit: object) -> Settings:
    return Settings(
        home=tmp_path, database_url="sqlite://", policy_path=tmp_path / "p", raw={"audit": audit}
    )


def test_defaults_and_sinks(tmp_path: Path) -> None:
    parsed = load_audit_settings(
        settings(
            tmp_path,
            {
                "checkpoint_interval": "15s",
                "retention": "400d",
                "sinks": [
                    {"type": "file", "path": "audit.jsonl"},
                    {"type": "s3", "url": "s3://audit-bucket/prod/jitgate/", "retain_days": 90},
                ],
            },
        )
    )
    assert parsed.checkpoint_interval_seconds == 15
    assert parsed.retention_seconds == 400 * 86400
    assert parsed.sink_alarm_after_seconds == 300 and parsed.signing == "file"
    assert parsed.signing_key_path == tmp_path / "audit-signing.key"
    file_sink, s3_sink = parsed.sinks
    assert file_sink.path == tmp_path / "audit.jsonl"
    assert file_sink.name == f"file:{socket.gethostname()}:{tmp_path / 'audit.jsonl'}"
    assert (s3_sink.bucket, s3_sink.prefix, s3_sink.retain_days) == (
        "audit-bucket",
        "prod/jitgate",
        90,
    )
    assert s3_sink.name == "s3://audit-bucket/prod/jitgate" and s3_sink.object_lock is True


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ({"checkpoint_interval": "soon"}, "'soon' is not a duration"),
        ({"signing": "hsm"}, 'signing must be "file" or "kms"'),
        ({"signing": "kms"}, 'signing = "kms" needs kms_key_id'),
        ({"sinks": [{"type": "ftp"}]}, 'sinks[0]: type must be "file" or "s3"'),
        ({"sinks": [{"type": "s3"}]}, "an s3 sink needs url"),
        ({"sinks": [{"type": "s3", "url": "https://x"}]}, "is not an s3://bucket/prefix URL"),
        ({"sinks": [{"type": "file", "path": "a"}, {"type": "file", "path": "a"}]}, "same name"),
        ({"max_batch_events": 0}, "max_batch_events must be at least 1"),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(
    tmp_path: Path, audit: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match="jitgate.toml: \\[audit\\]") as caught:
        load_audit_settings(settings(tmp_path, audit))
    assert message in caught.value.message


def test_spans() -> None:
    assert parse_span("90s") == 90 and parse_span("1h30m") == 5400 and parse_span("2d") == 172800
    with pytest.raises(ValueError):
        parse_span("0s")
