"""Identity storage: subscribers, sessions, API keys, signing keys, login
failures. SQL only; it knows nothing of gRPC or of the rules."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db.dialects import PerDialect
from core.db.work import work_for
from core.identity import tables as t
from core.identity.rules import ThrottleState


class Duplicate(Exception):
    """The row's key is taken."""


class NumberTaken(Exception):
    """A phone number is another subscriber's. ``holder`` is empty when a
    concurrent write took it (the database refused the second holder)."""

    def __init__(self, number: str, holder: str) -> None:
        super().__init__(number)
        self.number = number
        self.holder = holder


# A change of one login-throttle key's state (the rules' reserve, forgive...).
ThrottleChange = Callable[[ThrottleState | None], ThrottleState | None]


class ThrottleContention(Exception):
    """A login-throttle row kept changing under a compare-and-set."""


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    username: str
    display_name: str
    phone_numbers: tuple[str, ...]
    email: str
    roles: tuple[str, ...]
    disabled: bool
    password_hash: str
    create_time: float
    update_time: float


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    username: str
    device_name: str
    create_time: float
    refresh_generation: int
    refresh_hash: str
    refresh_expire_time: float
    revoke_time: float | None
    revoke_reason: str | None
    previous_refresh_hash: str | None = None
    rotate_time: float | None = None


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    key_id: str
    name: str
    secret_hash: str
    scopes: tuple[str, ...]
    create_time: float
    revoke_time: float | None
    last_used_time: float | None = None


def _subscriber(row: object) -> SubscriberRow:
    m = row._mapping  # type: ignore[attr-defined]
    return SubscriberRow(
        username=m["username"],
        display_name=m["display_name"],
        phone_numbers=tuple(json.loads(m["phone_numbers"])),
        email=m["email"],
        roles=tuple(json.loads(m["roles"])),
        disabled=bool(m["disabled"]),
        password_hash=m["password_hash"],
        create_time=m["create_time"],
        update_time=m["update_time"],
    )


def _session(row: object) -> SessionRow:
    return SessionRow(**row._mapping)  # type: ignore[attr-defined]


def _api_key(row: object) -> ApiKeyRow:
    m = row._mapping  # type: ignore[attr-defined]
    return ApiKeyRow(
        key_id=m["key_id"],
        name=m["name"],
        secret_hash=m["secret_hash"],
        scopes=tuple(json.loads(m["scopes"])),
        create_time=m["create_time"],
        revoke_time=m["revoke_time"],
        last_used_time=m["last_used_time"],
    )


def _api_key_values(row: ApiKeyRow) -> dict[str, object]:
    return {
        "key_id": row.key_id,
        "name": row.name,
        "secret_hash": row.secret_hash,
        "scopes": json.dumps(list(row.scopes)),
        "create_time": row.create_time,
        "revoke_time": row.revoke_time,
        "last_used_time": row.last_used_time,
    }


class IdentityStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._work = work_for(engine)

    # -- subscribers --------------------------------------------------
    async def create_subscriber(self, row: SubscriberRow) -> None:
        """Duplicate if the username is taken, NumberTaken if a number is."""
        async with self._engine.begin() as conn:
            try:
                await conn.execute(insert(t.subscribers).values(**_subscriber_values(row)))
            except IntegrityError:
                raise Duplicate(row.username) from None
            await _hold_numbers(conn, row.username, row.phone_numbers)

    async def get_subscriber(self, username: str) -> SubscriberRow | None:
        # Read for every login and every token verification past the cache:
        # one unit of work, its statement built once.
        row = await self._work.read(lambda conn: conn.execute(_SUBSCRIBER_READ, {"username": username}).first())
        return _subscriber(row) if row else None

    async def get_subscribers(self, usernames: Sequence[str]) -> list[SubscriberRow]:
        """Those of these subscribers that exist, in one query (a presence
        batch reads up to 500)."""
        names = list(usernames)
        rows = await self._work.read(lambda conn: conn.execute(_SUBSCRIBERS_READ, {"usernames": names}).all())
        return [_subscriber(r) for r in rows]

    async def list_subscribers(self, after: str, limit: int) -> list[SubscriberRow]:
        query = (
            select(t.subscribers)
            .where(t.subscribers.c.username > after)
            .order_by(t.subscribers.c.username)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_subscriber(r) for r in (await conn.execute(query)).all()]

    async def update_subscriber(self, row: SubscriberRow) -> None:
        values = _subscriber_values(row)
        values.pop("username")
        values.pop("create_time")
        async with self._engine.begin() as conn:
            await conn.execute(update(t.subscribers).where(t.subscribers.c.username == row.username).values(**values))
            await _hold_numbers(conn, row.username, row.phone_numbers)

    async def delete_subscriber(self, username: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(t.subscribers).where(t.subscribers.c.username == username))
        return bool(result.rowcount)

    async def holder_of_number(self, e164: str) -> str | None:
        """The username holding a phone number (E.164), or None."""
        numbers = t.subscriber_phone_numbers
        stmt = select(numbers.c.username).where(numbers.c.phone_number == e164)
        # Asked by the gateway for every call from the trunk: one unit of work.
        return await self._work.read(lambda conn: conn.execute(stmt).scalar())

    async def count_subscribers(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(t.subscribers))).scalar_one())

    # -- sessions -----------------------------------------------------
    async def create_session(self, row: SessionRow) -> None:
        # One per login: one unit of work.
        values = _session_values(row)
        await self._work.write(lambda conn: conn.execute(_SESSION_INSERT, values))

    async def get_session(self, session_id: str) -> SessionRow | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(t.sessions).where(t.sessions.c.session_id == session_id))).first()
        return _session(row) if row else None

    async def rotate_refresh(
        self, session_id: str, generation: int, new_hash: str, expire_time: float, now: float
    ) -> bool:
        """Move the session to the next refresh generation, if it is still at
        ``generation`` and not revoked (compare-and-set: two racing refreshes
        with one token cannot both win)."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(t.sessions)
                .where(
                    t.sessions.c.session_id == session_id,
                    t.sessions.c.refresh_generation == generation,
                    t.sessions.c.revoke_time.is_(None),
                )
                .values(
                    refresh_generation=generation + 1,
                    previous_refresh_hash=t.sessions.c.refresh_hash,
                    rotate_time=now,
                    refresh_hash=new_hash,
                    refresh_expire_time=expire_time,
                )
            )
        return bool(result.rowcount)

    async def revoke_sessions(
        self, *, reason: str, now: float, session_id: str | None = None, username: str | None = None
    ) -> list[str]:
        """Revoke one session or all of a subscriber's; returns the ids revoked."""
        where: list[ColumnElement[bool]] = [t.sessions.c.revoke_time.is_(None)]
        if session_id is not None:
            where.append(t.sessions.c.session_id == session_id)
        if username is not None:
            where.append(t.sessions.c.username == username)
        async with self._engine.begin() as conn:
            ids = [r[0] for r in (await conn.execute(select(t.sessions.c.session_id).where(*where))).all()]
            if ids:
                await conn.execute(
                    update(t.sessions)
                    .where(t.sessions.c.session_id.in_(ids))
                    .values(revoke_time=now, revoke_reason=reason)
                )
        return ids

    async def revoked_since(self, since: float) -> list[tuple[str, str, str, float]]:
        """(session id, username, reason, time) of revocations at or after ``since``."""
        # Every revocation poll (each second): one unit of work.
        rows = await self._work.read(lambda conn: conn.execute(_REVOKED_SINCE, {"since": since}).all())
        return [(r[0], r[1], r[2] or "revoked", r[3]) for r in rows]

    async def live_sessions(self, after: float) -> list[tuple[str, float]]:
        """(session id, refresh expiry) of unrevoked sessions whose refresh
        token expires after ``after``: those that may still mint tokens."""
        c = t.sessions.c
        query = select(c.session_id, c.refresh_expire_time).where(
            c.revoke_time.is_(None), c.refresh_expire_time > after
        )
        async with self._engine.connect() as conn:
            return [(r[0], r[1]) for r in (await conn.execute(query)).all()]

    async def sessions_created_since(self, since: float) -> list[tuple[str, float]]:
        """(session id, refresh expiry) of unrevoked sessions created at or after ``since``."""
        # Every revocation poll, reaching back over a login burst's sessions: one unit of work.
        rows = await self._work.read(lambda conn: conn.execute(_CREATED_SINCE, {"since": since}).all())
        return [(r[0], r[1]) for r in rows if r[2] is None]

    async def active_sessions(self, username: str) -> list[SessionRow]:
        query = select(t.sessions).where(t.sessions.c.username == username, t.sessions.c.revoke_time.is_(None))
        async with self._engine.connect() as conn:
            return [_session(r) for r in (await conn.execute(query)).all()]

    # -- API keys -----------------------------------------------------
    async def create_api_key(self, row: ApiKeyRow) -> None:
        """Insert a key; Duplicate when its name has a live key (no end set)."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(t.api_keys).values(**_api_key_values(row)))
        except IntegrityError:
            raise Duplicate(row.name) from None

    async def get_api_key(self, key_id: str) -> ApiKeyRow | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(t.api_keys).where(t.api_keys.c.key_id == key_id))).first()
        return _api_key(row) if row is not None else None

    async def list_api_keys(self) -> list[ApiKeyRow]:
        """Every key, by name then age (there are tens, not thousands)."""
        query = select(t.api_keys).order_by(t.api_keys.c.name, t.api_keys.c.create_time)
        async with self._engine.connect() as conn:
            return [_api_key(r) for r in (await conn.execute(query)).all()]

    async def end_api_keys(self, name: str, end: float, *, live_only: bool = False) -> list[str]:
        """Make the keys named ``name`` stop working at ``end`` (keeping an
        earlier end already set); ``live_only``: only the one without an end.
        Returns the key ids changed."""
        c = t.api_keys.c
        where: list[ColumnElement[bool]] = [c.name == name]
        where.append(c.revoke_time.is_(None) if live_only else or_(c.revoke_time.is_(None), c.revoke_time > end))
        async with self._engine.begin() as conn:
            ids = [r[0] for r in (await conn.execute(select(c.key_id).where(*where))).all()]
            if ids:
                await conn.execute(update(t.api_keys).where(c.key_id.in_(ids)).values(revoke_time=end))
        return ids

    async def replace_api_key(self, row: ApiKeyRow, old_end: float, *, require_live: bool) -> list[str] | None:
        """In one transaction, end the live key named ``row.name`` at
        ``old_end`` and insert ``row``. ``require_live``: do nothing and
        return None when there is no live key of that name. Returns the
        key ids ended."""
        c = t.api_keys.c
        async with self._engine.begin() as conn:
            live = select(c.key_id).where(c.name == row.name, c.revoke_time.is_(None))
            ids = [r[0] for r in (await conn.execute(live)).all()]
            if require_live and not ids:
                return None
            if ids:
                await conn.execute(update(t.api_keys).where(c.key_id.in_(ids)).values(revoke_time=old_end))
            await conn.execute(insert(t.api_keys).values(**_api_key_values(row)))
        return ids

    async def api_key_ends_since(self, since: float) -> list[tuple[str, float]]:
        """(key id, end) of keys whose end is at or after ``since`` (ends in
        the future included: rotated keys in their grace period)."""
        c = t.api_keys.c
        query = select(c.key_id, c.revoke_time).where(c.revoke_time >= since)
        # Every revocation poll: one unit of work.
        rows = await self._work.read(lambda conn: conn.execute(query).all())
        return [(r[0], r[1]) for r in rows]

    async def record_api_key_use(self, used: Mapping[str, float]) -> None:
        """Store each key's last use (the caller batches: once a minute)."""
        if not used:
            return
        c = t.api_keys.c
        async with self._engine.begin() as conn:
            for key_id, when in used.items():
                await conn.execute(update(t.api_keys).where(c.key_id == key_id).values(last_used_time=when))

    # -- signing keys -------------------------------------------------
    async def signing_keys(self) -> list[tuple[str, str, float]]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(t.signing_keys).order_by(t.signing_keys.c.create_time))).all()
        return [(r.kid, r.private_jwk, r.create_time) for r in rows]

    async def add_signing_key(self, kid: str, private_jwk: str, now: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(t.signing_keys).values(kid=kid, private_jwk=private_jwk, create_time=now))

    async def replace_signing_key(self, kid: str, private_jwk: str) -> None:
        """Store a key's private JWK in another form (sealed)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(t.signing_keys).where(t.signing_keys.c.kid == kid).values(private_jwk=private_jwk)
            )

    async def drop_signing_keys(self, kids: Sequence[str]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(t.signing_keys).where(t.signing_keys.c.kid.in_(list(kids))))

    # -- login throttling ---------------------------------------------
    async def throttle_state(self, key: str) -> ThrottleState | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(t.login_failures).where(t.login_failures.c.key == key))).first()
        if row is None:
            return None
        return ThrottleState(row.failures, row.first_time, row.last_time, row.locked_until)

    async def change_throttle_state(
        self, key: str, change: Callable[[ThrottleState | None], ThrottleState | None], *, tries: int = 50
    ) -> tuple[ThrottleState | None, ThrottleState | None]:
        """Apply ``change`` to a key's state atomically: (state read, state
        stored). ``change`` returning its argument writes nothing.

        A compare-and-set: the row is written only if it still holds what was
        read (an insert only if there was none), else read again. No update
        is lost between concurrent logins on this core or on several cores
        sharing the database, on SQLite and PostgreSQL alike. Raises
        ThrottleContention after ``tries`` lost races."""
        (changed,) = await self.change_throttle_states([(key, change)], tries=tries)
        return changed

    async def change_throttle_states(
        self,
        changes: Sequence[tuple[str, ThrottleChange | None]],
        *,
        stop_unchanged: bool = False,
        tries: int = 50,
    ) -> list[tuple[ThrottleState | None, ThrottleState | None]]:
        """Apply each change in turn, each as ``change_throttle_state`` does,
        in one unit of work: (state read, state stored) of each change
        applied. A change of None deletes the key's row. With
        ``stop_unchanged``, a change that leaves its key as it was is the
        last one applied (a reservation that must wait reserves no more).

        One hop for a whole login's throttle keys: through aiosqlite, each
        key's read and compare-and-set cost a dozen loop-thread round trips.
        The changes are pure functions of the rules: they run in the
        writer's thread on SQLite."""

        def run(conn: Connection) -> list[tuple[ThrottleState | None, ThrottleState | None]]:
            out: list[tuple[ThrottleState | None, ThrottleState | None]] = []
            for key, change in changes:
                if change is None:
                    conn.execute(_THROTTLE_DELETE, {"key": key})
                    out.append((None, None))
                    continue
                old, new = _change_throttle(conn, key, change, tries)
                out.append((old, new))
                if stop_unchanged and new == old:
                    break
            return out

        return await self._work.write(run)

    async def throttle_counts(self, *, after: int, since: float, now: float) -> tuple[int, int]:
        """(keys slowed down, keys locked) at ``now``: slowed, a key with at
        least ``after`` failures in a window begun since ``since``, not
        locked; locked, one whose lock lasts past ``now``."""
        table = t.login_failures
        locked = table.c.locked_until > now
        slowed = (table.c.locked_until <= now) & (table.c.first_time >= since) & (table.c.failures >= after)
        stmt = select(
            func.coalesce(func.sum(case((slowed, 1), else_=0)), 0),
            func.coalesce(func.sum(case((locked, 1), else_=0)), 0),
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).one()
        return int(row[0]), int(row[1])

    async def purge_throttle(self, before: float, now: float) -> int:
        """Delete the rows whose window began before ``before`` and whose
        lock (if any) is over at ``now``; their count."""
        table = t.login_failures
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(table).where(table.c.first_time < before, table.c.locked_until <= now))
        return int(result.rowcount or 0)


