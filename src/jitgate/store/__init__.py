"""Persistence: SQLAlchemy Core tables, engine set-up (SQLite WAL / PostgreSQL), migrations."""
