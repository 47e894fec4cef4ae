"""Reading a Cedar policy file: statements with their line numbers, annotations, validation.

Cedar's own parser reports what is wrong but not always where; splitting the file into
statements first lets every error name the file and line a person has to open.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cedarpy

from jitgate.errors import PolicyError
from jitgate.iam import catalog
from jitgate.policy.durations import parse_duration

MAX_GRANT_SECONDS = 12 * 3600
DEFAULT_MAX_SECONDS = 15 * 60

CONTEXT_ATTRIBUTES = frozenset(
    {"access_level", "sensitive", "privilege_escalation", "prefix", "duration_seconds", "reason"}
)
RESOURCE_ATTRIBUTES = frozenset({"arn", "service", "region", "account", "type"})
PRINCIPAL_ATTRIBUTES = frozenset({"name"})
KNOWN_ANNOTATIONS = frozenset(
    {"id", "approval", "max_duration", "approvers", "approver_group", "allow_prefix", "description"}
)


@dataclass(frozen=True)
class PolicyMeta:
    """One policy statement: its id (the @id annotation, or Cedar's own), line and annotations."""

    cedar_id: str  # Cedar's "policyN"
    id: str
    line: int
    effect: str  # "permit" | "forbid"
    approval: str  # "auto" | "required" ("" for forbid)
    max_duration_seconds: int
    max_duration_explicit: bool  # the permit names its own @max_duration
    approvers: int
    approver_group: str | None
    allow_prefix: bool
    text: str


@dataclass(frozen=True)
class LoadedPolicies:
    policy_set: cedarpy.PolicySet
    by_cedar_id: dict[str, PolicyMeta]
    text: str
    path: str


def split_statements(text: str) -> Iterator[tuple[int, str]]:
    """Yield (first line, statement text) for each ';'-terminated statement.

    Semicolons inside string literals and comments do not end a statement. A trailing fragment
    without ';' is yielded too, so the parser can report it.
    """
    start = 0
    line = 1
    start_line: int | None = None
    index = 0
    in_string = False
    length = len(text)
    while index < length:
        char = text[index]
        if in_string:
            if char == "\\":
                index += 2
                continue
            if char == '"':
                in_string = False
        elif char == "/" and text.startswith("//", index):
            end = text.find("\n", index)
            index = length if end == -1 else end
            continue
        elif char == '"':
            in_string = True
            start_line = start_line or line
        elif char == ";":
            yield (start_line or line, text[start : index + 1])
            start = index + 1
            start_line = None
        elif not char.isspace() and start_line is None:
            start_line = line
        if char == "\n":
            line += 1
        index += 1
    if start_line is not None:
        yield (start_line, text[start:])


def _fail(path: str, line: int, reason: str) -> PolicyError:
    return PolicyError(f"{path}:{line}: {reason}")


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _check_references(path: str, line: int, policy_json: dict[str, Any]) -> None:
    """Catch typos that Cedar without a schema would only meet at evaluation time."""
    known = {
        "context": CONTEXT_ATTRIBUTES,
        "resource": RESOURCE_ATTRIBUTES,
        "principal": PRINCIPAL_ATTRIBUTES,
    }
    for node in _walk(policy_json):
        if not isinstance(node, dict):
            continue
        for op in (".", "has"):
            access = node.get(op)
            if isinstance(access, dict) and isinstance(access.get("left"), dict):
                var = access["left"].get("Var")
                attr = access.get("attr")
                if var in known and attr not in known[var]:
                    raise _fail(
                        path,
                        line,
                        f"unknown attribute {var}.{attr} (known: {', '.join(sorted(known[var]))})",
                    )
        entity = node.get("__entity") if "__entity" in node else node.get("entity")
        if isinstance(entity, dict) and entity.get("type") == "Action":
            name = str(entity.get("id", ""))
            if catalog.lookup_action(name) is None:
                raise _fail(path, line, f"Action::{json.dumps(name)} is not an IAM action")
        for entities in (node.get("entities"),):
            if isinstance(entities, list):
                for item in entities:
                    if isinstance(item, dict) and item.get("type") == "Action":
                        name = str(item.get("id", ""))
                        if catalog.lookup_action(name) is None:
                            raise _fail(
                                path, line, f"Action::{json.dumps(name)} is not an IAM action"
                            )


def _meta(path: str, line: int, cedar_id: str, body: dict[str, Any], text: str) -> PolicyMeta:
    annotations: dict[str, str] = body.get("annotations", {}) or {}
    for key in annotations:
        if key not in KNOWN_ANNOTATIONS:
            raise _fail(
                path,
                line,
                f"unknown annotation @{key} (known: {', '.join(sorted(KNOWN_ANNOTATIONS))})",
            )
    effect = body["effect"]
    approval = annotations.get("approval", "")
    if effect == "permit":
        if approval not in ("auto", "required"):
            raise _fail(path, line, 'a permit needs @approval("auto") or @approval("required")')
    elif approval:
        raise _fail(path, line, "@approval has no meaning on a forbid")
    max_seconds = DEFAULT_MAX_SECONDS
    if "max_duration" in annotations:
        try:
            max_seconds = parse_duration(annotations["max_duration"])
        except ValueError as exc:
            raise _fail(path, line, f"@max_duration: {exc}") from None
        if max_seconds > MAX_GRANT_SECONDS:
            raise _fail(path, line, "@max_duration may not exceed 12h")
    approvers = 1
    if "approvers" in annotations:
        raw = annotations["approvers"]
        if not raw.isdigit() or not 1 <= int(raw) <= 10:
            raise _fail(path, line, f"@approvers must be a number from 1 to 10, got {raw!r}")
        approvers = int(raw)
    allow_prefix = annotations.get("allow_prefix", "false")
    if allow_prefix not in ("true", "false"):
        raise _fail(path, line, '@allow_prefix must be "true" or "false"')
    return PolicyMeta(
        cedar_id=cedar_id,
        id=annotations.get("id", cedar_id),
        line=line,
        effect=effect,
        approval=approval,
        max_duration_seconds=max_seconds,
        max_duration_explicit="max_duration" in annotations,
        approvers=approvers,
        approver_group=annotations.get("approver_group"),
        allow_prefix=allow_prefix == "true",
        text=text.strip(),
    )


def load_policies(text: str, path: str = "policy.cedar") -> LoadedPolicies:
    """Parse and validate a policy file; PolicyError names file, line and reason."""
    statements = [(line, chunk) for line, chunk in split_statements(text) if chunk.strip()]
    for line, chunk in statements:
        try:
            cedarpy.PolicySet.from_str(chunk)
        except (ValueError, RuntimeError) as exc:
            raise _fail(path, line, f"does not parse: {exc}") from None
    try:
        policy_set = cedarpy.PolicySet.from_str(text)
        static = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    except (ValueError, RuntimeError) as exc:
        raise PolicyError(f"{path}: does not parse: {exc}") from None
    if len(static) != len(statements):
        raise PolicyError(f"{path}: found {len(static)} policies in {len(statements)} statements")
    by_cedar_id: dict[str, PolicyMeta] = {}
    seen_ids: dict[str, int] = {}
    for index, (line, chunk) in enumerate(statements):
        cedar_id = f"policy{index}"
        body = static[cedar_id]
        _check_references(path, line, body)
        meta = _meta(path, line, cedar_id, body, chunk)
        if meta.id in seen_ids:
            raise _fail(path, line, f"@id({meta.id!r}) is already used on line {seen_ids[meta.id]}")
        seen_ids[meta.id] = line
        by_cedar_id[cedar_id] = meta
    if not any(meta.effect == "permit" for meta in by_cedar_id.values()):
        raise PolicyError(f"{path}: has no permit, so every request would be denied")
    return LoadedPolicies(policy_set, by_cedar_id, text, path)
