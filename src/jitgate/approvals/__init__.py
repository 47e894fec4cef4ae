"""Who must approve what (rules), what an approval is bound to, and who is told (notify)."""
