"""Contacts storage: each subscriber's address book, and the links from
contacts to subscribers that presence visibility reads (an owner's link to
a subscriber lets that subscriber see the owner's presence).

SQL only (SQLAlchemy Core, the same statements on SQLite and PostgreSQL);
it knows nothing of gRPC or of validation. Every query names its owner, so
one subscriber's contact ids mean nothing in another's book.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.contacts import tables as t
from core.db.work import work_for

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ContactRow:
    contact_id: str
    owner: str
    display_name: str
    sort_name: str
    phone_numbers: tuple[str, ...]
    emails: tuple[str, ...]
    subscriber: str
    favorite: bool
    notes: str
    create_time: float
    update_time: float


class ContactsStore(Protocol):
    async def create(self, row: ContactRow, *, limit: int) -> bool:
        """Insert the row unless the owner has ``limit`` contacts already."""

    async def get(self, owner: str, contact_id: str) -> ContactRow | None: ...

    async def update(self, row: ContactRow) -> bool:
        """Replace the owner's contact; whether it was there."""

    async def delete(self, owner: str, contact_id: str) -> ContactRow | None:
        """Remove the owner's contact; the row removed, if any."""

    async def page(self, owner: str, after: tuple[str, str] | None, limit: int) -> list[ContactRow]:
        """The owner's contacts after ``(sort_name, contact_id)``, in that order."""

    async def unlink(self, subscriber: str, now: float) -> list[ContactRow]:
        """Clear every link to a deleted subscriber; the contacts changed."""

    async def linked_by(self, owner: str) -> set[str]:
        """The subscribers that ``owner``'s contacts link."""

    async def owners_among(self, subject: str, owners: Collection[str]) -> set[str]:
        """Those of ``owners`` with a contact linking ``subject``."""


def _row(record: object) -> ContactRow:
    m = record._mapping  # type: ignore[attr-defined]
    return ContactRow(
        contact_id=m["contact_id"],
        owner=m["owner"],
        display_name=m["display_name"],
        sort_name=m["sort_name"],
        phone_numbers=tuple(json.loads(m["phone_numbers"])),
        emails=tuple(json.loads(m["emails"])),
        subscriber=m["subscriber"],
        favorite=bool(m["favorite"]),
        notes=m["notes"],
        create_time=m["create_time"],
        update_time=m["update_time"],
    )


def _values(row: ContactRow) -> dict[str, object]:
    return {
        "contact_id": row.contact_id,
        "owner": row.owner,
        "display_name": row.display_name,
        "sort_name": row.sort_name,
        "phone_numbers": json.dumps(list(row.phone_numbers)),
        "emails": json.dumps(list(row.emails)),
        "subscriber": row.subscriber,
        "favorite": row.favorite,
        "notes": row.notes,
        "create_time": row.create_time,
        "update_time": row.update_time,
    }


class SqlContactsStore:
    """Address books in the core's SQL database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._work = work_for(engine)

    async def create(self, row: ContactRow, *, limit: int) -> bool:
        c = t.contacts
        async with self._engine.begin() as conn:
            # Counted in the inserting transaction; the handler serialises
            # one owner's creates on a core, so the bound holds there.
            count = (await conn.execute(select(func.count()).select_from(c).where(c.c.owner == row.owner))).scalar_one()
            if count >= limit:
                return False
            await conn.execute(insert(c).values(_values(row)))
        return True

    async def get(self, owner: str, contact_id: str) -> ContactRow | None:
        c = t.contacts
        async with self._engine.connect() as conn:
            found = (await conn.execute(select(c).where(c.c.owner == owner, c.c.contact_id == contact_id))).first()
        return _row(found) if found else None

    async def update(self, row: ContactRow) -> bool:
        c = t.contacts
        values = _values(row)
        for key in ("contact_id", "owner", "create_time"):
            values.pop(key)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(c).where(c.c.owner == row.owner, c.c.contact_id == row.contact_id).values(values)
            )
        return bool(result.rowcount)

    async def delete(self, owner: str, contact_id: str) -> ContactRow | None:
        c = t.contacts
        where = and_(c.c.owner == owner, c.c.contact_id == contact_id)
        async with self._engine.begin() as conn:
            found = (await conn.execute(select(c).where(where))).first()
            if found is None:
                return None
            await conn.execute(delete(c).where(where))
        return _row(found)

    async def page(self, owner: str, after: tuple[str, str] | None, limit: int) -> list[ContactRow]:
        c = t.contacts
        query = select(c).where(c.c.owner == owner)
        if after is not None:
            sort_name, contact_id = after
            query = query.where(
                or_(
                    c.c.sort_name > sort_name,
                    and_(c.c.sort_name == sort_name, c.c.contact_id > contact_id),
                )
            )
        query = query.order_by(c.c.sort_name, c.c.contact_id).limit(limit)
        async with self._engine.connect() as conn:
            return [_row(r) for r in (await conn.execute(query)).all()]

    async def unlink(self, subscriber: str, now: float) -> list[ContactRow]:
        c = t.contacts
        async with self._engine.begin() as conn:
            rows = (await conn.execute(select(c).where(c.c.subscriber == subscriber))).all()
            found = [_row(r) for r in rows]
            if found:
                await conn.execute(update(c).where(c.c.subscriber == subscriber).values(subscriber="", update_time=now))
        return [replace(r, subscriber="", update_time=now) for r in found]

    async def linked_by(self, owner: str) -> set[str]:
        # Read on every presence change (and every device online): one unit
        # of work (core.db.work), its statement built once.
        return await self._work.read(lambda conn: set(conn.execute(_LINKED_BY, {"owner": owner}).scalars()))

    async def owners_among(self, subject: str, owners: Collection[str]) -> set[str]:
        c = t.contacts
        names = [s for s in dict.fromkeys(owners) if s]

        def run(conn: Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(names), _CHUNK):
                chunk = names[start : start + _CHUNK]
                # Probes of ix_contacts_subscriber_owner (subscriber, owner).
                query = select(c.c.owner).where(c.c.subscriber == subject, c.c.owner.in_(chunk)).distinct()
                found.update(conn.execute(query).scalars())
            return found

        # Read on every presence read: one unit of work (core.db.work).
        return await self._work.read(run)


# A range of ix_contacts_owner_subscriber: at most max_contacts rows, so the
# watchers of one subject are bounded by its own book.
_LINKED_BY = (
    select(t.contacts.c.subscriber)
    .where(t.contacts.c.owner == bindparam("owner"), t.contacts.c.subscriber != "")
    .distinct()
)
