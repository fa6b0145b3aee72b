"""Statements spelled per dialect are built for the dialect a connection
speaks when it first asks, and the PostgreSQL spelling of partial indexes
is added where DDL is made (Alembic, fixtures): a core on SQLite never loads
SQLAlchemy's PostgreSQL dialect."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex

from core.db.dialects import PerDialect
from core.db.tables import metadata


def test_a_statement_is_built_for_a_dialect_at_its_first_lookup_then_kept() -> None:
    built: list[object] = []

    def build(insert: object) -> int:
        built.append(insert)
        return len(built)

    statements = PerDialect(build)
    assert statements == {}, "nothing built before it is asked for"
    assert statements["sqlite"] == 1
    assert statements["sqlite"] == 1
    assert built == [sqlite.insert]
    assert statements["postgresql"] == 2
    assert built == [sqlite.insert, postgresql.insert]


def test_a_partial_index_has_the_same_predicate_on_postgresql() -> None:
    api_keys: Table = metadata.tables["api_keys"]
    [live] = [index for index in api_keys.indexes if index.name == "uq_api_keys_live_name"]
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        ddl = str(CreateIndex(live).compile(dialect=dialect))
        assert ddl == "CREATE UNIQUE INDEX uq_api_keys_live_name ON api_keys (name) WHERE revoke_time IS NULL", ddl