# Built once: each login runs them several times, and building a statement
# (and its cache key) cost more than SQLite running it (a subscriber's
# point read: 114 us built each time, 35 us built once).
_SUBSCRIBER_READ = select(t.subscribers).where(t.subscribers.c.username == bindparam("username"))
_SUBSCRIBERS_READ = select(t.subscribers).where(t.subscribers.c.username.in_(bindparam("usernames", expanding=True)))
_SESSION_INSERT = insert(t.sessions)
_REVOKED_SINCE = select(
    t.sessions.c.session_id, t.sessions.c.username, t.sessions.c.revoke_reason, t.sessions.c.revoke_time
).where(t.sessions.c.revoke_time >= bindparam("since"))
# Revoked ones are left out here, not in SQL: with "revoke_time IS NULL" in
# the query SQLite walked that index (every live session) instead of the
# creation time's, so each poll cost O(sessions).
_CREATED_SINCE = select(t.sessions.c.session_id, t.sessions.c.refresh_expire_time, t.sessions.c.revoke_time).where(
    t.sessions.c.create_time >= bindparam("since")
)
_lf = t.login_failures.c
_THROTTLE_READ = select(t.login_failures).where(_lf.key == bindparam("key"))
# An insert that yields to a row another login created first (ON CONFLICT
# DO NOTHING, spelled per dialect by SQLAlchemy): no savepoint around it,
# which cost two statements more and a compilation each time.
_THROTTLE_INSERTS = PerDialect(lambda insert: insert(t.login_failures).on_conflict_do_nothing(index_elements=[_lf.key]))
_THROTTLE_UPDATE = (
    update(t.login_failures)
    .where(
        _lf.key == bindparam("old_key"),
        _lf.failures == bindparam("old_failures"),
        _lf.first_time == bindparam("old_first_time"),
        _lf.last_time == bindparam("old_last_time"),
        _lf.locked_until == bindparam("old_locked_until"),
    )
    .values(
        failures=bindparam("new_failures"),
        first_time=bindparam("new_first_time"),
        last_time=bindparam("new_last_time"),
        locked_until=bindparam("new_locked_until"),
    )
)
_THROTTLE_DELETE = delete(t.login_failures).where(_lf.key == bindparam("key"))


