"""Statements spelled per SQL dialect (INSERT .. ON CONFLICT, which
SQLAlchemy builds with each dialect's own ``insert``), built for the dialect
a connection speaks the first time it asks.

Built on demand, not at import: a core on SQLite never loads SQLAlchemy's
PostgreSQL dialect (2.3 MiB resident, issue 18's memory at rest), and a core
on PostgreSQL never builds the SQLite spelling."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Table

T = TypeVar("T")

# A dialect's ``insert`` (sqlalchemy.dialects.<name>.insert): an Insert
# with that dialect's ON CONFLICT clauses.
DialectInsert = Callable[[Table], Any]


class PerDialect(dict[str, T]):
    """``statements[conn.dialect.name]``: ``build`` is called with that
    dialect's ``insert`` the first time a name is looked up, and what it
    returns is kept; every later lookup is a plain dict lookup.

    Two threads asking first at once may both build; one result is kept,
    and both are the same statement."""

    def __init__(self, build: Callable[[DialectInsert], T]) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, dialect: str) -> T:
        built = self[dialect] = self._build(importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert)
        return built
