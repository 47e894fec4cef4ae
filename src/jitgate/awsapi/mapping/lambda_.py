"""AWS Lambda: operation -> (IAM action, resource ARN) pairs.

Resources, per the IAM service authorization reference:
  function          arn:{p}:lambda:{region}:{account}:function:{FunctionName}
  function version  arn:{p}:lambda:{region}:{account}:function:{FunctionName}:{Version}
  function alias    arn:{p}:lambda:{region}:{account}:function:{FunctionName}:{Alias}
  layer             arn:{p}:lambda:{region}:{account}:layer:{LayerName}
  layerVersion      arn:{p}:lambda:{region}:{account}:layer:{LayerName}:{LayerVersion}
  eventSourceMapping       arn:{p}:lambda:{region}:{account}:event-source-mapping:{UUID}
  code signing config      arn:{p}:lambda:{region}:{account}:code-signing-config:{Id}
  capacityProvider         arn:{p}:lambda:{region}:{account}:capacity-provider:{Name}
  durable execution        arn:...:function:{FunctionName}:{Version}/durable-execution/...

``FunctionName`` may be a name ("f"), a name with a qualifier ("f:prod"), a partial ARN
("123456789012:function:f[:prod]") or a full ARN ("arn:aws:lambda:...:function:f[:prod]").
A qualifier (in the name or in the ``Qualifier`` parameter) makes the resource the qualified
ARN ``...:function:f:prod``; operations without a ``Qualifier`` parameter take no qualifier.
"""

from __future__ import annotations

import re
from typing import Any

from jitgate.awsapi.mapping.common import (
    PARTITION,
    REGION,
    ROLE_ARN_RE,
    Arns,
    Rule,
    access_function,
    param_reader,
    refuser,
    rule_maker,
    star,
)
from jitgate.awsapi.mapping.context import MappingContext
from jitgate.awsapi.types import Access, Operation

_PREFIX = "lambda"

_FUNCTION = r"[A-Za-z0-9_\-]{1,64}"
_QUALIFIER = r"[A-Za-z0-9$_\-]{1,128}"
_QUALIFIER_RE = re.compile(_QUALIFIER)
_FUNCTION_NAME_RE = re.compile(
    rf"(?:(?:arn:(?P<partition>{PARTITION}):lambda:(?P<region>{REGION}):)?"
    rf"(?P<account>\d{{12}}):function:)?(?P<name>{_FUNCTION})(?::(?P<qualifier>{_QUALIFIER}))?"
)
_FUNCTION_ARN_RE = re.compile(
    rf"arn:{PARTITION}:lambda:{REGION}:\d{{12}}:function:{_FUNCTION}(?::{_QUALIFIER})?"
)
_UNQUALIFIED_FUNCTION_ARN_RE = re.compile(
    rf"arn:{PARTITION}:lambda:{REGION}:\d{{12}}:function:{_FUNCTION}"
)
_LAYER = r"[A-Za-z0-9_\-]{1,140}"
_LAYER_NAME_RE = re.compile(
    rf"(?:arn:{PARTITION}:lambda:{REGION}:\d{{12}}:layer:)?(?P<name>{_LAYER})"
)
_LAYER_VERSION_ARN_RE = re.compile(
    rf"arn:{PARTITION}:lambda:{REGION}:\d{{12}}:layer:{_LAYER}:[0-9]{{1,20}}"
)
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ESM_ARN_RE = re.compile(
    rf"arn:{PARTITION}:lambda:{REGION}:\d{{12}}:event-source-mapping:{_UUID_RE.pattern}"
)
_CSC_ARN_RE = re.compile(
    rf"arn:{PARTITION}:lambda:{REGION}:\d{{12}}:code-signing-config:csc-[a-z0-9]{{17}}"
)
_CAPACITY_PROVIDER = r"[A-Za-z0-9_\-]{1,140}"
_CAPACITY_PROVIDER_RE = re.compile(
    rf"(?:arn:{PARTITION}:lambda:{REGION}:\d{{12}}:capacity-provider:)?"
    rf"(?P<name>{_CAPACITY_PROVIDER})"
)
_CAPACITY_PROVIDER_ARN_RE = re.compile(
    rf"arn:{PARTITION}:lambda:{REGION}:\d{{12}}:capacity-provider:{_CAPACITY_PROVIDER}"
)
_DURABLE_EXECUTION_ARN_RE = re.compile(
    rf"arn:{PARTITION}:lambda:{REGION}:\d{{12}}:function:{_FUNCTION}:{_QUALIFIER}"
    r"/durable-execution/[A-Za-z0-9_\-]{1,64}/[A-Za-z0-9_\-]{1,64}"
)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


