"""Identity storage: subscribers, sessions, API keys, signing keys, login
failures. SQL only; it knows nothing of gRPC or of the rules."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db.work import work_for
from core.identity import tables as t
from core.identity.rules import ThrottleState


class Duplicate(Exception):
    """The row's key is taken."""


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


class IdentityStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._work = work_for(engine)

    # -- subscribers --------------------------------------------------
    async def create_subscriber(self, row: SubscriberRow) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(t.subscribers).values(**_subscriber_values(row)))
        except IntegrityError:
            raise Duplicate(row.username) from None

    async def get_subscriber(self, username: str) -> SubscriberRow | None:
        stmt = select(t.subscribers).where(t.subscribers.c.username == username)
        # Read for every token verification past the cache: one unit of work.
        row = await self._work.read(lambda conn: conn.execute(stmt).first())
        return _subscriber(row) if row else None

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

    async def delete_subscriber(self, username: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(t.subscribers).where(t.subscribers.c.username == username))
        return bool(result.rowcount)

    async def count_subscribers(self) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(t.subscribers))).scalar_one())

    # -- sessions -----------------------------------------------------
    async def create_session(self, row: SessionRow) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(t.sessions).values(**_session_values(row)))

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
        c = t.sessions.c
        query = select(c.session_id, c.username, c.revoke_reason, c.revoke_time).where(c.revoke_time >= since)
        async with self._engine.connect() as conn:
            return [(r[0], r[1], r[2] or "revoked", r[3]) for r in (await conn.execute(query)).all()]

    async def active_sessions(self, username: str) -> list[SessionRow]:
        query = select(t.sessions).where(t.sessions.c.username == username, t.sessions.c.revoke_time.is_(None))
        async with self._engine.connect() as conn:
            return [_session(r) for r in (await conn.execute(query)).all()]

    # -- API keys -----------------------------------------------------
    async def create_api_key(self, row: ApiKeyRow) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(t.api_keys).values(
                        key_id=row.key_id,
                        name=row.name,
                        secret_hash=row.secret_hash,
                        scopes=json.dumps(list(row.scopes)),
                        create_time=row.create_time,
                        revoke_time=row.revoke_time,
                    )
                )
        except IntegrityError:
            raise Duplicate(row.name) from None

    async def get_api_key(self, key_id: str) -> ApiKeyRow | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(t.api_keys).where(t.api_keys.c.key_id == key_id))).first()
        if row is None:
            return None
        m = row._mapping
        return ApiKeyRow(
            key_id=m["key_id"],
            name=m["name"],
            secret_hash=m["secret_hash"],
            scopes=tuple(json.loads(m["scopes"])),
            create_time=m["create_time"],
            revoke_time=m["revoke_time"],
        )

    # -- signing keys -------------------------------------------------
    async def signing_keys(self) -> list[tuple[str, str, float]]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(t.signing_keys).order_by(t.signing_keys.c.create_time))).all()
        return [(r.kid, r.private_jwk, r.create_time) for r in rows]

    async def add_signing_key(self, kid: str, private_jwk: str, now: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(t.signing_keys).values(kid=kid, private_jwk=private_jwk, create_time=now))

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

    async def put_throttle_state(self, key: str, state: ThrottleState) -> None:
        values = {
            "failures": state.failures,
            "first_time": state.first_time,
            "last_time": state.last_time,
            "locked_until": state.locked_until,
        }
        async with self._engine.begin() as conn:
            result = await conn.execute(update(t.login_failures).where(t.login_failures.c.key == key).values(**values))
            if not result.rowcount:
                try:
                    async with conn.begin_nested():
                        await conn.execute(insert(t.login_failures).values(key=key, **values))
                except IntegrityError:
                    await conn.execute(update(t.login_failures).where(t.login_failures.c.key == key).values(**values))

    async def clear_throttle(self, key: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(t.login_failures).where(t.login_failures.c.key == key))


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
