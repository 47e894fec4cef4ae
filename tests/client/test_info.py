"""``GET /v1/info``: how agents' tools learn where jitgate's AWS endpoint is."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from client.conftest import Stack
from jitgate.api.app import create_control_app
from jitgate.core import Jitgate


def test_info_is_public_and_names_the_aws_endpoint(core: Jitgate) -> None:
    app = create_control_app(core, aws_endpoint="http://127.0.0.1:8750")
    with TestClient(app, base_url="http://jitgate.test:8751") as client:
        info = client.get("/v1/info").json()
    assert info["aws_endpoint"] == "http://127.0.0.1:8750"
    assert info["region"] == "us-east-1"
    assert info["console_url"] == "http://jitgate.test:8751/ui"
    assert "account" not in str(info)  # nothing about jitgate's own AWS identity


def test_a_wildcard_listener_is_reported_with_the_callers_host(core: Jitgate) -> None:
    app = create_control_app(core, aws_endpoint="https://0.0.0.0:8750")
    with TestClient(app, base_url="http://jitgate.internal:8751") as client:
        assert client.get("/v1/info").json()["aws_endpoint"] == "https://jitgate.internal:8750"


def test_configured_public_urls_win(core: Jitgate) -> None:
    raw: dict[str, Any] = {
        "server": {
            "aws_endpoint_url": "https://aws.jitgate.example.com/",
            "public_url": "https://jitgate.example.com",
        }
    }
    configured = dataclasses.replace(core, settings=dataclasses.replace(core.settings, raw=raw))
    with TestClient(create_control_app(configured, aws_endpoint="http://127.0.0.1:1")) as client:
        info = client.get("/v1/info").json()
    assert info["aws_endpoint"] == "https://aws.jitgate.example.com"
    assert info["console_url"] == "https://jitgate.example.com/ui"


def test_without_an_aws_listener_there_is_no_endpoint(api: TestClient) -> None:
    assert api.get("/v1/info").json()["aws_endpoint"] is None


@pytest.mark.slow
def test_a_running_server_reports_its_aws_listener(stack: Stack) -> None:
    info = httpx.get(f"{stack.url}/v1/info").json()
    assert info["aws_endpoint"] == stack.aws_url