_refuse = refuser("lambda")
_param = param_reader("lambda")
_on = rule_maker(_PREFIX)


def _function_arn(op: Operation, ctx: MappingContext, *, qualifiable: bool) -> tuple[str, bool]:
    """The ARN of the function (qualified when the call names a version or alias), and
    whether it is qualified."""
    value = _param(op, "FunctionName")
    match = _FUNCTION_NAME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        _refuse(op, f"FunctionName {value!r} is not a function name or ARN")
    partition = match.group("partition") or ctx.partition
    region = match.group("region") or ctx.region
    account = match.group("account") or ctx.account
    arn = f"arn:{partition}:lambda:{region}:{account}:function:{match.group('name')}"
    qualifier = match.group("qualifier")
    parameter = op.params.get("Qualifier") if qualifiable else None
    if parameter is not None:
        if not isinstance(parameter, str) or not _QUALIFIER_RE.fullmatch(parameter):
            _refuse(op, f"Qualifier {parameter!r} is not a version or alias")
        if qualifier is not None and qualifier != parameter:
            _refuse(op, "FunctionName and Qualifier name different qualifiers")
        qualifier = parameter
    if qualifier is None:
        return arn, False
    if not qualifiable:
        _refuse(op, f"FunctionName {value!r} has a qualifier, which this operation does not take")
    return f"{arn}:{qualifier}", True


def _function(op: Operation, ctx: MappingContext) -> list[str]:
    """The unqualified function: the operation acts on the function as a whole."""
    return [_function_arn(op, ctx, qualifiable=False)[0]]


def _qualified(op: Operation, ctx: MappingContext) -> list[str]:
    """The function, qualified by the name's qualifier or the Qualifier parameter if any."""
    return [_function_arn(op, ctx, qualifiable=True)[0]]


def _must_qualify(op: Operation, ctx: MappingContext) -> list[str]:
    """Provisioned concurrency and scaling configs apply to a version or alias only."""
    arn, qualified = _function_arn(op, ctx, qualifiable=True)
    if not qualified:
        _refuse(op, "the request names no version or alias")
    return [arn]


def _layer_arn(op: Operation, ctx: MappingContext) -> str:
    value = _param(op, "LayerName")
    match = _LAYER_NAME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        _refuse(op, f"LayerName {value!r} is not a layer name or ARN")
    if value.startswith("arn:"):
        return value
    return f"arn:{ctx.partition}:lambda:{ctx.region}:{ctx.account}:layer:{match.group('name')}"


def _layer(op: Operation, ctx: MappingContext) -> list[str]:
    return [_layer_arn(op, ctx)]


def _layer_version(op: Operation, ctx: MappingContext) -> list[str]:
    version = _param(op, "VersionNumber")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        _refuse(op, f"VersionNumber {version!r} is not a layer version")
    return [f"{_layer_arn(op, ctx)}:{version}"]


def _arn_param(key: str, *patterns: re.Pattern[str]) -> Arns:
    def arns(op: Operation, ctx: MappingContext) -> list[str]:
        value = _param(op, key)
        if not isinstance(value, str) or not any(p.fullmatch(value) for p in patterns):
            _refuse(op, f"{key} {value!r} is not an ARN of a resource this operation acts on")
        return [value]

    return arns


def _event_source_mapping(op: Operation, ctx: MappingContext) -> list[str]:
    uuid = _param(op, "UUID")
    if not isinstance(uuid, str) or not _UUID_RE.fullmatch(uuid):
        _refuse(op, f"UUID {uuid!r} is not an event source mapping id")
    return [f"arn:{ctx.partition}:lambda:{ctx.region}:{ctx.account}:event-source-mapping:{uuid}"]


def _capacity_provider(op: Operation, ctx: MappingContext) -> list[str]:
    value = _param(op, "CapacityProviderName")
    match = _CAPACITY_PROVIDER_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        _refuse(op, f"CapacityProviderName {value!r} is not a capacity provider name or ARN")
    if value.startswith("arn:"):
        return [value]
    name = match.group("name")
    return [f"arn:{ctx.partition}:lambda:{ctx.region}:{ctx.account}:capacity-provider:{name}"]


# --- extra permissions some parameters bring ---------------------------------------------------

