"""Who is asking: agents and people, authenticated by bearer tokens stored only as hashes."""
