"""The approver console: server-rendered pages at /ui on the control listener."""