# Parameters that make a call touch other services in ways that are not mapped.
_UNMAPPED_PARAMS = {
    "VpcConfig": "attaches the function to a VPC, which needs EC2 permissions",
    "FileSystemConfigs": "mounts an EFS file system, which needs EFS permissions",
    "KMSKeyArn": "names a KMS key, which needs KMS permissions",
    "SourceKMSKeyArn": "names a KMS key, which needs KMS permissions",
    "ImageUri": "deploys a container image, which needs Amazon ECR permissions",
    "CodeSigningConfigArn": "attaches a code signing configuration, which needs permissions",
    "CapacityProviderConfig": "runs the function on a capacity provider, which needs permissions",
}


def _refuse_unmapped(op: Operation, params: Any, *keys: str) -> None:
    """Refuse when any of ``keys`` is set in ``params`` (the request, or a structure in it)."""
    for key in keys:
        if isinstance(params, dict) and params.get(key) is not None:
            _refuse(op, f"{key} {_UNMAPPED_PARAMS[key]} that are not mapped")


def _s3_code(op: Operation, ctx: MappingContext, where: Any) -> list[Access]:
    """Code read from S3 is read with the caller's permissions."""
    if not isinstance(where, dict) or where.get("S3Bucket") is None:
        return []
    bucket, key = where.get("S3Bucket"), where.get("S3Key")
    if not isinstance(bucket, str) or not _BUCKET_RE.fullmatch(bucket):
        _refuse(op, f"S3Bucket {bucket!r} is not a bucket name")
    if not isinstance(key, str) or not key:
        _refuse(op, "S3Key is missing")
    action = "s3:GetObject" if where.get("S3ObjectVersion") is None else "s3:GetObjectVersion"
    return [Access(action, f"arn:{ctx.partition}:s3:::{bucket}/{key}")]


def _pass_role(op: Operation) -> list[Access]:
    role = op.params.get("Role")
    if role is None:
        return []
    if not isinstance(role, str) or not ROLE_ARN_RE.fullmatch(role):
        _refuse(op, f"Role {role!r} is not an IAM role ARN")
    return [Access("iam:PassRole", role)]


def _layers(op: Operation) -> list[Access]:
    layers = op.params.get("Layers")
    if layers is None:
        return []
    if not isinstance(layers, list):
        _refuse(op, "Layers is not a list")
    for layer in layers:
        if not isinstance(layer, str) or not _LAYER_VERSION_ARN_RE.fullmatch(layer):
            _refuse(op, f"Layers entry {layer!r} is not a layer version ARN")
    return [Access("lambda:GetLayerVersion", layer) for layer in layers]


def _create_function(op: Operation, ctx: MappingContext) -> list[Access]:
    _refuse_unmapped(
        op,
        op.params,
        "VpcConfig",
        "FileSystemConfigs",
        "KMSKeyArn",
        "CodeSigningConfigArn",
        "CapacityProviderConfig",
    )
    _refuse_unmapped(op, op.params.get("DurableConfig"), "KMSKeyArn")
    code = _param(op, "Code")
    _refuse_unmapped(op, code, "ImageUri", "SourceKMSKeyArn")
    _param(op, "Role")  # required: CreateFunction always passes an execution role
    function = _function(op, ctx)[0]
    out = [Access("lambda:CreateFunction", function)]
    out += _pass_role(op)
    out += _layers(op)
    out += _s3_code(op, ctx, code)
    if op.params.get("Tags"):
        out.append(Access("lambda:TagResource", function))
    return out


def _update_function_code(op: Operation, ctx: MappingContext) -> list[Access]:
    _refuse_unmapped(op, op.params, "ImageUri", "SourceKMSKeyArn")
    out = [Access("lambda:UpdateFunctionCode", _function(op, ctx)[0])]
    out += _s3_code(op, ctx, op.params)
    return out


def _update_function_configuration(op: Operation, ctx: MappingContext) -> list[Access]:
    _refuse_unmapped(
        op, op.params, "VpcConfig", "FileSystemConfigs", "KMSKeyArn", "CapacityProviderConfig"
    )
    _refuse_unmapped(op, op.params.get("DurableConfig"), "KMSKeyArn")
    out = [Access("lambda:UpdateFunctionConfiguration", _function(op, ctx)[0])]
    out += _pass_role(op)
    out += _layers(op)
    return out


def _publish_layer_version(op: Operation, ctx: MappingContext) -> list[Access]:
    out = [Access("lambda:PublishLayerVersion", _layer_arn(op, ctx))]
    out += _s3_code(op, ctx, _param(op, "Content"))
    return out


