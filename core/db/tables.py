"""Every service's tables, imported for their side effect of registering on
the shared metadata (Alembic autogenerate and test fixtures need them all)."""

from __future__ import annotations

import importlib
import pkgutil

import core
from core.db.metadata import metadata


def load_all() -> None:
    """Import ``core.<service>.tables`` (and subpackages) for every service."""
    for module in pkgutil.walk_packages(core.__path__, "core."):
        if module.name.endswith(".tables") and module.name != "core.db.tables":
            importlib.import_module(module.name)
    spell_partial_indexes_for_postgresql()


def spell_partial_indexes_for_postgresql() -> None:
    """Give each partial index (``sqlite_where``) the same predicate for
    PostgreSQL, which spells it ``postgresql_where``.

    The services' tables say it once, for SQLite: naming PostgreSQL there
    loads SQLAlchemy's PostgreSQL dialect (2.3 MiB) in every core, even one
    on SQLite; a serving core makes no DDL. Alembic (its environment, hence
    autogenerate) imports this module."""
    for table in metadata.tables.values():
        for index in table.indexes:
            where = index.dialect_kwargs.get("sqlite_where")
            if where is not None:
                index.dialect_kwargs["postgresql_where"] = where


load_all()

__all__ = ["metadata"]
