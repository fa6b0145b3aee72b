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

Statements are built once per shape (how many query keys, which way each is
read, whether there is a position and a viewer) and take their values as
parameters: building SQLAlchemy statements costs more than running these.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

from sqlalchemy import Integer, Select, String, and_, bindparam, exists, func, literal, or_, select, true, union_all
from sqlalchemy.sql.elements import ColumnElement

from core.directory import tables as t
from core.directory.keys import PREFIX_LENGTH, prefixes_cover, successor
from core.directory.sources import PERSONAL_KINDS, personal_source

# A prefix with at most this many key rows is sorted; beyond it, its page is
# read in order from an index. Sorting a thousand index rows costs about
# what reading a page past a few thousand non-matching ones does.
NARROW = 1000

Position = tuple[str, int]  # (sort_name, row id) of the last entry shown
# How the prefix matches of one query key are read: sorted, or in order from
# the prefix index (checking the whole key on each entry when it is longer
# than the stored prefixes), or in order from the entries.
Way = Literal["sorted", "prefixes", "prefixes, checked", "entries"]


def way(prefix: str, key_rows: int) -> Way:
    """How to read the matches of ``prefix``, given its key rows (``count_statement``)."""
    if key_rows <= NARROW:
        return "sorted"
    if not prefixes_cover(prefix):
        return "entries"
    return "prefixes" if len(prefix) <= PREFIX_LENGTH else "prefixes, checked"


def parameters(keys: Sequence[str], position: Position | None, limit: int, viewer: str | None) -> dict[str, Any]:
    """The values for the statements below."""
    values: dict[str, Any] = {"exact_keys": list(keys), "limit": limit}
    for slot, key in enumerate(keys):
        values |= {f"key_{slot}": key, f"end_{slot}": successor(key), f"stream_{slot}": key[:PREFIX_LENGTH]}
    if position is not None:
        values |= {"after_name": position[0], "after_id": position[1]}
    if viewer is not None:
        values["own_sources"] = [personal_source(kind, viewer) for kind in PERSONAL_KINDS]
    return values


def _visible() -> ColumnElement[bool]:
    """The SQL form of ``sources.visible_to``: shared sources and the viewer's own."""
    e = t.directory_entries
    shared = and_(*(e.c.source.not_like(f"{kind}:%") for kind in PERSONAL_KINDS))
    return or_(shared, e.c.source.in_(bindparam("own_sources", expanding=True)))


def _after(sort_name: Any, row_id: Any, after: bool) -> ColumnElement[bool]:
    if not after:
        return true()
    name, last = bindparam("after_name", type_=String), bindparam("after_id", type_=Integer)
    # The first conjunct alone is an index range on both backends; the second
    # drops the rows of the same name up to the last one shown.
    return and_(sort_name >= name, or_(sort_name > name, row_id > last))


def _in_range(key: Any, slot: int) -> ColumnElement[bool]:
    return and_(key >= bindparam(f"key_{slot}"), key < bindparam(f"end_{slot}"))


def _page(columns: Any, row_id: Any, after: bool, viewer: bool) -> Select[Any]:
    """Select (sort_name, row id) from ``columns``' table in order, after the position."""
    sort_name = columns.sort_name
    stmt = select(sort_name, row_id.label("row_id")).where(_after(sort_name, row_id, after))
    if viewer:
        e = t.directory_entries
        if row_id is not e.c.id:
            stmt = stmt.join(e, e.c.id == row_id)
        stmt = stmt.where(_visible())
    return stmt.order_by(sort_name, row_id).limit(bindparam("limit", type_=Integer))


def _not_exact(row_id: Any) -> ColumnElement[bool]:
    # Entries of rank 0 are shown there; each check is a probe of the primary key.
    x = t.directory_keys.alias("exact")
    return ~exists().where(x.c.entry_row_id == row_id, x.c.key.in_(bindparam("exact_keys", expanding=True)))


def _exact_page(slot: int, after: bool, viewer: bool) -> Select[Any]:
    """The entries with the slot's key among their keys."""
    k = t.directory_keys
    return _page(k.c, k.c.entry_row_id, after, viewer).where(k.c.key == bindparam(f"key_{slot}"))


def _prefix_page(slot: int, read: Way, after: bool, viewer: bool) -> Select[Any]:
    """The entries with a key starting with the slot's key and none equal
    to a query key, read the given way."""
    k = t.directory_keys
    if read == "sorted":
        stmt = _page(k.c, k.c.entry_row_id, after, viewer).where(_in_range(k.c.key, slot))
        # An entry has several keys with the prefix.
        return stmt.where(_not_exact(k.c.entry_row_id)).distinct()
    if read == "entries":
        e = t.directory_entries
        stmt, row_id = _page(e.c, e.c.id, after, viewer), e.c.id
    else:
        p = t.directory_key_prefixes
        stmt = _page(p.c, p.c.entry_row_id, after, viewer).where(p.c.prefix == bindparam(f"stream_{slot}"))
        row_id = p.c.entry_row_id
    if read != "prefixes":
        # Each entry read is checked by a probe of the keys' primary key.
        stmt = stmt.where(exists().where(k.c.entry_row_id == row_id, _in_range(k.c.key, slot)))
    return stmt.where(_not_exact(row_id))


def _entries_of(pages: Sequence[Select[Any]]) -> Select[Any]:
    """The entries of some pages, in one statement and in no order."""
    e = t.directory_entries
    if len(pages) == 1:
        rows = pages[0].subquery()
    else:
        # Each page keeps its own ORDER BY and LIMIT inside a subquery.
        rows = union_all(*(select(page.subquery()) for page in pages)).subquery()
    return select(e).join(rows, e.c.id == rows.c.row_id)


@cache
def exact_statement(slots: int, after: bool, viewer: bool) -> Select[Any]:
    """The entries of a page of exact matches of each query key."""
    return _entries_of([_exact_page(slot, after, viewer) for slot in range(slots)])


@cache
def count_statement(slots: int) -> Select[Any]:
    """How many key rows start with each query key, counted up to NARROW + 1."""
    k = t.directory_keys
    counts = []
    for slot in range(slots):
        first = select(literal(1).label("one")).where(_in_range(k.c.key, slot)).limit(NARROW + 1).subquery()
        counts.append(select(func.count()).select_from(first).scalar_subquery())
    return select(*counts)


@cache
def prefix_statement(ways: tuple[Way, ...], after: bool, viewer: bool) -> Select[Any]:
    """The entries of a page of prefix matches of each query key, each read its way."""
    return _entries_of([_prefix_page(slot, read, after, viewer) for slot, read in enumerate(ways)])
