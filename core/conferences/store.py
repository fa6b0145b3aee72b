"""Conferences storage: conference and member rows. SQL only; it knows
nothing of gRPC, of the media server or of who may do what.

Every change is one unit of work (``core.db.work``) that reads the
conference under a row lock (``FOR UPDATE`` on PostgreSQL; SQLite has one
writer), hands it to the caller's pure step and writes what the step
changed: concurrent inputs to one conference, on one core or several, apply
one at a time, each to the conference the previous one left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Select, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.conferences import tables as t
from core.conferences.rules import Conference, EndReason, Media, Participant, State
from core.db.work import work_for

Step = Callable[[Conference | None], Conference]

_C = t.conferences.c
_M = t.conference_members.c


def _conference(row: Any, members: Sequence[Any]) -> Conference:
    m = row._mapping
    ordered = sorted(members, key=lambda r: r._mapping["position"])
    present = [r._mapping for r in ordered if r._mapping["session_id"] is not None]
    present.sort(key=lambda r: (r["join_time"], r["position"]))
    came = sorted(
        (r._mapping for r in members if r._mapping["first_join_time"] is not None),
        key=lambda r: (r["first_join_time"], r["position"]),
    )
    return Conference(
        conference_id=m["conference_id"],
        title=m["title"],
        creator=m["creator"],
        media=Media(m["media"]),
        invitees=tuple(r._mapping["username"] for r in ordered if r._mapping["position"] > 0),
        participants=tuple(
            Participant(r["username"], r["session_id"], r["feed_id"], r["join_time"], r["room_token"] or "")
            for r in present
        ),
        state=State(m["state"]),
        room=m["room"],
        create_time=m["create_time"],
        end_time=m["end_time"],
        ended_by=m["ended_by"] or "",
        end_reason=EndReason(m["end_reason"]) if m["end_reason"] else None,
        idle_since=m["idle_since"],
        attendees=tuple(r["username"] for r in came),
        first_join_time=came[0]["first_join_time"] if came else None,
    )


def _load(conn: Connection, ids: Sequence[str], *, lock: bool = False) -> dict[str, Conference]:
    if not ids:
        return {}
    query = select(t.conferences).where(_C.conference_id.in_(ids))
    if lock:
        # Rendered on PostgreSQL only: SQLite's single writer serialises anyway.
        query = query.with_for_update()
    rows = conn.execute(query).all()
    members: dict[str, list[Any]] = {}
    for member in conn.execute(select(t.conference_members).where(_M.conference_id.in_(ids))):
        members.setdefault(member._mapping["conference_id"], []).append(member)
    return {r._mapping["conference_id"]: _conference(r, members.get(r._mapping["conference_id"], [])) for r in rows}


def _in_room(participant: Participant | None) -> dict[str, Any]:
    if participant is None:
        return {"session_id": None, "feed_id": None, "join_time": None, "room_token": None}
    return {
        "session_id": participant.session_id,
        "feed_id": participant.feed_id,
        "join_time": participant.join_time,
        "room_token": participant.room_token or None,
    }


def _member_rows(conference: Conference, usernames: Iterable[str], first_position: int) -> list[dict[str, Any]]:
    return [
        {
            "conference_id": conference.conference_id,
            "username": username,
            "position": position,
            "create_time": conference.create_time,
            "active": conference.state is State.ACTIVE,
            **_in_room(conference.participant(username)),
        }
        for position, username in enumerate(usernames, first_position)
    ]


def _ended(conference: Conference) -> dict[str, Any]:
    return {
        "state": conference.state.value,
        "end_time": conference.end_time,
        "ended_by": conference.ended_by or None,
        "end_reason": conference.end_reason.value if conference.end_reason else None,
    }


def _write_changes(conn: Connection, before: Conference, after: Conference) -> None:
    """Write what ``after`` changed of ``before``: the state, new invitees,
    who is in the room, who ever was, since when it is empty."""
    key = before.conference_id
    row: dict[str, Any] = _ended(after) if after.state is not before.state else {}
    if after.idle_since != before.idle_since:
        row["idle_since"] = after.idle_since
    if row:
        conn.execute(update(t.conferences).where(_C.conference_id == key).values(**row))
    if after.state is not before.state:
        conn.execute(
            update(t.conference_members).where(_M.conference_id == key).values(active=after.state is State.ACTIVE)
        )
    new = after.invitees[len(before.invitees) :]
    if new:
        conn.execute(insert(t.conference_members), _member_rows(after, new, len(before.invitees) + 1))
    for username in after.members:
        was, now = before.participant(username), after.participant(username)
        if was != now and username not in new:
            values = _in_room(now)
            if now is not None and username not in before.attendees:
                values["first_join_time"] = now.join_time
            conn.execute(
                update(t.conference_members).where(_M.conference_id == key, _M.username == username).values(**values)
            )


def _listed(conn: Connection, query: Select[Any]) -> list[Conference]:
    """The conferences whose ids ``query`` selects, in its order."""
    ids = [r[0] for r in conn.execute(query)]
    loaded = _load(conn, ids)
    return [loaded[i] for i in ids if i in loaded]


class ConferenceStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._work = work_for(engine)

    async def create(self, conference: Conference) -> None:
        row = {
            "conference_id": conference.conference_id,
            "title": conference.title,
            "creator": conference.creator,
            "media": conference.media.value,
            "room": conference.room,
            "create_time": conference.create_time,
            "idle_since": conference.idle_since,
            **_ended(conference),
        }
        members = _member_rows(conference, conference.members, 0)

        def run(conn: Connection) -> None:
            conn.execute(insert(t.conferences), [row])
            conn.execute(insert(t.conference_members), members)

        await self._work.write(run)

    async def get(self, conference_id: str) -> Conference | None:
        found = await self._work.read(lambda conn: _load(conn, [conference_id]))
        return found.get(conference_id)

    async def change(self, conference_id: str, step: Step) -> tuple[Conference, Conference]:
        """Apply ``step`` to the stored conference (None if unknown: the step
        refuses) and store the result, in one transaction; the conference
        before and after. A failure the step raises leaves it unchanged."""

        def run(conn: Connection) -> tuple[Conference, Conference]:
            before = _load(conn, [conference_id], lock=True).get(conference_id)
            after = step(before)
            assert before is not None  # no step turns an unknown conference into one
            if after != before:
                _write_changes(conn, before, after)
            return before, after

        return await self._work.write(run)

    async def active_created_by(self, username: str) -> int:
        query = select(func.count()).select_from(t.conferences).where(_C.creator == username, _C.state == "ACTIVE")
        return int(await self._work.read(lambda conn: conn.execute(query).scalar_one()))

    async def rooms_of(self, session_ids: Iterable[str]) -> list[tuple[str, str, str]]:
        """(conference id, username, session id) of each room these devices are in."""
        wanted = list(session_ids)
        if not wanted:
            return []
        query = select(_M.conference_id, _M.username, _M.session_id).where(_M.session_id.in_(wanted))
        rows = await self._work.read(lambda conn: conn.execute(query).all())
        return [(r[0], r[1], r[2]) for r in rows]

    async def present(self) -> list[tuple[str, str, str]]:
        """(conference id, username, session id) of every member in a room now."""
        query = select(_M.conference_id, _M.username, _M.session_id).where(_M.session_id.isnot(None))
        rows = await self._work.read(lambda conn: conn.execute(query).all())
        return [(r[0], r[1], r[2]) for r in rows]

    async def list_for_member(
        self, username: str, *, before: tuple[bool, float, str] | None, limit: int
    ) -> list[Conference]:
        """The member's conferences: the active first, newest first within
        each; ``before`` is the (active, create time, id) of the previous
        page's last conference."""
        key = (_M.active, _M.create_time, _M.conference_id)
        where = [_M.username == username]
        if before is not None:
            # A row value, every column descending: one index walk.
            where.append(tuple_(*key) < tuple_(*before))
        query = select(_M.conference_id).where(*where).order_by(*(c.desc() for c in key)).limit(limit)
        return await self._work.read(lambda conn: _listed(conn, query))

    async def list_active(self, *, before: tuple[float, str] | None, limit: int) -> list[Conference]:
        """Every active conference newest first; ``before`` is the (create
        time, id) of the previous page's last one."""
        where = [_C.state == State.ACTIVE.value]
        if before is not None:
            where.append(tuple_(_C.create_time, _C.conference_id) < tuple_(*before))
        order = (_C.create_time.desc(), _C.conference_id.desc())
        query = select(_C.conference_id).where(*where).order_by(*order).limit(limit)
        return await self._work.read(lambda conn: _listed(conn, query))

    async def idle(self, since: float) -> list[str]:
        """The active conferences whose room has been empty since ``since`` or before."""
        query = select(_C.conference_id).where(_C.state == State.ACTIVE.value, _C.idle_since <= since)
        return await self._work.read(lambda conn: [r[0] for r in conn.execute(query)])

    async def history(
        self, member: str | None, *, state: State | None, before: tuple[float, str] | None, limit: int
    ) -> list[Conference]:
        """Conferences newest first (create time, then id, both descending):
        ``member``'s, or every one for None; ``before`` is the (create time,
        id) of the previous page's last entry."""
        if member is None:
            key: tuple[Any, ...] = (_C.create_time, _C.conference_id)
            where = [] if state is None else [_C.state == state.value]
        else:
            key = (_M.create_time, _M.conference_id)
            where = [_M.username == member]
            if state is not None:
                where.append(_M.active == (state is State.ACTIVE))
        if before is not None:
            where.append(tuple_(*key) < tuple_(*before))
        query = select(key[1]).where(*where).order_by(*(c.desc() for c in key)).limit(limit)
        return await self._work.read(lambda conn: _listed(conn, query))
