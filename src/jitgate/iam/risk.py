"""Actions that deserve more care than their IAM access level suggests."""

from __future__ import annotations

# Reads that hand out secrets or further credentials: never auto-approved by default.
SENSITIVE_ACTIONS: frozenset[str] = frozenset(
    {
        "secretsmanager:GetSecretValue",
        "secretsmanager:BatchGetSecretValue",
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "ssm:GetParameterHistory",
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyPair",
        "sts:AssumeRole",
        "sts:AssumeRoleWithSAML",
        "sts:AssumeRoleWithWebIdentity",
        "sts:GetSessionToken",
        "sts:GetFederationToken",
        "lambda:GetFunction",  # returns a presigned link to the code, and the environment
        "lambda:GetFunctionConfiguration",  # environment variables often carry secrets
    }
)

# Actions with which a holder can give itself (or a service it controls) more power than the
# grant names. They are treated as permissions management whatever their IAM access level.
PRIVILEGE_ESCALATION_ACTIONS: frozenset[str] = frozenset(
    {
        "iam:PassRole",
        "iam:CreatePolicyVersion",
        "iam:SetDefaultPolicyVersion",
        "iam:AttachRolePolicy",
        "iam:AttachUserPolicy",
        "iam:AttachGroupPolicy",
        "iam:PutRolePolicy",
        "iam:PutUserPolicy",
        "iam:PutGroupPolicy",
        "iam:CreateAccessKey",
        "iam:CreateLoginProfile",
        "iam:UpdateLoginProfile",
        "iam:UpdateAssumeRolePolicy",
        "iam:AddUserToGroup",
        "iam:CreateRole",
        "iam:CreateUser",
        "iam:DeleteRolePermissionsBoundary",
        "iam:DeleteUserPermissionsBoundary",
        "lambda:UpdateFunctionCode",
        "lambda:UpdateFunctionConfiguration",
        "lambda:CreateFunction",
        "lambda:AddPermission",
        "lambda:CreateEventSourceMapping",
        "ec2:RunInstances",
        "ec2:ModifyInstanceAttribute",
        "glue:CreateDevEndpoint",
        "glue:UpdateDevEndpoint",
        "cloudformation:CreateStack",
        "cloudformation:UpdateStack",
        "datapipeline:CreatePipeline",
        "ssm:SendCommand",
        "ssm:StartSession",
        "sts:AssumeRole",
        "kms:CreateGrant",
        "kms:PutKeyPolicy",
        "s3:PutBucketPolicy",
        "secretsmanager:PutResourcePolicy",
        "sqs:AddPermission",
        "sns:AddPermission",
    }
)


def is_sensitive(action: str) -> bool:
    return action in SENSITIVE_ACTIONS


def is_privilege_escalation(action: str) -> bool:
    return action in PRIVILEGE_ESCALATION_ACTIONS
