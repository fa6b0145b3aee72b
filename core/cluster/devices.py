"""Which devices are online: the signal presence and calls build on.

A device (session) is connected while it has at least one event stream open.
When its last stream closes it stays online for a grace period, so a page
reload or a network blip does not flap its presence or drop its calls; past
the grace period it is lost, and the listeners are told.

``DeviceRegistry`` is the interface; ``LocalDeviceRegistry`` the embedded
implementation (one process, its grace timers on the injected clock);
``redis_devices.py`` holds the cluster's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.clock import SYSTEM_CLOCK, Clock, Timer

log = logging.getLogger("wac.devices")

DeviceListener = Callable[[str, str], Awaitable[None]]  # (username, session_id)


class DeviceRegistry(Protocol):
    async def stream_opened(self, username: str, session_id: str) -> None: ...

    async def stream_closed(self, username: str, session_id: str) -> None: ...

    async def ended(self, username: str, session_id: str) -> None:
        """The session is over (logout, revocation): lost at once, no grace."""

    async def online_devices(self, username: str) -> list[str]:
        """The user's sessions that are connected or within their grace period."""

    def on_online(self, listener: DeviceListener) -> None:
        """Told when a device opens its first stream (on the node it opened on)."""

    def on_lost(self, listener: DeviceListener) -> None:
        """Told once when a device is lost (by one node of a cluster)."""


@dataclass(slots=True)
class DeviceListeners:
    """The listeners of a registry, and the tasks its grace timers start."""

    online: list[DeviceListener] = field(default_factory=list)
    lost: list[DeviceListener] = field(default_factory=list)
    _expiries: set[asyncio.Task[Any]] = field(default_factory=set)

    async def tell_online(self, username: str, session_id: str) -> None:
        await _tell(self.online, username, session_id)

    async def tell_lost(self, username: str, session_id: str) -> None:
        await _tell(self.lost, username, session_id)

    def expire_soon(self, expiry: Coroutine[Any, Any, None]) -> None:
        """Run a grace timer's expiry: timers call plain functions."""
        # Held until done: the loop keeps only a weak reference to a task.
        task = asyncio.ensure_future(expiry)
        self._expiries.add(task)
        task.add_done_callback(self._expiries.discard)


async def _tell(listeners: list[DeviceListener], username: str, session_id: str) -> None:
    for listener in listeners:
        try:
            await listener(username, session_id)
        except Exception:
            log.exception("device listener failed for %s/%s", username, session_id)


@dataclass(slots=True)
class _Device:
    streams: int = 0
    grace: Timer | None = None
    last_seen: float = 0.0


class LocalDeviceRegistry:
    """The embedded registry: one process, its grace timers on ``clock``."""

    def __init__(self, grace_period: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._grace = grace_period
        self._clock = clock
        self._listeners = DeviceListeners()
        self._devices: dict[str, dict[str, _Device]] = {}

    def on_online(self, listener: DeviceListener) -> None:
        self._listeners.online.append(listener)

    def on_lost(self, listener: DeviceListener) -> None:
        self._listeners.lost.append(listener)

    async def stream_opened(self, username: str, session_id: str) -> None:
        devices = self._devices.setdefault(username, {})
        device = devices.get(session_id)
        came_online = device is None
        if device is None:
            device = devices[session_id] = _Device()
        if device.grace is not None:
            device.grace.cancel()
            device.grace = None
        device.streams += 1
        device.last_seen = self._clock.time()
        if came_online:
            await self._listeners.tell_online(username, session_id)

    async def stream_closed(self, username: str, session_id: str) -> None:
        device = self._devices.get(username, {}).get(session_id)
        if device is None:
            return
        device.streams = max(0, device.streams - 1)
        device.last_seen = self._clock.time()
        if device.streams == 0 and device.grace is None:
            device.grace = self._clock.call_later(self._grace, self._grace_over, username, session_id)

    async def ended(self, username: str, session_id: str) -> None:
        if self._drop(username, session_id):
            await self._listeners.tell_lost(username, session_id)

    async def online_devices(self, username: str) -> list[str]:
        return list(self._devices.get(username, {}))

    def streams(self, username: str, session_id: str) -> int:
        """The device's open event streams: 0 while in its grace period (or gone)."""
        device = self._devices.get(username, {}).get(session_id)
        return 0 if device is None else device.streams

    def last_seen(self, username: str) -> float:
        devices = self._devices.get(username, {})
        return max((d.last_seen for d in devices.values()), default=0.0)

    def _grace_over(self, username: str, session_id: str) -> None:
        self._listeners.expire_soon(self._expire(username, session_id))

    async def _expire(self, username: str, session_id: str) -> None:
        device = self._devices.get(username, {}).get(session_id)
        if device is None or device.streams > 0:
            return
        self._drop(username, session_id)
        await self._listeners.tell_lost(username, session_id)

    def _drop(self, username: str, session_id: str) -> bool:
        devices = self._devices.get(username)
        if not devices or session_id not in devices:
            return False
        device = devices.pop(session_id)
        if device.grace is not None:
            device.grace.cancel()
        if not devices:
            del self._devices[username]
        return True
