"""Turn an AWS CLI command line into the API calls it will make, for ``jitgate scope-for``.

- ``aws s3 <cp|mv|rm|ls|sync|mb|rb|presign> ...`` (the high-level S3 commands, which are
  customizations rather than API operations) are translated here, by a table that follows what
  the AWS CLI does: ``cp s3://b/k -`` reads the object (HeadObject then GetObject, both
  ``s3:GetObject``), ``cp --recursive`` and ``sync`` list the bucket and then act on every key
  under the prefix, ``mv`` copies then deletes, ``rb --force`` empties the bucket first.
- Every other command (``aws s3api get-object ...``, ``aws dynamodb get-item ...``) is parsed by
  the AWS CLI itself (the ``awscli`` package), in a subprocess with a neutral environment that
  stops before anything is sent, so shorthand syntax, JSON arguments and ``file://`` work
  exactly as in the real command.

The result is a list of planned calls in the shape ``POST /v1/scope`` takes.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from jitgate.client.errors import JitgateClientError

#: Global AWS CLI options that take a value (the value is not a positional argument).
_GLOBAL_WITH_VALUE = frozenset(
    {
        "--region",
        "--profile",
        "--endpoint-url",
        "--output",
        "--query",
        "--color",
        "--ca-bundle",
        "--cli-read-timeout",
        "--cli-connect-timeout",
        "--cli-binary-format",
    }
)
#: ``aws s3`` options that take no value; every other ``--option`` takes one.
_S3_FLAGS = frozenset(
    {
        "--recursive",
        "--dryrun",
        "--quiet",
        "--follow-symlinks",
        "--no-follow-symlinks",
        "--no-guess-mime-type",
        "--only-show-errors",
        "--no-progress",
        "--ignore-glacier-warnings",
        "--force-glacier-transfer",
        "--delete",
        "--exact-timestamps",
        "--size-only",
        "--human-readable",
        "--summarize",
        "--force",
        "--no-overwrite",
        "--debug",
        "--no-verify-ssl",
        "--no-paginate",
        "--no-sign-request",
        "--copy-props",
        "--checksum-mode",
    }
)
# Of the value options, these change what a call needs (the rest only shape the transfer).
_S3_PARAM_OPTIONS = {"--acl": "ACL", "--request-payer": "RequestPayer"}


class AwsCliNotUnderstood(JitgateClientError):
    """The command line could not be turned into API calls."""


def _strip_aws(argv: Sequence[str]) -> list[str]:
    args = list(argv)
    if args and posixpath.basename(args[0]) in ("aws", "aws.cmd", "aws.exe"):
        args = args[1:]
    if not args:
        raise AwsCliNotUnderstood("give an AWS CLI command, e.g. -- aws s3 cp s3://bucket/key -")
    return args


def _global_region(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--region" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--region="):
            return arg.split("=", 1)[1]
    return None


def plan_aws_command(argv: Sequence[str], *, default_region: str) -> list[dict[str, Any]]:
    """The planned calls (``{service, operation, params, region[, each_key_under_prefix]}``)
    that the AWS CLI command ``argv`` (with or without the leading ``aws``) will make."""
    args = _strip_aws(argv)
    region = _global_region(args) or default_region
    command = _first_positional(args)
    if command == "s3":
        return _plan_s3(args[args.index("s3") + 1 :], region)
    return [_capture(args, region)]


def _first_positional(args: list[str]) -> str:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            i += 2 if arg in _GLOBAL_WITH_VALUE else 1
            continue
        return arg
    raise AwsCliNotUnderstood("no AWS CLI command found in the arguments")


# --- aws s3 ----------------------------------------------------------------------------------
def _split(args: list[str]) -> tuple[list[str], set[str], dict[str, str]]:
    positional: list[str] = []
    flags: set[str] = set()
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in _S3_FLAGS:
                flags.add(name)
                i += 1
            elif eq:
                options[name] = value
                i += 1
            else:
                if i + 1 >= len(args):
                    raise AwsCliNotUnderstood(f"option {name} needs a value")
                options[name] = args[i + 1]
                i += 2
        else:
            positional.append(arg)
            i += 1
    return positional, flags, options


def _s3_path(value: str) -> tuple[str, str] | None:
    if not value.startswith("s3://"):
        return None
    rest = value[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise AwsCliNotUnderstood(f"{value!r} names no bucket")
    return bucket, key


def _call(service: str, operation: str, region: str, **params: Any) -> dict[str, Any]:
    return {"service": service, "operation": operation, "params": params, "region": region}


def _each(operation: str, region: str, **params: Any) -> dict[str, Any]:
    call = _call("s3", operation, region, **params)
    call["each_key_under_prefix"] = True
    return call


def _extra(options: dict[str, str]) -> dict[str, str]:
    return {param: options[opt] for opt, param in _S3_PARAM_OPTIONS.items() if opt in options}


def _dest_key(src: str, key: str) -> str:
    if key and not key.endswith("/"):
        return key
    name = posixpath.basename(src.rstrip("/")) if src != "-" else ""
    if not name:
        raise AwsCliNotUnderstood(f"cannot tell the destination key for {src!r}")
    return key + name


def _plan_s3(args: list[str], region: str) -> list[dict[str, Any]]:
    positional, flags, options = _split(args)
    if not positional:
        raise AwsCliNotUnderstood("aws s3 needs a subcommand (cp, mv, rm, ls, sync, mb, rb, ...)")
    sub, paths = positional[0], positional[1:]
    recursive = "--recursive" in flags
    extra = _extra(options)
    if sub == "ls":
        if not paths:
            return [_call("s3", "ListBuckets", region)]
        target = _s3_path(paths[0])
        if target is None:
            raise AwsCliNotUnderstood(f"aws s3 ls takes an s3:// path, got {paths[0]!r}")
        bucket, prefix = target
        params: dict[str, Any] = {"Bucket": bucket}
        if prefix:
            params["Prefix"] = prefix
        return [_call("s3", "ListObjectsV2", region, **params)]
    if sub in ("mb", "rb"):
        target = _s3_path(paths[0]) if paths else None
        if target is None:
            raise AwsCliNotUnderstood(f"aws s3 {sub} takes s3://bucket")
        if sub == "mb":
            return [_call("s3", "CreateBucket", region, Bucket=target[0])]
        calls = []
        if "--force" in flags:
            calls += [
                _call("s3", "ListObjectsV2", region, Bucket=target[0]),
                _each("DeleteObject", region, Bucket=target[0], Key=""),
            ]
        return [*calls, _call("s3", "DeleteBucket", region, Bucket=target[0])]
    if sub == "presign":
        target = _s3_path(paths[0]) if paths else None
        if target is None or not target[1]:
            raise AwsCliNotUnderstood("aws s3 presign takes s3://bucket/key")
        return [_call("s3", "GetObject", region, Bucket=target[0], Key=target[1])]
    if sub == "rm":
        target = _s3_path(paths[0]) if paths else None
        if target is None:
            raise AwsCliNotUnderstood("aws s3 rm takes an s3:// path")
        bucket, key = target
        if recursive:
            listing = {"Bucket": bucket, **({"Prefix": key} if key else {})}
            return [
                _call("s3", "ListObjectsV2", region, **listing),
                _each("DeleteObject", region, Bucket=bucket, Key=key, **extra),
            ]
        return [_call("s3", "DeleteObject", region, Bucket=bucket, Key=key, **extra)]
    if sub in ("cp", "mv", "sync"):
        if len(paths) != 2:
            raise AwsCliNotUnderstood(f"aws s3 {sub} takes a source and a destination")
        return _plan_transfer(
            sub, paths[0], paths[1], recursive or sub == "sync", flags, extra, region
        )
    raise AwsCliNotUnderstood(f"aws s3 {sub} is not understood by scope-for")


def _plan_transfer(
    sub: str,
    src: str,
    dst: str,
    many: bool,
    flags: set[str],
    extra: dict[str, str],
    region: str,
) -> list[dict[str, Any]]:
    source, dest = _s3_path(src), _s3_path(dst)
    if source is None and dest is None:
        raise AwsCliNotUnderstood(f"aws s3 {sub}: one side must be an s3:// path")
    calls: list[dict[str, Any]] = []
    if not many:
        if source and dest:
            key = _dest_key(source[1], dest[1])
            calls.append(
                _call(
                    "s3",
                    "CopyObject",
                    region,
                    Bucket=dest[0],
                    Key=key,
                    CopySource=f"{source[0]}/{source[1]}",
                    **extra,
                )
            )
        elif source:
            if not source[1]:
                raise AwsCliNotUnderstood(f"{src!r} names no object; use --recursive for a prefix")
            calls.append(_call("s3", "GetObject", region, Bucket=source[0], Key=source[1]))
        else:
            assert dest is not None
            calls.append(
                _call(
                    "s3", "PutObject", region, Bucket=dest[0], Key=_dest_key(src, dest[1]), **extra
                )
            )
        if sub == "mv" and source:
            calls.append(_call("s3", "DeleteObject", region, Bucket=source[0], Key=source[1]))
        return calls
    # Many objects: list, then act on every key under the prefix.
    if source:
        calls.append(_listing(source, region))
    if dest and (sub == "sync"):
        calls.append(_listing(dest, region))
    if source and dest:
        calls.append(
            _each(
                "CopyObject",
                region,
                Bucket=dest[0],
                Key=dest[1],
                CopySource=f"{source[0]}/{source[1] or ''}",
                **extra,
            )
        )
    elif source:
        calls.append(_each("GetObject", region, Bucket=source[0], Key=source[1]))
    else:
        assert dest is not None
        calls.append(_each("PutObject", region, Bucket=dest[0], Key=dest[1], **extra))
    if sub == "mv" and source:
        calls.append(_each("DeleteObject", region, Bucket=source[0], Key=source[1]))
    if sub == "sync" and "--delete" in flags and dest:
        calls.append(_each("DeleteObject", region, Bucket=dest[0], Key=dest[1]))
    return calls


def _listing(target: tuple[str, str], region: str) -> dict[str, Any]:
    params: dict[str, Any] = {"Bucket": target[0]}
    if target[1]:
        params["Prefix"] = target[1]
    return _call("s3", "ListObjectsV2", region, **params)


# --- everything else: the AWS CLI's own parser ------------------------------------------------
def _neutral_env(region: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_ACCESS_KEY_ID="AKIAJITGATEPLANNING",
        AWS_SECRET_ACCESS_KEY="planning-only",  # noqa: S105 - nothing is ever sent
        AWS_DEFAULT_REGION=region,
        AWS_PAGER="",
    )
    return env


def _without(args: list[str], names: set[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in names:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def _capture(args: list[str], region: str) -> dict[str, Any]:
    try:
        import awscli  # noqa: F401
    except ImportError:
        raise AwsCliNotUnderstood(
            "planning this command needs the AWS CLI's Python package: pip install awscli"
        ) from None
    # The profile and endpoint do not change what a call touches, and the profile could run a
    # credential_process: drop both.
    cleaned = _without(args, {"--profile", "--endpoint-url"})
    result = subprocess.run(
        [sys.executable, "-m", "jitgate.client._awscli_capture", *cleaned],
        env=_neutral_env(region),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AwsCliNotUnderstood(_cli_error(result.stderr))
    call = json.loads(result.stdout)
    call["region"] = call.get("region") or region
    return dict(call)


def _cli_error(stderr: str) -> str:
    text = stderr.strip()
    if "Invalid choice:" in text:
        text = text[text.rindex("Invalid choice:") :]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "the AWS CLI did not accept the command"
    lines = [line for line in lines if not line.startswith(("usage:", "To see help", "aws help"))]
    return "the AWS CLI did not accept the command: " + " ".join(lines[-3:])
