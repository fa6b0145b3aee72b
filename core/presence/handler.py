"""The presence handler: devices come and go, publish, join calls; watchers
hear of it. The rules are in ``rules.py``, SQL in ``store.py``, who may see
whom in ``visibility.py``; this module sequences them.

Flow of one change. Whatever changes a subscriber's presence (a device
publishing, connecting or lost, a call starting or ending) takes that
subscriber's lock, writes the device row, re-aggregates from the rows and,
if the aggregate differs from the last one, offers it to the coalescer. An
emission looks up the subject's watchers (see ``Visibility.watchers_of``)
and appends one ``presenceChanged`` event to their sessions' logs, so a
change costs one query plus one append per watcher session. Bursts are
coalesced per subject: at most one emission per ``coalesce_interval``, the
latest state winning, so no watcher gets more than one event per subject
per interval.

What is shared. The device rows are in SQL, shared by any core that
opens the same database. Who owns each subject, the in-call flags and the
online set are behind ``Subjects`` (``subjects.py``): on an embedded core
this core owns every subject and keeps the flags in memory; in a cluster
(``core/cluster/redis_presence.py``) a subject is owned by the core holding
its lease, which alone coalesces and emits for it, with its timers; a core
applying a change to a subject it does not own writes the row and hands
the change over, and the owner re-aggregates from the rows. The coalescer,
its timer and the last aggregate heard by watchers stay in this object, for
the subjects this core owns. In a cluster the device registry's sweep, not
:meth:`PresenceHandler.start`, takes a dead core's devices offline, and the
emission appends to the event log every edge reads. Display names come
from identity's subscriber read-cache, which a rename made on this core
evicts at once (and this service then re-announces the subject).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core import checks, failures
from core.clock import SYSTEM_CLOCK, Clock, Timer
from core.db import outage
from core.events.log import EventLog
from core.presence.messages import presence_message
from core.presence.rules import (
    Aggregate,
    Coalescer,
    DeviceStatus,
    Status,
    VisibilityPolicy,
    aggregate,
    presence_changed,
)
from core.presence.store import PresenceStore
from core.presence.subjects import LocalSubjects, Subjects
from core.presence.visibility import LinkIndex, Visibility
from wac.v1 import events_pb2

log = logging.getLogger("wac.presence")

MAX_BATCH = 500
# Seconds between attempts at an emission the event log refused (Redis
# restarting, a database blip): the change is kept, never dropped, and the
# watchers hear the subject's latest state once the log takes it.
EMIT_RETRY_SECONDS = 0.5
MAX_USERNAME = 64


class Named(Protocol):
    @property
    def display_name(self) -> str: ...


class SubscriberLookup(Protocol):
    """Where subscribers' existence and display names come from: identity's
    subscriber read-cache (``core/identity/subscribers.py``). A change made
    on this core is seen at once, one made elsewhere within its staleness
    bound."""

    async def display_name(self, username: str) -> str | None: ...

    async def get_many(self, usernames: Sequence[str]) -> Mapping[str, Named | None]: ...


@dataclass(frozen=True, slots=True)
class PresenceView:
    """A subscriber's presence as a reader gets it."""

    username: str
    display_name: str
    state: Aggregate


