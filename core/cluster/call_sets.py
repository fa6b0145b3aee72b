"""The sets of live calls every core must count alike: the calls each caller
has placed and each callee has ringing (the bounds on creating a call), the
live calls each device takes part in (where a lost device's calls are
found), and the answered calls of each subscriber (who is in a call).

``CallSets`` is the interface; ``LocalCallSets`` the embedded implementation
(one process's memory) and ``redis_call_sets.RedisCallSets`` the cluster's.
Every method is atomic on its own: ``reserve`` checks and takes a place in
one step, so concurrent CreateCalls on several cores cannot all slip under a
bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class CallSets(Protocol):
    async def reserve(self, call_id: str, caller: str, callee: str) -> tuple[int, int]:
        """Count the call among the caller's placed calls and the callee's
        ringing ones; answer how many other calls each held before it."""
        ...

    async def answered(self, call_id: str, callee: str) -> None:
        """The call no longer rings at the callee (it was answered)."""
        ...

    async def release(self, call_id: str, caller: str, callee: str) -> None:
        """The call ended (or was refused): it leaves both counts."""
        ...

    async def attach(self, call_id: str, devices: Iterable[str]) -> None:
        """The call's devices (its caller's and those offered it)."""
        ...

    async def detach(self, call_id: str, devices: Iterable[str]) -> None: ...

    async def calls_of(self, device: str) -> list[str]:
        """The live calls the device takes part in."""
        ...

    async def join(self, call_id: str, username: str) -> bool:
        """The user is in the answered call; True if it was in none before."""
        ...

    async def leave(self, call_id: str, username: str) -> bool:
        """The answered call ended; True if it was the user's last."""
        ...

    async def busy(self, username: str) -> bool:
        """Whether the user is in an answered call on any core."""
        ...


class LocalCallSets:
    """The embedded sets: this process's memory."""

    def __init__(self) -> None:
        self._placed: dict[str, set[str]] = {}
        self._ringing: dict[str, set[str]] = {}
        self._devices: dict[str, set[str]] = {}
        self._in_call: dict[str, set[str]] = {}

    async def reserve(self, call_id: str, caller: str, callee: str) -> tuple[int, int]:
        placed = self._placed.setdefault(caller, set())
        ringing = self._ringing.setdefault(callee, set())
        counts = len(placed - {call_id}), len(ringing - {call_id})
        placed.add(call_id)
        ringing.add(call_id)
        return counts

    async def answered(self, call_id: str, callee: str) -> None:
        _discard(self._ringing, callee, call_id)

    async def release(self, call_id: str, caller: str, callee: str) -> None:
        _discard(self._placed, caller, call_id)
        _discard(self._ringing, callee, call_id)

    async def attach(self, call_id: str, devices: Iterable[str]) -> None:
        for device in devices:
            self._devices.setdefault(device, set()).add(call_id)

    async def detach(self, call_id: str, devices: Iterable[str]) -> None:
        for device in devices:
            _discard(self._devices, device, call_id)

    async def calls_of(self, device: str) -> list[str]:
        return list(self._devices.get(device, ()))

    async def join(self, call_id: str, username: str) -> bool:
        calls = self._in_call.setdefault(username, set())
        first = not calls
        calls.add(call_id)
        return first

    async def leave(self, call_id: str, username: str) -> bool:
        calls = self._in_call.get(username)
        if calls is None or call_id not in calls:
            return False
        _discard(self._in_call, username, call_id)
        return username not in self._in_call

    async def busy(self, username: str) -> bool:
        return bool(self._in_call.get(username))


def _discard(index: dict[str, set[str]], key: str, call_id: str) -> None:
    calls = index.get(key)
    if calls is not None:
        calls.discard(call_id)
        if not calls:
            del index[key]
