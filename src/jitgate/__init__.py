"""jitgate: just-in-time, scoped, audited AWS access for AI agents."""

__version__ = "0.1.0"
