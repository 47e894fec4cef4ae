"""The AWS endpoint: verify, authorize, record, re-sign and forward every SDK call."""
