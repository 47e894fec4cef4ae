"""Turning an AWS SDK result into JSON a model may read.

- Streams are read (up to a cap) and bytes decoded; dates become ISO strings.
- Credentials never pass: any ``SecretAccessKey`` or ``SessionToken`` (for example in an
  ``sts:AssumeRole`` result) is replaced by a redaction note, whatever the grant.
- Secret values (``SecretString``, SecureString parameter values, KMS plaintext, ...) pass only
  when the grant includes the action that reads them, and are then marked::

      "SecretString": {"jitgate_secret": true, "value": "...",
                       "covered_by": "secretsmanager:GetSecretValue"}

  so whatever shows the conversation to a person, or logs it, can tell them apart.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable, Collection
from typing import Any

MAX_BODY_BYTES = 1024 * 1024

#: Keys whose values are credentials; never shown to a model.
ALWAYS_REDACTED = frozenset({"SecretAccessKey", "SessionToken", "secretAccessKey", "sessionToken"})
REDACTED = "[redacted: jitgate never shows credentials to a model]"

# (service, operation) -> (the action whose grant reveals them, where the secret values are)
# A path is a tuple of keys; "*" walks every element of a list.
_SECRETS: dict[tuple[str, str], tuple[str, tuple[tuple[str, ...], ...]]] = {
    ("secretsmanager", "GetSecretValue"): (
        "secretsmanager:GetSecretValue",
        (("SecretString",), ("SecretBinary",)),
    ),
    ("secretsmanager", "BatchGetSecretValue"): (
        "secretsmanager:GetSecretValue",
        (("SecretValues", "*", "SecretString"), ("SecretValues", "*", "SecretBinary")),
    ),
    ("ssm", "GetParameter"): ("ssm:GetParameter", (("Parameter", "Value"),)),
    ("ssm", "GetParameters"): ("ssm:GetParameters", (("Parameters", "*", "Value"),)),
    ("ssm", "GetParametersByPath"): ("ssm:GetParametersByPath", (("Parameters", "*", "Value"),)),
    ("ssm", "GetParameterHistory"): ("ssm:GetParameterHistory", (("Parameters", "*", "Value"),)),
    ("kms", "Decrypt"): ("kms:Decrypt", (("Plaintext",),)),
    ("kms", "GenerateDataKey"): ("kms:GenerateDataKey", (("Plaintext",),)),
    ("kms", "GenerateDataKeyPair"): ("kms:GenerateDataKeyPair", (("PrivateKeyPlaintext",),)),
    ("kms", "GenerateRandom"): ("kms:GenerateRandom", (("Plaintext",),)),
}


def _plain(value: Any, notes: list[str], max_bytes: int) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if k in ALWAYS_REDACTED else _plain(v, notes, max_bytes)
            for k, v in value.items()
            if k != "ResponseMetadata"
        }
    if isinstance(value, list | tuple):
        return [_plain(v, notes, max_bytes) for v in value]
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if hasattr(value, "read"):  # a StreamingBody
        data = value.read(max_bytes + 1)
        if hasattr(value, "close"):
            value.close()
        if len(data) > max_bytes:
            notes.append(f"a body was cut at {max_bytes} bytes")
            data = data[:max_bytes]
        return _plain(bytes(data), notes, max_bytes)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    return value


def _walk(node: Any, path: tuple[str, ...], apply: Callable[[dict[str, Any], str], None]) -> None:
    if not path or node is None:
        return
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(node, list):
            for item in node:
                _walk(item, rest, apply)
        return
    if not isinstance(node, dict) or head not in node:
        return
    if not rest:
        apply(node, head)
    else:
        _walk(node[head], rest, apply)


def model_view(
    service: str,
    operation: str,
    result: dict[str, Any],
    granted_actions: Collection[str],
    *,
    max_bytes: int = MAX_BODY_BYTES,
) -> dict[str, Any]:
    """``result`` as JSON a model may see, with ``_jitgate`` notes on what was marked or cut."""
    notes: list[str] = []
    view: dict[str, Any] = _plain(result, notes, max_bytes)
    rule = _SECRETS.get((service, operation))
    marked: list[str] = []
    if rule is not None:
        action, paths = rule
        reveal = action in granted_actions
        for path in paths:

            def apply(parent: dict[str, Any], key: str, path: tuple[str, ...] = path) -> None:
                if key == "Value" and parent.get("Type", "SecureString") != "SecureString":
                    return  # a plain String or StringList parameter is not a secret
                if reveal:
                    parent[key] = {
                        "jitgate_secret": True,
                        "value": parent[key],
                        "covered_by": action,
                    }
                else:
                    parent[key] = f"[withheld: the grant does not include {action}]"
                marked.append(".".join(path))

            _walk(view, path, apply)
    if marked or notes:
        view["_jitgate"] = {}
        if marked:
            view["_jitgate"]["secret_fields"] = sorted(set(marked))
        if notes:
            view["_jitgate"]["notes"] = notes
    return view
