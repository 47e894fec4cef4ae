"""Run the AWS CLI's own argument parsing for one command and print the API call it would make.

``python -m jitgate.client._awscli_capture ARGS...`` (ARGS without the leading ``aws``) prints
``{"service": ..., "operation": ..., "params": {...}, "region": ...}`` as JSON on stdout and
sends nothing anywhere: the first API call is stopped before its parameters are even built into
a request. Run in a subprocess with a neutral environment by :mod:`jitgate.client.awscli`, so the
caller's AWS profiles (and their credential_process) are never touched.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import sys
from contextlib import redirect_stdout
from typing import Any


class _Stop(Exception):  # noqa: N818 - control flow
    pass


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if hasattr(value, "read"):
        return ""  # a streamed body (fileb://, a local file): irrelevant to the scope
    return value


def main(argv: list[str]) -> int:
    from awscli.clidriver import create_clidriver

    captured: list[dict[str, Any]] = []

    def stop(params: Any, model: Any, context: Any = None, **_: Any) -> None:
        region = None
        if context is not None:
            region = (context.get("client_region") or None) if isinstance(context, dict) else None
        captured.append(
            {
                "service": model.service_model.service_name,
                "operation": model.name,
                "params": _jsonable(params),
                "region": region,
            }
        )
        raise _Stop

    driver = create_clidriver()
    driver.session.register("before-parameter-build", stop)
    sink = io.StringIO()
    with redirect_stdout(sink):
        rc = driver.main(argv)
    if not captured:
        sys.stderr.write(f"the AWS CLI made no API call for this command (exit {rc})\n")
        return 2
    sys.stdout.write(json.dumps(captured[0]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
