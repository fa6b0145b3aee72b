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


load_all()

__all__ = ["metadata"]
