"""The embedded sandbox: a moto server playing AWS (with signature checks on), seeded with demo data."""