# IAM scopes event source mappings to a function only by a condition (lambda:FunctionArn), and
# the event source is then read (and its records deleted) with the function's role: a grant of
# (action, ARN) pairs can say neither which function nor which source (found by review).
_EVENT_SOURCE_MAPPING = (
    "IAM scopes it to a function only by a condition, and the event source is read with the "
    "function's role: neither can be expressed in a grant"
)


def _update_event_source_mapping(op: Operation, ctx: MappingContext) -> list[Access]:
    _refuse_unmapped(op, op.params, "KMSKeyArn")
    if op.params.get("FunctionName") is not None:
        _refuse(op, f"FunctionName moves the mapping to another function: {_EVENT_SOURCE_MAPPING}")
    return _on(_event_source_mapping)(op, ctx)


def _checkpoint_durable_execution(op: Operation, ctx: MappingContext) -> list[Access]:
    updates = op.params.get("Updates") or []
    if any(isinstance(u, dict) and u.get("ChainedInvokeOptions") for u in updates):
        _refuse(op, "ChainedInvokeOptions invokes another function, which is not mapped")
    return _on(_arn_param("DurableExecutionArn", _DURABLE_EXECUTION_ARN_RE))(op, ctx)


def _put_function_code_signing_config(op: Operation, ctx: MappingContext) -> list[Access]:
    csc = _arn_param("CodeSigningConfigArn", _CSC_ARN_RE)(op, ctx)[0]
    function = _function(op, ctx)[0]
    return [
        Access("lambda:PutFunctionCodeSigningConfig", csc),
        Access("lambda:PutFunctionCodeSigningConfig", function),
    ]


_TAGGABLE = (_UNQUALIFIED_FUNCTION_ARN_RE, _ESM_ARN_RE, _CSC_ARN_RE, _CAPACITY_PROVIDER_ARN_RE)

