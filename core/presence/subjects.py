"""What presence shares between cores: who owns each subject (coalesces and
emits for it), who is in a call, who is online.

``Subjects`` is the interface; ``LocalSubjects`` the embedded implementation
(one core: it owns every subject, and the flags and the online set are its
memory). The cluster's, on Redis and leases, is
``core/cluster/redis_presence.py``; ``core/cluster/choose.py`` picks one.

In a cluster a change may be applied on any core: that core writes the
device row (SQL, shared), then offers the change to the subject's owner. If
it holds the subject's lease, or can take it, it is the owner; otherwise it
hands the change over and the owner re-aggregates from the rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

# (username, force, rows): re-aggregate the subject and emit if it changed
# (always if ``force``: its display name changed); ``rows``: the change
# wrote its device rows, which the owner reads again (an in-call flip
# writes none).
ChangeListener = Callable[[str, bool, bool], Awaitable[None]]
# A subject this core no longer owns: what it remembers of it is stale.
ReleaseListener = Callable[[str], None]


class Subjects(Protocol):
    @property
    def shared(self) -> bool:
        """Whether other cores write the same subjects (a cluster): rows are
        re-read rather than cached, and nothing is reset at start."""
        ...

    async def claim(self, username: str) -> bool:
        """Whether this core owns the subject now (it held or took it)."""
        ...

    def holds(self, username: str) -> bool:
        """Whether this core still owns the subject (no I/O)."""
        ...

    async def hand_over(self, username: str, *, force: bool, rows: bool = True) -> None:
        """Tell the subject's owner to re-aggregate it (``rows``: from rows
        read again); if no core owns it, this core takes it over and is told
        (``on_change``) instead."""
        ...

    def on_change(self, listener: ChangeListener) -> None:
        """Told of the changes other cores handed over to this one."""
        ...

    def on_release(self, listener: ReleaseListener) -> None:
        """Told when this core stops owning a subject (idle, or lease lost)."""
        ...

    async def in_call(self, username: str) -> bool: ...

    async def in_call_among(self, usernames: Collection[str]) -> set[str]: ...

    async def set_in_call(self, username: str, in_call: bool) -> bool:
        """Record the flag; True if it changed."""
        ...

    async def forget(self, username: str) -> None:
        """A deleted subscriber: its flag goes."""
        ...

    def device_online(self, username: str, session_id: str) -> None: ...

    def device_lost(self, username: str, session_id: str) -> None: ...

    def is_online(self, username: str, session_id: str) -> bool:
        """Whether the device is online on this core."""
        ...

    async def online_usernames(self) -> Collection[str]:
        """The subscribers with a device online (the watchers under "domain")."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LocalSubjects:
    """The embedded subjects: this core owns them all."""

    def __init__(self) -> None:
        self._in_call: set[str] = set()
        self._online: dict[str, set[str]] = {}  # username -> sessions online

    @property
    def shared(self) -> bool:
        return False

    async def claim(self, username: str) -> bool:
        return True

    def holds(self, username: str) -> bool:
        return True

    async def hand_over(self, username: str, *, force: bool, rows: bool = True) -> None:
        raise AssertionError("an embedded core owns every subject")

    def on_change(self, listener: ChangeListener) -> None:
        pass  # no other core hands a change over

    def on_release(self, listener: ReleaseListener) -> None:
        pass  # every subject stays owned

    async def in_call(self, username: str) -> bool:
        return username in self._in_call

    async def in_call_among(self, usernames: Collection[str]) -> set[str]:
        return {name for name in usernames if name in self._in_call}

    async def set_in_call(self, username: str, in_call: bool) -> bool:
        if in_call == (username in self._in_call):
            return False
        if in_call:
            self._in_call.add(username)
        else:
            self._in_call.discard(username)
        return True

    async def forget(self, username: str) -> None:
        self._in_call.discard(username)

    def device_online(self, username: str, session_id: str) -> None:
        self._online.setdefault(username, set()).add(session_id)

    def device_lost(self, username: str, session_id: str) -> None:
        sessions = self._online.get(username)
        if sessions is not None:
            sessions.discard(session_id)
            if not sessions:
                del self._online[username]

    def is_online(self, username: str, session_id: str) -> bool:
        return session_id in self._online.get(username, ())

    async def online_usernames(self) -> Collection[str]:
        return self._online.keys()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
