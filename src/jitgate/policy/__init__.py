"""Cedar policy: which scopes issue at once, which wait for a human, which are refused."""
