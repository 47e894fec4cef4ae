"""The grant lifecycle: request, decision, approval, credentials, expiry, revocation."""
