"""The tamper-evident record: a SHA-256 hash chain of append-only events."""
