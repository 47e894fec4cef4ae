"""The control-plane HTTP API: grants, approvals, agents, audit."""
