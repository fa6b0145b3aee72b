"""Storage of Google links: each subscriber's sealed OAuth token and whether
the link works, plus the authorizations under way. SQL only."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.cipher import TokenCipher
from core.directory import tables as t

LINKED = "linked"
BROKEN = "broken"


@dataclass(frozen=True, slots=True)
class GoogleLink:
    username: str
    state: str  # LINKED or BROKEN
    token: dict[str, Any] = field(repr=False)
    reason: str = ""  # why a broken link broke
    create_time: float = 0.0
    update_time: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingLink:
    """An authorization started by ``username`` and not yet called back."""

    state: str
    username: str
    code_verifier: str = field(repr=False)
    expire_time: float = 0.0


class GoogleLinkStore:
    """Links on the shared database; tokens and verifiers are sealed at rest."""

    def __init__(self, engine: AsyncEngine, cipher: TokenCipher, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._cipher = cipher
        self._clock = clock

    @staticmethod
    def _token_context(username: str) -> str:
        return f"google_links:{username}"

    async def get(self, username: str) -> GoogleLink | None:
        g = t.google_links
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(g).where(g.c.username == username))).first()
        if row is None:
            return None
        m = row._mapping
        return GoogleLink(
            username=username,
            state=m["state"],
            token=self._cipher.open_json(m["token"], context=self._token_context(username)),
            reason=m["reason"],
            create_time=m["create_time"],
            update_time=m["update_time"],
        )

    async def usernames(self, state: str = LINKED) -> list[str]:
        """Who has a link in ``state``: the core makes a connector for each linked one."""
        g = t.google_links
        async with self._engine.connect() as conn:
            result = await conn.execute(select(g.c.username).where(g.c.state == state).order_by(g.c.username))
            return list(result.scalars())

    async def save(self, username: str, token: dict[str, Any]) -> None:
        """Store a fresh grant: the link is (again) working."""
        g = t.google_links
        now = self._clock()
        sealed = self._cipher.seal_json(token, context=self._token_context(username))
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(g).where(g.c.username == username).values(token=sealed, state=LINKED, reason="", update_time=now)
            )
            if not result.rowcount:
                await conn.execute(
                    insert(g).values(
                        username=username,
                        token=sealed,
                        state=LINKED,
                        reason="",
                        create_time=now,
                        update_time=now,
                    )
                )

    async def update_token(self, username: str, token: dict[str, Any]) -> None:
        """Keep a refreshed token; a link that was removed meanwhile stays removed."""
        g = t.google_links
        sealed = self._cipher.seal_json(token, context=self._token_context(username))
        async with self._engine.begin() as conn:
            await conn.execute(
                update(g).where(g.c.username == username).values(token=sealed, update_time=self._clock())
            )

    async def mark_broken(self, username: str, reason: str) -> None:
        g = t.google_links
        async with self._engine.begin() as conn:
            await conn.execute(
                update(g).where(g.c.username == username).values(state=BROKEN, reason=reason, update_time=self._clock())
            )

    async def delete(self, username: str) -> None:
        g = t.google_links
        async with self._engine.begin() as conn:
            await conn.execute(delete(g).where(g.c.username == username))

    # -- authorizations under way ---------------------------------------------

    async def add_pending(self, pending: PendingLink) -> None:
        r = t.google_link_requests
        sealed = self._cipher.seal(pending.code_verifier.encode(), context=f"google_link_requests:{pending.state}")
        async with self._engine.begin() as conn:
            # Abandoned authorizations go when new ones come.
            await conn.execute(delete(r).where(r.c.expire_time < self._clock()))
            await conn.execute(
                insert(r).values(
                    state=pending.state,
                    username=pending.username,
                    code_verifier=sealed,
                    expire_time=pending.expire_time,
                )
            )

    async def take_pending(self, state: str) -> PendingLink | None:
        """The authorization for ``state``, removed: a state is good once."""
        r = t.google_link_requests
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(r).where(r.c.state == state))).first()
            if row is None:
                return None
            taken = await conn.execute(delete(r).where(r.c.state == state))
            if not taken.rowcount:
                return None  # another node took it first
        m = row._mapping
        verifier = self._cipher.open(m["code_verifier"], context=f"google_link_requests:{state}")
        return PendingLink(
            state=state,
            username=m["username"],
            code_verifier=verifier.decode(),
            expire_time=m["expire_time"],
        )