def _throttle_row(conn: Connection, key: str) -> ThrottleState | None:
    row = conn.execute(_THROTTLE_READ, {"key": key}).first()
    if row is None:
        return None
    return ThrottleState(row.failures, row.first_time, row.last_time, row.locked_until)


def _change_throttle(
    conn: Connection, key: str, change: ThrottleChange, tries: int
) -> tuple[ThrottleState | None, ThrottleState | None]:
    """One key's compare-and-set, inside the caller's transaction. Each read
    sees what other transactions committed (SQLite's writer holds the lock
    from its first write; PostgreSQL's READ COMMITTED takes a snapshot per
    statement), so a lost race reads again and retries."""
    for _ in range(tries):
        old = _throttle_row(conn, key)
        new = change(old)
        if new == old:
            return old, old
        assert new is not None  # change only ever adds or removes a failure
        if old is None:
            inserted = conn.execute(
                _THROTTLE_INSERTS[conn.dialect.name],
                {
                    "key": key,
                    "failures": new.failures,
                    "first_time": new.first_time,
                    "last_time": new.last_time,
                    "locked_until": new.locked_until,
                },
            )
            if not inserted.rowcount:
                continue  # another attempt created it first
            return old, new
        result = conn.execute(
            _THROTTLE_UPDATE,
            {
                "old_key": key,
                "old_failures": old.failures,
                "old_first_time": old.first_time,
                "old_last_time": old.last_time,
                "old_locked_until": old.locked_until,
                "new_failures": new.failures,
                "new_first_time": new.first_time,
                "new_last_time": new.last_time,
                "new_locked_until": new.locked_until,
            },
        )
        if result.rowcount:
            return old, new
    raise ThrottleContention(key)


