"""The one MetaData that every service's tables register on.

Each service declares its tables in its own ``tables.py``; importing
``core.db.tables`` imports them all, which Alembic and the test fixtures need.
Types are kept to what SQLite and PostgreSQL both run unchanged.
"""

from __future__ import annotations

from sqlalchemy import MetaData

# Deterministic constraint names, so migrations read the same on every backend.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)
