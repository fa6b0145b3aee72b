"""Chat storage: conversation, member, message and block rows. SQL only;
it knows nothing of gRPC, of events or of who may do what.

A change to a conversation (a message's seq, its members, its title) is
one unit of work that reads the conversation under a row lock (``FOR
UPDATE`` on PostgreSQL; SQLite has one writer) and hands it to the
caller's pure step: concurrent sends to one conversation, on one core or
several, take consecutive seqs. Unread counts are counted, not kept: the
messages after the member's read seq from others it does not block, so a
send writes one message row and one conversation row however big the
group, and a deletion or a block needs no bookkeeping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.chat import tables as t
from core.chat.rules import Conversation, Kind, Message, View
from core.db.work import work_for

Step = Callable[[Conversation | None], Conversation]
# A send's check: the stored conversation (None: unknown) and the members
# who block the sender; the conversation it may send to, or a refusal.
Check = Callable[[Conversation | None, frozenset[str]], Conversation]


@dataclass(frozen=True, slots=True)
class Appended:
    """What a send did: the conversation before the message (None when the
    request was made before: nothing was appended), the message, and the
    members who block its sender (they are not told of it)."""

    conversation: Conversation | None
    message: Message
    blockers: frozenset[str]


_C = t.conversations.c
_M = t.conversation_members.c
_S = t.messages.c
_B = t.message_blocks.c


def _conversation(row: Any, members: Sequence[str]) -> Conversation:
    m = row._mapping
    return Conversation(
        conversation_id=m["conversation_id"],
        kind=Kind(m["type"]),
        members=tuple(members),
        create_time=m["create_time"],
        update_time=m["update_time"],
        last_seq=m["last_seq"],
        title=m["title"] or "",
        owner=m["owner"] or "",
    )


def _message(row: Any) -> Message:
    m = row._mapping
    return Message(
        message_id=m["message_id"],
        conversation_id=m["conversation_id"],
        seq=m["seq"],
        sender=m["sender"],
        text=m["text"],
        create_time=m["create_time"],
        system=m["system"],
        requester=m["requester"],
        request_id=m["request_id"],
    )


# A send's statements, built once: SQLAlchemy then finds their compiled
# form by a cache key it memoises on the statement, where a statement built
# per send costs its key's computation each time (a profile of the send
# path found statement building about a quarter of the core's CPU).
_EARLIER = select(t.messages).where(_S.requester == bindparam("requester"), _S.request_id == bindparam("request_id"))
_ONE = select(t.conversations).where(_C.conversation_id == bindparam("cid"))
_ONE_LOCKED = _ONE.with_for_update()
_MEMBERS_OF_ONE = select(_M.username).where(_M.conversation_id == bindparam("cid")).order_by(_M.position)
# The members of the conversation who block the sender.
_BLOCKERS = (
    select(_B.username)
    .join(t.conversation_members, and_(_M.username == _B.username, _M.conversation_id == bindparam("cid")))
    .where(_B.blocked == bindparam("sender"))
)
_BUMP = (
    update(t.conversations)
    .where(_C.conversation_id == bindparam("cid"))
    .values(last_seq=bindparam("new_seq"), update_time=bindparam("new_time"))
)
_READ_OWN = (
    update(t.conversation_members)
    .where(_M.conversation_id == bindparam("cid"), _M.username == bindparam("member"))
    .values(read_seq=bindparam("new_seq"))
)
_INSERT_MESSAGE = insert(t.messages)


def _load_one(conn: Connection, conversation_id: str, *, lock: bool = False) -> Conversation | None:
    row = conn.execute(_ONE_LOCKED if lock else _ONE, {"cid": conversation_id}).first()
    if row is None:
        return None
    return _conversation(row, [r[0] for r in conn.execute(_MEMBERS_OF_ONE, {"cid": conversation_id})])


def _load(conn: Connection, ids: Sequence[str], *, lock: bool = False) -> dict[str, Conversation]:
    if not ids:
        return {}
    query = select(t.conversations).where(_C.conversation_id.in_(ids))
    if lock:
        query = query.with_for_update()
    rows = conn.execute(query).all()
    members: dict[str, list[str]] = {}
    listed = select(_M.conversation_id, _M.username).where(_M.conversation_id.in_(ids)).order_by(_M.position)
    for conversation_id, username in conn.execute(listed):
        members.setdefault(conversation_id, []).append(username)
    return {
        r._mapping["conversation_id"]: _conversation(r, members.get(r._mapping["conversation_id"], [])) for r in rows
    }


def _row(conversation: Conversation, unique_key: str | None) -> dict[str, Any]:
    return {
        "conversation_id": conversation.conversation_id,
        "type": conversation.kind.value,
        "title": conversation.title or None,
        "owner": conversation.owner or None,
        "unique_key": unique_key,
        "create_time": conversation.create_time,
        "update_time": conversation.update_time,
        "last_seq": conversation.last_seq,
    }


def _insert(conn: Connection, conversation: Conversation, unique_key: str | None) -> None:
    conn.execute(insert(t.conversations), [_row(conversation, unique_key)])
    conn.execute(
        insert(t.conversation_members),
        [
            {"conversation_id": conversation.conversation_id, "username": u, "position": n, "read_seq": 0}
            for n, u in enumerate(conversation.members)
        ],
    )


def _write_members(conn: Connection, before: Conversation, after: Conversation) -> None:
    key = before.conversation_id
    gone = [u for u in before.members if u not in after.members]
    if gone:
        conn.execute(delete(t.conversation_members).where(_M.conversation_id == key, _M.username.in_(gone)))
    new = [u for u in after.members if u not in before.members]
    if new:
        top = conn.execute(select(func.max(_M.position)).where(_M.conversation_id == key)).scalar() or 0
        conn.execute(
            insert(t.conversation_members),
            [
                {"conversation_id": key, "username": u, "position": top + 1 + n, "read_seq": 0}
                for n, u in enumerate(new)
            ],
        )


class ChatStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._work = work_for(engine)

    # -- conversations ---------------------------------------------------
    async def create(self, conversation: Conversation) -> None:
        """A new group."""
        await self._work.write(lambda conn: _insert(conn, conversation, None))

    async def get_or_create(self, unique_key: str, new: Conversation) -> Conversation:
        """The one conversation with ``unique_key`` (one-to-one, system),
        made as ``new`` if there is none yet (the first of two racing makes it)."""

        def find(conn: Connection) -> Conversation | None:
            found = conn.execute(select(_C.conversation_id).where(_C.unique_key == unique_key)).scalar()
            return None if found is None else _load(conn, [found])[found]

        existing = await self._work.read(find)
        if existing is not None:
            return existing
        try:
            await self._work.write(lambda conn: _insert(conn, new, unique_key))
            return new
        except IntegrityError:
            made = await self._work.read(find)
            assert made is not None
            return made

    async def get(self, conversation_id: str) -> Conversation | None:
        return await self._work.read(lambda conn: _load_one(conn, conversation_id))

    async def change(self, conversation_id: str, step: Step) -> tuple[Conversation, Conversation]:
        """Apply ``step`` to the stored conversation (None if unknown: the
        step refuses) and store its title, owner and members."""

        def run(conn: Connection) -> tuple[Conversation, Conversation]:
            before = _load_one(conn, conversation_id, lock=True)
            after = step(before)
            assert before is not None
            if (after.title, after.owner) != (before.title, before.owner):
                conn.execute(
                    update(t.conversations)
                    .where(_C.conversation_id == conversation_id)
                    .values(title=after.title or None, owner=after.owner or None)
                )
            if after.members != before.members:
                _write_members(conn, before, after)
            return before, after

        return await self._work.write(run)

    # -- messages --------------------------------------------------------
    async def by_request(self, requester: str, request_id: str) -> Message | None:
        params = {"requester": requester, "request_id": request_id}
        row = await self._work.read(lambda conn: conn.execute(_EARLIER, params).first())
        return None if row is None else _message(row)

    async def append(
        self,
        conversation_id: str,
        check: Check,
        make: Callable[[Conversation], Message],
        *,
        requester: str,
        request_id: str,
    ) -> Appended:
        """``make``'s message (by ``requester``, with ``request_id``)
        appended, with the next seq, to the conversation that ``check``
        admits (it is handed the members who block the sender too); the
        sender's read seq moves to it. If the requester used that
        request_id before, the message made then, and nothing is appended.
        One transaction: a send is one unit of work however it goes."""

        def run(conn: Connection) -> Appended:
            earlier = conn.execute(_EARLIER, {"requester": requester, "request_id": request_id}).first()
            if earlier is not None:
                return Appended(None, _message(earlier), frozenset())
            found = _load_one(conn, conversation_id, lock=True)
            blockers: frozenset[str] = frozenset()
            if found is not None and requester in found.members:
                blocking = conn.execute(_BLOCKERS, {"cid": conversation_id, "sender": requester})
                blockers = frozenset(r[0] for r in blocking)
            conversation = check(found, blockers)
            message = make(conversation)
            seq = {"cid": conversation_id, "new_seq": message.seq}
            conn.execute(_BUMP, {**seq, "new_time": message.create_time})
            conn.execute(_INSERT_MESSAGE, [_message_row(message)])
            if message.sender:
                conn.execute(_READ_OWN, {**seq, "member": message.sender})
            return Appended(conversation, message, blockers)

        try:
            return await self._work.write(run)
        except IntegrityError:
            # The same request racing itself: the other one made it.
            again = await self.by_request(requester, request_id)
            if again is None:
                raise
            return Appended(None, again, frozenset())

    async def get_message(self, conversation_id: str, message_id: str) -> Message | None:
        query = select(t.messages).where(_S.conversation_id == conversation_id, _S.message_id == message_id)
        row = await self._work.read(lambda conn: conn.execute(query).first())
        return None if row is None else _message(row)

    async def messages(
        self,
        conversation_id: str,
        *,
        before_seq: int | None,
        after_seq: int | None,
        hidden: Iterable[str],
        limit: int,
    ) -> list[Message]:
        """Newest first before ``before_seq`` (None: from the last), or,
        with ``after_seq``, oldest first after it; none from ``hidden``."""
        where = [_S.conversation_id == conversation_id]
        hidden = list(hidden)
        if hidden:
            where.append(_S.sender.not_in(hidden))
        if after_seq is not None:
            where.append(_S.seq > after_seq)
            order = _S.seq.asc()
        else:
            if before_seq is not None:
                where.append(_S.seq < before_seq)
            order = _S.seq.desc()
        query = select(t.messages).where(*where).order_by(order).limit(limit)
        return await self._work.read(lambda conn: [_message(r) for r in conn.execute(query)])

    async def delete_message(self, conversation_id: str, message_id: str) -> Message | None:
        """The message deleted; None if there was none."""

        def run(conn: Connection) -> Message | None:
            row = conn.execute(
                select(t.messages).where(_S.conversation_id == conversation_id, _S.message_id == message_id)
            ).first()
            if row is None:
                return None
            conn.execute(delete(t.messages).where(_S.message_id == message_id))
            return _message(row)

        return await self._work.write(run)

    async def purge(self, before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` messages made before ``before``, the oldest first."""

        def run(conn: Connection) -> int:
            ids = [r[0] for r in conn.execute(select(_S.message_id).where(_S.create_time < before).limit(limit))]
            if ids:
                conn.execute(delete(t.messages).where(_S.message_id.in_(ids)))
            return len(ids)

        return await self._work.write(run)

    # -- read state --------------------------------------------------------
    async def mark_read(self, conversation_id: str, username: str, seq: int) -> bool:
        """The member's read seq moved up to ``seq`` (never back); whether it moved."""

        def run(conn: Connection) -> bool:
            where = (_M.conversation_id == conversation_id, _M.username == username, _M.read_seq < seq)
            return conn.execute(update(t.conversation_members).where(*where).values(read_seq=seq)).rowcount > 0

        return await self._work.write(run)

    async def views(
        self, username: str, *, before: tuple[float, str] | None, limit: int, ids: Sequence[str] | None = None
    ) -> list[View]:
        """The member's conversations, the newest activity first (before the
        (update time, id) of the previous page's last), or those of ``ids``;
        each with its read seq, unread count and last message."""

        def run(conn: Connection) -> list[View]:
            joined = t.conversation_members.join(t.conversations, _M.conversation_id == _C.conversation_id)
            query = select(_C.conversation_id, _M.read_seq).select_from(joined).where(_M.username == username)
            if ids is not None:
                query = query.where(_C.conversation_id.in_(ids))
            if before is not None:
                query = query.where(tuple_(_C.update_time, _C.conversation_id) < tuple_(*before))
            query = query.order_by(_C.update_time.desc(), _C.conversation_id.desc()).limit(limit)
            listed = [(r[0], r[1]) for r in conn.execute(query)]
            found = [i for i, _ in listed]
            loaded = _load(conn, found)
            blocked = select(_B.blocked).where(_B.username == username).scalar_subquery()
            read = {i: seq for i, seq in listed}
            unread: dict[str, int] = {}
            if found:
                counted = (
                    select(_S.conversation_id, func.count())
                    .select_from(
                        t.messages.join(
                            t.conversation_members,
                            and_(_M.conversation_id == _S.conversation_id, _M.username == username),
                        )
                    )
                    .where(
                        _S.conversation_id.in_(found),
                        _S.seq > _M.read_seq,
                        _S.sender != username,
                        _S.sender.not_in(blocked),
                    )
                    .group_by(_S.conversation_id)
                )
                unread = {r[0]: int(r[1]) for r in conn.execute(counted)}
            last: dict[str, Message] = {}
            if found:
                # Each conversation's last message the member may see, in one query.
                latest = (
                    select(_S.conversation_id, func.max(_S.seq).label("seq"))
                    .where(_S.conversation_id.in_(found), _S.sender.not_in(blocked))
                    .group_by(_S.conversation_id)
                    .subquery()
                )
                on = and_(_S.conversation_id == latest.c.conversation_id, _S.seq == latest.c.seq)
                for row in conn.execute(select(t.messages).join(latest, on)):
                    last[row._mapping["conversation_id"]] = _message(row)
            return [View(loaded[i], read[i], unread.get(i, 0), last.get(i)) for i in found if i in loaded]

        return await self._work.read(run)

    # -- blocks ------------------------------------------------------------
    async def block(self, username: str, blocked: str, now: float) -> None:
        def run(conn: Connection) -> None:
            exists = conn.execute(select(_B.username).where(_B.username == username, _B.blocked == blocked)).first()
            if exists is None:
                conn.execute(insert(t.message_blocks), [{"username": username, "blocked": blocked, "create_time": now}])

        with contextlib.suppress(IntegrityError):  # a racing request blocked it: blocked all the same
            await self._work.write(run)

    async def unblock(self, username: str, blocked: str) -> None:
        await self._work.write(
            lambda conn: conn.execute(delete(t.message_blocks).where(_B.username == username, _B.blocked == blocked))
        )

    async def blocked_by(self, username: str) -> list[str]:
        """Whom ``username`` blocks, in the order blocked."""
        query = select(_B.blocked).where(_B.username == username).order_by(_B.create_time, _B.blocked)
        return await self._work.read(lambda conn: [r[0] for r in conn.execute(query)])

    async def blockers(self, sender: str, among: Iterable[str]) -> set[str]:
        """Those of ``among`` who block ``sender``."""
        wanted = list(among)
        if not wanted:
            return set()
        query = select(_B.username).where(_B.blocked == sender, _B.username.in_(wanted))
        return await self._work.read(lambda conn: {r[0] for r in conn.execute(query)})


def _message_row(message: Message) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender": message.sender,
        "text": message.text,
        "create_time": message.create_time,
        "system": message.system,
        "requester": message.requester,
        "request_id": message.request_id,
    }