async def _hold_numbers(conn: AsyncConnection, username: str, e164s: Sequence[str]) -> None:
    """Make ``e164s`` the numbers ``username`` holds, in the caller's
    transaction; NumberTaken (and nothing written) if another holds one."""
    numbers = t.subscriber_phone_numbers
    await conn.execute(delete(numbers).where(numbers.c.username == username))
    if not e164s:
        return
    taken = (
        await conn.execute(
            select(numbers.c.phone_number, numbers.c.username).where(numbers.c.phone_number.in_(list(e164s)))
        )
    ).first()
    if taken is not None:
        raise NumberTaken(taken.phone_number, taken.username)
    try:
        await conn.execute(insert(numbers), [{"phone_number": n, "username": username} for n in e164s])
    except IntegrityError:
        # Taken between the check and the insert by a concurrent write.
        raise NumberTaken(e164s[0] if len(e164s) == 1 else ", ".join(e164s), "") from None


def _subscriber_values(row: SubscriberRow) -> dict[str, object]:
    return {
        "username": row.username,
        "display_name": row.display_name,
        "phone_numbers": json.dumps(list(row.phone_numbers)),
        "email": row.email,
        "roles": json.dumps(list(row.roles)),
        "disabled": row.disabled,
        "password_hash": row.password_hash,
        "create_time": row.create_time,
        "update_time": row.update_time,
    }


def _session_values(row: SessionRow) -> dict[str, object]:
    return {
        "session_id": row.session_id,
        "username": row.username,
        "device_name": row.device_name,
        "create_time": row.create_time,
        "refresh_generation": row.refresh_generation,
        "refresh_hash": row.refresh_hash,
        "refresh_expire_time": row.refresh_expire_time,
        "revoke_time": row.revoke_time,
        "revoke_reason": row.revoke_reason,
        "previous_refresh_hash": row.previous_refresh_hash,
        "rotate_time": row.rotate_time,
    }
