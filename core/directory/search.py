"""The statements behind ``DirectoryStore.search``: one page of the entries
matching a query key, in display-name order, at a cost that follows the page
rather than the number of matches.

A query matches an entry exactly (rank 0) when one of the query's keys is one
of the entry's keys, and by prefix (rank 1) otherwise. Within a rank, entries
are ordered by (sort_name, id), the order every statement here reads or
sorts in; a position is the (sort_name, id) of the last entry already shown.

- Exact: ``directory_keys`` is indexed on (key, sort_name, entry_row_id), so
  the matches of one key come out of the index in order.
- Prefix, few matches: the key range is read and sorted, as there is little.
- Prefix, many matches: ``directory_key_prefixes`` holds each entry once
  under the first characters of its name, word and e-mail keys, in order;
  the page is read from there, checking each entry's keys for the whole
  query when it is longer. What may be the start of a phone number is read
  from the entries in display-name order instead, checking each one's keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, exists, func, literal, or_, select, true, union_all
from sqlalchemy.sql.elements import ColumnElement

from core.directory import tables as t
from core.directory.keys import PREFIX_LENGTH, prefixes_cover, successor
from core.directory.sources import PERSONAL_KINDS, personal_source

# A prefix with at most this many key rows is sorted; beyond it, its page is
# read in order from the prefix index. Sorting a thousand index rows costs
# about what reading a page past a few thousand non-matching ones does.
NARROW = 1000

Position = tuple[str, int]  # (sort_name, row id) of the last entry shown


def visible_to(viewer: str) -> ColumnElement[bool]:
    """The SQL form of ``sources.visible_to``: shared sources and the viewer's own."""
    e = t.directory_entries
    shared = and_(*(e.c.source.not_like(f"{kind}:%") for kind in PERSONAL_KINDS))
    own = e.c.source.in_([personal_source(kind, viewer) for kind in PERSONAL_KINDS])
    return or_(shared, own)


def _after(sort_name: Any, row_id: Any, position: Position | None) -> ColumnElement[bool]:
    if position is None:
        return true()
    name, last = position
    # The first conjunct alone is an index range on both backends; the second
    # drops the rows of the same name up to the last one shown.
    return and_(sort_name >= name, or_(sort_name > name, row_id > last))


def _in_range(key: Any, prefix: str) -> ColumnElement[bool]:
    return and_(key >= prefix, key < successor(prefix))


def _page(columns: Any, row_id: Any, position: Position | None, limit: int, viewer: str | None) -> Select[Any]:
    """Select (sort_name, row id) from ``columns``' table in order, from ``position``."""
    sort_name = columns.sort_name
    stmt = select(sort_name, row_id.label("row_id")).where(_after(sort_name, row_id, position))
    if viewer is not None:
        e = t.directory_entries
        stmt = stmt.join(e, e.c.id == row_id).where(visible_to(viewer))
    return stmt.order_by(sort_name, row_id).limit(limit)


def exact_page(key: str, position: Position | None, limit: int, viewer: str | None) -> Select[Any]:
    """The entries with ``key`` among their keys."""
    k = t.directory_keys
    return _page(k.c, k.c.entry_row_id, position, limit, viewer).where(k.c.key == key)


def _not_exact(row_id: Any, exact_keys: tuple[str, ...]) -> ColumnElement[bool]:
    # Entries of rank 0 are shown there; each check is a probe of the primary key.
    x = t.directory_keys.alias("exact")
    return ~exists().where(x.c.entry_row_id == row_id, x.c.key.in_(exact_keys))


def prefix_rows(prefixes: Sequence[str]) -> Select[Any]:
    """How many key rows start with each of ``prefixes``, counted up to NARROW + 1."""
    k = t.directory_keys
    counts = []
    for prefix in prefixes:
        first = select(literal(1).label("one")).where(_in_range(k.c.key, prefix)).limit(NARROW + 1).subquery()
        counts.append(select(func.count()).select_from(first).scalar_subquery())
    return select(*counts)


def prefix_page(
    prefix: str,
    key_rows: int,
    exact_keys: tuple[str, ...],
    position: Position | None,
    limit: int,
    viewer: str | None,
) -> Select[Any]:
    """The page of ``prefix`` read the cheaper way for its number of key
    rows (as ``prefix_rows`` counted them)."""
    read = narrow_prefix_page if key_rows <= NARROW else broad_prefix_page
    return read(prefix, exact_keys, position, limit, viewer)


def entries_of(pages: Sequence[Select[Any]]) -> Select[Any]:
    """The entries of some pages above, in one statement and in no order."""
    e = t.directory_entries
    if len(pages) == 1:
        rows = pages[0].subquery()
    else:
        # Each page keeps its own ORDER BY and LIMIT inside a subquery.
        rows = union_all(*(select(page.subquery()) for page in pages)).subquery()
    return select(e).join(rows, e.c.id == rows.c.row_id)


def narrow_prefix_page(
    prefix: str, exact_keys: tuple[str, ...], position: Position | None, limit: int, viewer: str | None
) -> Select[Any]:
    """The entries with a key starting with ``prefix`` and none equal to an
    exact key, by sorting the matching key rows (for a narrow prefix)."""
    k = t.directory_keys
    return (
        _page(k.c, k.c.entry_row_id, position, limit, viewer)
        .where(_in_range(k.c.key, prefix), _not_exact(k.c.entry_row_id, exact_keys))
        .distinct()  # an entry has several keys with the prefix
    )


def broad_prefix_page(
    prefix: str, exact_keys: tuple[str, ...], position: Position | None, limit: int, viewer: str | None
) -> Select[Any]:
    """The same entries as ``narrow_prefix_page``, read in display-name order
    (for a broad prefix): from the prefix index, or, for what may be the
    start of a phone number, from the entries themselves."""
    k = t.directory_keys
    if prefixes_cover(prefix):
        p = t.directory_key_prefixes
        stmt = _page(p.c, p.c.entry_row_id, position, limit, viewer).where(p.c.prefix == prefix[:PREFIX_LENGTH])
        row_id = p.c.entry_row_id
        if len(prefix) <= PREFIX_LENGTH:
            return stmt.where(_not_exact(row_id, exact_keys))
    else:
        e = t.directory_entries
        stmt = _page(e.c, e.c.id, position, limit, None)
        if viewer is not None:
            stmt = stmt.where(visible_to(viewer))
        row_id = e.c.id
    # Each entry read is checked by a probe of the keys' primary key.
    has_prefix = exists().where(k.c.entry_row_id == row_id, _in_range(k.c.key, prefix))
    return stmt.where(has_prefix, _not_exact(row_id, exact_keys))
