"""Presence storage: what each device published and whether it is connected.

SQL only (SQLAlchemy Core, the same statements on SQLite and PostgreSQL);
it knows nothing of gRPC, of events or of the aggregation rule. Rows are
shared through the database, so every core reading them sees the same
devices; see ``handler.py`` for what stays per process.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, Insert, Table, and_, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db.dialects import PerDialect
from core.db.work import work_for
from core.presence import tables as t
from core.presence.rules import DeviceStatus, Status

# Bound on the values in one IN (...) list (old SQLite builds allow 999).
_CHUNK = 500


class PresenceStore(Protocol):
    async def device_online(self, username: str, session_id: str, now: float) -> list[DeviceStatus]:
        """The device connected: AVAILABLE if it never published, else as
        published. Returns the subscriber's devices as the write left them."""

    async def device_lost(self, session_id: str, now: float) -> None:
        """The device disconnected; its published status is kept for a reconnect."""

    async def publish(
        self, username: str, session_id: str, status: Status, note: str, now: float, *, connected: bool
    ) -> list[DeviceStatus]:
        """Record the device's published status; ``connected`` applies to a
        new row only. Returns the subscriber's devices as the write left them."""

    async def devices(self, username: str) -> list[DeviceStatus]:
        """The subscriber's known devices."""

    async def devices_of(self, usernames: Collection[str]) -> dict[str, list[DeviceStatus]]:
        """The known devices of several subscribers (absent ones have none)."""

    async def disconnect_all(self) -> int:
        """Mark every device disconnected (an embedded core at start-up)."""

    async def connected_usernames(self) -> list[str]:
        """The subscribers with a connected device, on any core."""

    async def prune(self, username: str, before: float) -> int:
        """Forget the subscriber's devices disconnected since before ``before``."""

    async def forget(self, username: str) -> None:
        """Forget every device of a deleted subscriber."""


def _device(row: object) -> DeviceStatus:
    m = row._mapping  # type: ignore[attr-defined]
    return DeviceStatus(
        device=m["session_id"],
        status=Status(m["status"]),
        note=m["note"],
        updated_at=m["updated_at"],
        connected=bool(m["connected"]),
        last_seen=m["last_seen"],
    )


class SqlPresenceStore:
    """Presence rows in the core's SQL database. Each method is one unit of
    work (``core.db.work``): presence changes with every call and device."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._work = work_for(engine)

    async def device_online(self, username: str, session_id: str, now: float) -> list[DeviceStatus]:
        row = {
            "session_id": session_id,
            "username": username,
            "status": Status.AVAILABLE.value,
            "note": "",
            "updated_at": now,
            "connected": True,
            "last_seen": now,
        }

        def run(conn: Connection) -> list[DeviceStatus]:
            conn.execute(_UPSERTS[conn.dialect.name].online, row)
            return _devices(conn, username)

        return await self._work.write(run)

    async def device_lost(self, session_id: str, now: float) -> None:
        d = t.presence_devices
        stmt = update(d).where(d.c.session_id == session_id).values(connected=False, last_seen=now)
        await self._work.write(lambda conn: conn.execute(stmt))

    async def publish(
        self, username: str, session_id: str, status: Status, note: str, now: float, *, connected: bool
    ) -> list[DeviceStatus]:
        row = {
            "session_id": session_id,
            "username": username,
            "status": status.value,
            "note": note,
            "updated_at": now,
            "connected": connected,
            # Publishing is not being seen online: a device that never
            # connected has no last-seen time.
            "last_seen": now if connected else 0.0,
        }

        def run(conn: Connection) -> list[DeviceStatus]:
            conn.execute(_UPSERTS[conn.dialect.name].publish, row)
            return _devices(conn, username)

        return await self._work.write(run)

    async def devices(self, username: str) -> list[DeviceStatus]:
        return await self._work.read(lambda conn: _devices(conn, username))

    async def devices_of(self, usernames: Collection[str]) -> dict[str, list[DeviceStatus]]:
        d = t.presence_devices
        names = list(dict.fromkeys(usernames))

        def run(conn: Connection) -> dict[str, list[DeviceStatus]]:
            found: dict[str, list[DeviceStatus]] = {}
            for start in range(0, len(names), _CHUNK):
                chunk = names[start : start + _CHUNK]
                for row in conn.execute(select(d).where(d.c.username.in_(chunk))):
                    found.setdefault(row.username, []).append(_device(row))
            return found

        return await self._work.read(run)

    async def disconnect_all(self) -> int:
        d = t.presence_devices
        stmt = update(d).where(d.c.connected.is_(True)).values(connected=False)
        return await self._work.write(lambda conn: conn.execute(stmt).rowcount or 0)

    async def connected_usernames(self) -> list[str]:
        d = t.presence_devices
        stmt = select(d.c.username).where(d.c.connected.is_(True)).distinct()
        return await self._work.read(lambda conn: [row.username for row in conn.execute(stmt)])

    async def prune(self, username: str, before: float) -> int:
        d = t.presence_devices
        stmt = delete(d).where(and_(d.c.username == username, d.c.connected.is_(False), d.c.last_seen < before))
        return await self._work.write(lambda conn: conn.execute(stmt).rowcount or 0)

    async def forget(self, username: str) -> None:
        d = t.presence_devices
        stmt = delete(d).where(d.c.username == username)
        await self._work.write(lambda conn: conn.execute(stmt))


def _devices(conn: Connection, username: str) -> list[DeviceStatus]:
    return [_device(row) for row in conn.execute(_DEVICES_READ, {"username": username})]


@dataclass(frozen=True, slots=True)
class _Upserts:
    """A device's row written in one statement, whether or not it exists
    (atomic on both databases, where another core may insert the same row
    first)."""

    online: Insert  # connected now; a new row reads AVAILABLE
    publish: Insert  # its status and note; ``connected`` applies to a new row only


def _upserts(insert: Callable[[Table], Insert]) -> _Upserts:
    # ON CONFLICT reads the same on SQLite (3.24+) and PostgreSQL, but
    # SQLAlchemy builds it per dialect. Built once, every value bound: a
    # device coming online was an update, a savepoint and an insert, each
    # statement built anew (450 us of CPU on SQLite).
    d = t.presence_devices
    online, publish = insert(d), insert(d)
    return _Upserts(
        online=online.on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=[d.c.session_id],
            set_={"connected": online.excluded.connected, "last_seen": online.excluded.last_seen},  # type: ignore[attr-defined]
        ),
        publish=publish.on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=[d.c.session_id],
            set_={name: publish.excluded[name] for name in ("status", "note", "updated_at")},  # type: ignore[attr-defined]
        ),
    )


_UPSERTS = PerDialect(_upserts)
_DEVICES_READ = select(t.presence_devices).where(t.presence_devices.c.username == bindparam("username"))