@dataclass(slots=True)
class _Subject:
    """What this core remembers of one subscriber's presence."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state: Aggregate | None = None  # the last aggregate computed
    version: int = 0  # bumped with each aggregate worth an event
    published: int = 0  # the version watchers last heard of
    heard: Aggregate | None = None  # the state watchers last heard
    renamed: bool = False  # watchers must hear the new display name
    heard_name: str | None = None  # the display name watchers last heard
    # The device rows behind ``state``. Only a write changes them, and every
    # write goes through this subject's lock, so an in-call flip (no write)
    # re-aggregates from here instead of re-reading the rows: two of the
    # four presence updates of each call setup would otherwise be a query.
    # In a cluster other cores write rows too: a change they hand over
    # re-reads them.
    devices: list[DeviceStatus] | None = None
    # Kept through a spell when this core did not own the subject (a held
    # change to hand over, or in use when the lease went): other cores may
    # have told watchers other states meanwhile, so what is remembered here
    # says nothing of what they last heard.
    stale: bool = False


class PresenceHandler:
    """Presence for one core; see the module docstring for what is shared."""

    def __init__(
        self,
        store: PresenceStore,
        events: EventLog,
        links: LinkIndex,
        subscribers: SubscriberLookup,
        *,
        visibility: str = "contacts",
        coalesce_interval: float = 0.25,
        max_note: int = 256,
        device_retention: float = 30 * 86400,
        subjects: Subjects | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``coalesce_interval`` (seconds, > 0) bounds events per watcher and
        subject; ``max_note`` bounds a published note in characters;
        ``device_retention`` is how long a disconnected device's published
        status is kept for its return (a refresh token's lifetime);
        ``subjects``: who owns which subject and the shared flags (default:
        this core owns them all, ``LocalSubjects``); ``clock`` reads the
        time and runs the coalescing timer."""
        self._store = store
        self._events = events
        self._subscribers = subscribers
        self._clock = clock
        self._max_note = max_note
        self._device_retention = device_retention
        self._coalescer: Coalescer[str, int] = Coalescer(interval=max(coalesce_interval, 0.001))
        self._subjects: dict[str, _Subject] = {}
        self._shared: Subjects = LocalSubjects() if subjects is None else subjects
        self._shared.on_change(self._handed_over)
        self._shared.on_release(self._released)
        self._timer: Timer | None = None
        self._timer_deadline = 0.0
        self._flushes: set[asyncio.Task[None]] = set()
        self._retries: dict[str, Timer] = {}  # subject -> its next emission attempt
        self.visibility = Visibility(visibility, links, self._shared.online_usernames, remember=not self._shared.shared)

    # -- lifecycle ----------------------------------------------------
    async def start(self) -> None:
        """Embedded: start from a clean slate, no device is connected to a
        core that just started (this is the only core). In a cluster the
        other cores' devices are online: the device registry's sweep takes
        a dead core's through their grace period instead."""
        if not self._shared.shared:
            stale = await self._store.disconnect_all()
            if stale:
                log.info("presence: %d device(s) of the previous run marked offline", stale)
        await self._shared.start()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for retry in self._retries.values():
            retry.cancel()
        self._retries.clear()
        for task in tuple(self._flushes):
            task.cancel()
        await asyncio.gather(*self._flushes, return_exceptions=True)
        if self._shared.shared:
            # The next owner knows nothing of the changes held here: they
            # are told now, a little early, rather than never.
            for username, subject in list(self._subjects.items()):
                if subject.published < subject.version and self._shared.holds(username):
                    await self._flush(username)
        await self._shared.stop()

    # -- what changes presence ----------------------------------------
    async def publish(self, username: str, session_id: str, status: Status, note: str) -> PresenceView:
        """A device publishes its status and note (SetPresence); returns the
        subscriber's aggregate. OFFLINE makes the device invisible."""
        checks.max_length("note", note, self._max_note)

        async def write(now: float) -> list[DeviceStatus]:
            connected = self._shared.is_online(username, session_id)
            return await self._store.publish(username, session_id, status, note, now, connected=connected)

        state = await self._apply(username, write)
        return PresenceView(username, await self._subscribers.display_name(username) or username, state)

    async def set_in_call(self, username: str, in_call: bool) -> None:
        """Whether the subscriber has at least one active call now.

        While true the subscriber reads BUSY with reason IN_CALL (unless
        DO_NOT_DISTURB or offline); after, its published status again. The
        calls service calls this when a call of the subscriber is answered
        and when its last call ends; repeating a value is harmless.
        """
        if await self._shared.set_in_call(username, in_call):
            await self._apply(username)

    async def device_online(self, username: str, session_id: str) -> None:
        """DeviceRegistry listener: the device opened its first event stream."""
        self._shared.device_online(username, session_id)

        async def write(now: float) -> list[DeviceStatus]:
            return await self._store.device_online(username, session_id, now)

        await self._apply(username, write)

    async def device_lost(self, username: str, session_id: str) -> None:
        """DeviceRegistry listener: the device is gone (grace period over,
        logout or revocation)."""
        self._shared.device_lost(username, session_id)

        async def write(now: float) -> None:
            await self._store.device_lost(session_id, now)
            await self._store.prune(username, now - self._device_retention)

        await self._apply(username, write)

    async def subscriber_changed(self, username: str, row: Named | None) -> None:
        """Identity listener: a renamed subscriber's watchers hear the new
        name; a deleted one's devices are forgotten."""
        if row is None:
            self.visibility.forget(username)
            self._subjects.pop(username, None)
            await self._shared.forget(username)
            await self._store.forget(username)
            return
        name = row.display_name or username
        subject = self._subjects.get(username)
        # Identity evicted the old name before telling us: the next emission
        # reads the new one; forced, it is sent even though the state is not new.
        if subject is not None and subject.state and subject.heard_name not in (None, name):
            await self._apply(username, force=True)
        elif self._shared.shared and (subject is None or not self._shared.holds(username)):
            # Another core may own the subject and have told its watchers
            # the old name: its owner re-announces it.
            await self._apply(username, force=True)

    async def links_changed(self, owner: str, added: Collection[str], removed: Collection[str]) -> None:
        """Contacts listener: ``owner`` now links ``added`` (and no longer
        ``removed``), so ``added`` may now see the owner. The owner's presence
        is sent to their devices at once, so their view needs no reload;
        ``removed`` simply hear no more."""
        self.visibility.forget(owner)
        if self.visibility.policy is not VisibilityPolicy.CONTACTS:
            return
        watchers = [name for name in added if name != owner]
        if not watchers:
            return
        view = await self._view(owner)
        if view is not None:
            event = events_pb2.Event(presence_changed=presence_message(view.username, view.display_name, view.state))
            await self._events.publish(watchers, event)

    # -- reads --------------------------------------------------------
    async def read(self, viewer: str | None, username: str) -> PresenceView:
        """One subscriber's presence. ``viewer`` is the calling subscriber,
        None for a trusted service. PERMISSION_DENIED when hidden from the
        viewer (before existence is checked: a hidden name reveals nothing),
        NOT_FOUND when no such subscriber."""
        checks.require("username", username)
        checks.max_length("username", username, MAX_USERNAME)
        if viewer is not None and not await self.visibility.may_see(viewer, username):
            # Saying how access is granted would only help those not granted it.
            raise failures.PermissionDenied(f"the presence of '{username}' is not visible to you")
        view = await self._view(username)
        if view is None:
            raise failures.NotFound(f"subscriber '{username}' does not exist")
        return view

    async def read_many(self, viewer: str | None, usernames: Iterable[str]) -> list[PresenceView]:
        """Several subscribers' presence in request order; hidden and unknown
        ones are left out."""
        names = list(usernames)
        if not names:
            raise failures.Invalid("usernames", "is required")
        if len(names) > MAX_BATCH:
            raise failures.Invalid("usernames", f"has {len(names)} usernames; at most {MAX_BATCH} are allowed")
        for index, name in enumerate(names):
            checks.require(f"usernames[{index}]", name)
            checks.max_length(f"usernames[{index}]", name, MAX_USERNAME)
        wanted = list(dict.fromkeys(names))
        if viewer is not None:
            visible = await self.visibility.visible_among(viewer, wanted)
            wanted = [name for name in wanted if name in visible]
        devices = await self._store.devices_of(wanted)
        in_call = await self._shared.in_call_among(wanted)
        now = self._clock.time()
        known = await self._subscribers.get_many(wanted)
        out: list[PresenceView] = []
        for name in wanted:
            subscriber = known.get(name)
            if subscriber is None:
                continue
            state = aggregate(devices.get(name, ()), in_call=name in in_call, now=now)
            out.append(PresenceView(name, subscriber.display_name, state))
        return out

    async def may_see(self, viewer: str, subject: str) -> bool:
        """Whether the subscriber ``viewer`` may see ``subject``'s presence."""
        return await self.visibility.may_see(viewer, subject)

    async def _view(self, username: str) -> PresenceView | None:
        display_name = await self._subscribers.display_name(username)
        if display_name is None:
            return None
        devices = await self._store.devices(username)
        in_call = await self._shared.in_call(username)
        state = aggregate(devices, in_call=in_call, now=self._clock.time())
        return PresenceView(username, display_name, state)

    # -- change, coalescing, emission ---------------------------------
    async def _apply(
        self,
        username: str,
        write: Callable[[float], Awaitable[list[DeviceStatus] | None]] | None = None,
        *,
        force: bool = False,
        reread: bool = False,
    ) -> Aggregate:
        """Write (under the subject's lock), re-aggregate, and offer a real
        change to the coalescer; if another core owns the subject, hand the
        change over to it instead. Returns the new aggregate. ``reread``:
        another core wrote the rows. A write may return the subject's rows
        as it left them (read in its own transaction): they are not read
        again."""
        subject = self._subjects.setdefault(username, _Subject())
        async with subject.lock:
            now = self._clock.time()
            written = None if write is None else await write(now)
            if not await self._shared.claim(username):
                await self._shared.hand_over(username, force=force, rows=write is not None or reread)
                subject.devices = None
                rows = written if written is not None else await self._store.devices(username)
                return aggregate(rows, in_call=await self._shared.in_call(username), now=self._clock.time())
            if subject.stale:
                # Owned again: re-read, and tell the watchers whatever it is.
                subject.stale = False
                subject.state = subject.heard = subject.devices = None
            devices: list[DeviceStatus] | None = subject.devices
            if written is not None:
                devices = subject.devices = written
            elif write is not None or reread or devices is None:
                devices = subject.devices = await self._store.devices(username)
            in_call = await self._shared.in_call(username)
            now = self._clock.time()
            state = aggregate(devices, in_call=in_call, now=now)
            changed = force or presence_changed(subject.state, state)
            subject.state = state
            if not changed:
                return state
            subject.renamed = subject.renamed or force
            subject.version += 1
            if self._coalescer.offer(username, subject.version, now):
                try:
                    await self._emit(username, subject)
                except Exception as exc:
                    # The row is written and the change kept: the caller is
                    # told, and the watchers hear it once the log is back
                    # (the caller's retry finds no change to emit).
                    if _out_of_reach(exc):
                        self._retry_later(username)
                    raise
            else:
                self._schedule()
            return state

    async def _emit(self, username: str, subject: _Subject) -> None:
        """Tell the subject's watchers its latest state. Called with the
        subject's lock held, so emissions of one subject never reorder."""
        if subject.published >= subject.version or subject.state is None:
            return
        version, state = subject.version, subject.state
        if not subject.renamed and subject.heard is not None and not presence_changed(subject.heard, state):
            # Changed and changed back within one coalescing window (a short
            # call, a quick away): watchers already have this state.
            subject.published = version
            return
        display_name = await self._subscribers.display_name(username)
        if display_name is None:
            return
        watchers = await self.visibility.watchers_of(username)
        event = events_pb2.Event(presence_changed=presence_message(username, display_name, state))
        await self._events.publish(watchers, event)
        subject.published = version
        subject.heard = state
        subject.heard_name = display_name
        subject.renamed = False

    def _schedule(self) -> None:
        deadline = self._coalescer.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_deadline <= deadline:
                return
            self._timer.cancel()
        delay = max(0.0, deadline - self._clock.time())
        self._timer_deadline = deadline
        self._timer = self._clock.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        for username, _version in self._coalescer.due(self._clock.time()):
            self._flush_soon(username)
        self._schedule()

    def _flush_soon(self, username: str) -> None:
        self._retries.pop(username, None)
        task = asyncio.create_task(self._flush(username), name=f"presence-flush-{username}")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def _retry_later(self, username: str) -> None:
        if username not in self._retries:
            self._retries[username] = self._clock.call_later(EMIT_RETRY_SECONDS, self._flush_soon, username)

    async def _flush(self, username: str) -> None:
        subject = self._subjects.get(username)
        if subject is None:
            return
        try:
            async with subject.lock:
                if self._shared.holds(username):
                    await self._emit(username, subject)
                elif subject.published < subject.version:
                    # No longer the owner: the owner now emits the change.
                    await self._shared.hand_over(username, force=subject.renamed)
        except Exception as exc:
            if not _out_of_reach(exc):
                log.exception("presence: emitting the held change of %s failed", username)
                return
            log.warning("presence: the change of %s waits for the shared state to return: %s", username, exc)
            self._retry_later(username)

    async def _handed_over(self, username: str, force: bool, rows: bool) -> None:
        """Another core changed a subject this core owns (or takes over);
        ``rows``: it wrote the subject's device rows."""
        await self._apply(username, force=force, reread=rows)

    def _released(self, username: str) -> None:
        """This core no longer owns the subject: what it remembers of it is
        stale by the time it owns it again."""
        subject = self._subjects.get(username)
        if subject is None:
            return
        if subject.lock.locked() or subject.published < subject.version:
            # In use, or a held change whose flush hands it over.
            subject.stale = True
        else:
            del self._subjects[username]


def _out_of_reach(exc: Exception) -> bool:
    """The event log or the database failing for now, not the change."""
    return isinstance(exc, failures.Unavailable) or outage.describe(exc) is not None