_RULES: dict[str, Rule] = {
    # invoking
    "Invoke": _on(_qualified, "lambda:InvokeFunction"),
    "InvokeWithResponseStream": _on(_qualified, "lambda:InvokeFunction"),
    # functions
    "CreateFunction": _create_function,
    "GetFunction": _on(_qualified),
    "GetFunctionConfiguration": _on(_qualified),
    "UpdateFunctionCode": _update_function_code,
    "UpdateFunctionConfiguration": _update_function_configuration,
    "DeleteFunction": _on(_qualified),
    "ListFunctions": _on(star),
    "PublishVersion": _on(_function),
    "ListVersionsByFunction": _on(_function),
    "GetAccountSettings": _on(star),
    # aliases
    "CreateAlias": _on(_function),
    "GetAlias": _on(_function),
    "UpdateAlias": _on(_function),
    "DeleteAlias": _on(_function),
    "ListAliases": _on(_function),
    # function policy
    "AddPermission": _on(_qualified),
    "RemovePermission": _on(_qualified),
    "GetPolicy": _on(_qualified),
    # concurrency and scaling
    "PutFunctionConcurrency": _on(_function),
    "GetFunctionConcurrency": _on(_function),
    "DeleteFunctionConcurrency": _on(_function),
    "PutProvisionedConcurrencyConfig": _on(_must_qualify),
    "GetProvisionedConcurrencyConfig": _on(_must_qualify),
    "DeleteProvisionedConcurrencyConfig": _on(_must_qualify),
    "ListProvisionedConcurrencyConfigs": _on(_function),
    "PutFunctionScalingConfig": _on(_must_qualify),
    "GetFunctionScalingConfig": _on(_must_qualify),
    # asynchronous invocation config
    "PutFunctionEventInvokeConfig": _on(_qualified),
    "UpdateFunctionEventInvokeConfig": _on(_qualified),
    "GetFunctionEventInvokeConfig": _on(_qualified),
    "DeleteFunctionEventInvokeConfig": _on(_qualified),
    "ListFunctionEventInvokeConfigs": _on(_function),
    # function URLs
    "CreateFunctionUrlConfig": _on(_qualified),
    "UpdateFunctionUrlConfig": _on(_qualified),
    "GetFunctionUrlConfig": _on(_qualified),
    "DeleteFunctionUrlConfig": _on(_qualified),
    "ListFunctionUrlConfigs": _on(_function),
    # runtime, recursion
    "GetRuntimeManagementConfig": _on(_qualified),
    "PutRuntimeManagementConfig": _on(_qualified),
    "GetFunctionRecursionConfig": _on(_function),
    "PutFunctionRecursionConfig": _on(_function),
    # code signing
    "CreateCodeSigningConfig": _on(star),
    "GetCodeSigningConfig": _on(_arn_param("CodeSigningConfigArn", _CSC_ARN_RE)),
    "UpdateCodeSigningConfig": _on(_arn_param("CodeSigningConfigArn", _CSC_ARN_RE)),
    "DeleteCodeSigningConfig": _on(_arn_param("CodeSigningConfigArn", _CSC_ARN_RE)),
    "ListCodeSigningConfigs": _on(star),
    "ListFunctionsByCodeSigningConfig": _on(_arn_param("CodeSigningConfigArn", _CSC_ARN_RE)),
    "PutFunctionCodeSigningConfig": _put_function_code_signing_config,
    "GetFunctionCodeSigningConfig": _on(_function),
    "DeleteFunctionCodeSigningConfig": _on(_function),
    # layers
    "PublishLayerVersion": _publish_layer_version,
    "GetLayerVersion": _on(_layer_version),
    "GetLayerVersionByArn": _on(_arn_param("Arn", _LAYER_VERSION_ARN_RE), "lambda:GetLayerVersion"),
    "DeleteLayerVersion": _on(_layer_version),
    "GetLayerVersionPolicy": _on(_layer_version),
    "AddLayerVersionPermission": _on(_layer_version),
    "RemoveLayerVersionPermission": _on(_layer_version),
    "ListLayers": _on(star),
    "ListLayerVersions": _on(star),
    # event source mappings
    "GetEventSourceMapping": _on(_event_source_mapping),
    "UpdateEventSourceMapping": _update_event_source_mapping,
    "DeleteEventSourceMapping": _on(_event_source_mapping),
    "ListEventSourceMappings": _on(star),
    # tags
    "TagResource": _on(_arn_param("Resource", *_TAGGABLE)),
    "UntagResource": _on(_arn_param("Resource", *_TAGGABLE)),
    "ListTags": _on(_arn_param("Resource", *_TAGGABLE)),
    # capacity providers (read and delete)
    "GetCapacityProvider": _on(_capacity_provider),
    "DeleteCapacityProvider": _on(_capacity_provider),
    "ListCapacityProviders": _on(star),
    "ListFunctionVersionsByCapacityProvider": _on(_capacity_provider),
    # durable executions addressed by ARN
    "GetDurableExecution": _on(_arn_param("DurableExecutionArn", _DURABLE_EXECUTION_ARN_RE)),
    "GetDurableExecutionHistory": _on(_arn_param("DurableExecutionArn", _DURABLE_EXECUTION_ARN_RE)),
    "GetDurableExecutionState": _on(_arn_param("DurableExecutionArn", _DURABLE_EXECUTION_ARN_RE)),
    "StopDurableExecution": _on(_arn_param("DurableExecutionArn", _DURABLE_EXECUTION_ARN_RE)),
    "CheckpointDurableExecution": _checkpoint_durable_execution,
    "ListDurableExecutionsByFunction": _on(_qualified),
}

_NOT_IN_IAM = "the IAM reference does not list this operation, so it cannot be mapped exactly"
_CALLBACK = "the callback id is opaque, so the durable execution it acts on cannot be known exactly"

_REFUSED: dict[str, str] = {
    "InvokeAsync": "this deprecated API is not mapped",
    "CreateEventSourceMapping": _EVENT_SOURCE_MAPPING,
    "CreateCapacityProvider": "it needs iam:PassRole and EC2 permissions that are not mapped",
    "UpdateCapacityProvider": "it can need iam:PassRole and EC2 permissions that are not mapped",
    "GetResourcePolicy": "its resource may be a function or a web function, and which one IAM "
    "checks cannot be told from the request",
    "PutResourcePolicy": "its resource may be a function or a web function, and which one IAM "
    "checks cannot be told from the request",
    "DeleteResourcePolicy": "its resource may be a function or a web function, and which one "
    "IAM checks cannot be told from the request",
    "DeleteDurableExecution": _NOT_IN_IAM,
    "PauseDurableExecution": _NOT_IN_IAM,
    "ResumeDurableExecution": _NOT_IN_IAM,
    "SendDurableExecutionCallbackSuccess": _CALLBACK,
    "SendDurableExecutionCallbackFailure": _CALLBACK,
    "SendDurableExecutionCallbackHeartbeat": _CALLBACK,
}

SUPPORTED: frozenset[str] = frozenset(_RULES)


access_for = access_function("lambda", _RULES, _REFUSED)
