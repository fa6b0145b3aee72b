"""Presence rules as pure code: aggregation, coalescing and visibility.

Nothing here does I/O or reads the clock; callers pass ``now`` (wall-clock
seconds since the epoch).

Rules
-----

**Aggregation.** Each device (session) publishes its own status; a
subscriber's presence is the aggregate of its devices. A device counts as
online when it is connected and did not publish OFFLINE: a device that
publishes OFFLINE appears offline to everybody (invisible). Among the online
devices the most reachable wins, in the order AVAILABLE > AWAY > BUSY >
DO_NOT_DISTURB. The order answers "will a call reach this subscriber?": a
call rings on every device, so the subscriber is as reachable as the most
reachable device; DO_NOT_DISTURB means a call will not be taken, so it ranks
below BUSY, which may still be. The note is the winning device's; between
devices of the same status the most recently updated wins (then the smallest
device id, so the result never depends on input order). No online device
gives OFFLINE with no note.

**In a call.** A subscriber in an active call is at most BUSY: AVAILABLE,
AWAY and BUSY become BUSY with reason IN_CALL. DO_NOT_DISTURB stays as
published, since being in a call does not make the subscriber more
reachable. A subscriber whose devices are all offline or invisible stays
OFFLINE, without IN_CALL: saying "in a call" would reveal an invisible
device.

**Last seen.** The latest moment a device was visibly online: ``now`` for a
connected, visible device; a disconnected device's ``last_seen``; an
invisible device only up to when it went invisible (its ``updated_at``), so
invisibility does not leak through a moving last-seen time. None when no
device was ever seen. :func:`presence_changed` says when an aggregate is
worth an event: a moving last-seen time of an online subscriber is not.

**Coalescing.** :class:`Coalescer` emits at most one change per subject per
interval (250 ms by default), latest state wins. Coalescing per subject
rather than per (watcher, subject) pair bounds every watcher the same way
with one entry per subject instead of one per pair; a new watcher reads the
current state when it subscribes, so it needs no event of its own.

**Visibility.** A subscriber always sees itself. Under the "contacts"
policy the subject consents: a viewer sees a subject only when the subject's
own contacts link the viewer (``Contact.subscriber``). Adding someone to
your own contacts grants you nothing, or anyone could see anyone. Under
"domain" every subscriber of the deployment sees every other, like a company
directory. Services with the presence scope are the servicer's business, not
a visibility policy.
"""

from __future__ import annotations

import enum
import heapq
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

__all__ = [
    "DEFAULT_COALESCE_INTERVAL",
    "Aggregate",
    "Coalescer",
    "DeviceStatus",
    "Reason",
    "Status",
    "VisibilityPolicy",
    "aggregate",
    "may_see",
    "presence_changed",
]

DEFAULT_COALESCE_INTERVAL: Final = 0.25


class Status(enum.Enum):
    """A reachability status; names match ``wac.v1.Presence.Status``."""

    AVAILABLE = "AVAILABLE"
    AWAY = "AWAY"
    BUSY = "BUSY"
    DO_NOT_DISTURB = "DO_NOT_DISTURB"
    OFFLINE = "OFFLINE"


class Reason(enum.Enum):
    """Why wac, not the subscriber, set the status (``wac.v1.Presence.Reason``)."""

    IN_CALL = "IN_CALL"


# Lower is more reachable.
_RANK: Final = {
    Status.AVAILABLE: 0,
    Status.AWAY: 1,
    Status.BUSY: 2,
    Status.DO_NOT_DISTURB: 3,
    Status.OFFLINE: 4,
}


class VisibilityPolicy(enum.Enum):
    """Who may see a subscriber's presence (the ``presence.visibility`` setting)."""

    CONTACTS = "contacts"
    DOMAIN = "domain"


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """What one device published, and whether it is connected.

    ``updated_at`` is when the status or note was last published.
    ``last_seen`` is when a disconnected device was last connected; it is
    not read while ``connected``.
    """

    device: str
    status: Status
    note: str = ""
    updated_at: float = 0.0
    connected: bool = True
    last_seen: float = 0.0

    @property
    def online(self) -> bool:
        """Connected and visible: the device counts for the aggregate."""
        return self.connected and self.status is not Status.OFFLINE

    def seen_until(self, now: float) -> float:
        """The latest moment others could see this device online."""
        seen = now if self.connected else self.last_seen
        if self.status is Status.OFFLINE:
            seen = min(seen, self.updated_at)
        return seen


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A subscriber's presence as its watchers see it.

    ``device`` is the device whose status and note won, None when offline.
    """

    status: Status
    note: str = ""
    reason: Reason | None = None
    last_seen: float | None = None
    device: str | None = None


def aggregate(devices: Iterable[DeviceStatus], *, in_call: bool, now: float) -> Aggregate:
    """The subscriber's presence from its devices' statuses (see the module rules)."""
    devices = list(devices)
    last_seen = max((d.seen_until(now) for d in devices), default=None)
    online = [d for d in devices if d.online]
    if not online:
        return Aggregate(Status.OFFLINE, last_seen=last_seen)
    winner = min(online, key=lambda d: (_RANK[d.status], -d.updated_at, d.device))
    status, reason = winner.status, None
    if in_call and _RANK[status] <= _RANK[Status.BUSY]:
        status, reason = Status.BUSY, Reason.IN_CALL
    return Aggregate(status, winner.note, reason, last_seen, winner.device)


def presence_changed(previous: Aggregate | None, current: Aggregate) -> bool:
    """Whether watchers should hear of ``current`` after ``previous``.

    Status, note and reason always matter. The last-seen time matters only
    while offline: an online subscriber's moves with every call to
    :func:`aggregate`. The winning device alone does not matter, since
    watchers cannot tell devices apart.
    """
    if previous is None:
        return True
    if (previous.status, previous.note, previous.reason) != (
        current.status,
        current.note,
        current.reason,
    ):
        return True
    return current.status is Status.OFFLINE and previous.last_seen != current.last_seen


def may_see(
    viewer: str,
    subject: str,
    policy: VisibilityPolicy | str,
    subject_contacts_subscribers: Collection[str],
) -> bool:
    """Whether ``viewer`` may see ``subject``'s presence.

    ``subject_contacts_subscribers`` are the subscribers linked from the
    *subject's* contacts (a caller that knows only whether the subject links
    the viewer may pass ``{viewer}`` or nothing). The viewer's own contacts
    are deliberately not an argument. ValueError for an unknown policy name.
    """
    if viewer == subject:
        return True
    if VisibilityPolicy(policy) is VisibilityPolicy.DOMAIN:
        return True
    return viewer in subject_contacts_subscribers


K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """Rate-limits changes per subject: at most one emission per ``interval``.

    The first change of a quiet subject is emitted at once (:meth:`offer`
    returns True). Changes within ``interval`` of the last emission are held,
    the latest replacing earlier ones, and :meth:`due` returns them once
    ``interval`` has passed since that emission; schedule a call to
    :meth:`due` at :meth:`next_deadline`. Memory is bounded by the subjects
    emitted within the last ``interval`` plus those with a held change.
    Equal consecutive states are not detected here: offer only real changes
    (see :func:`presence_changed`).
    """

    def __init__(self, *, interval: float = DEFAULT_COALESCE_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        # Subjects by last emission time, oldest first; pruned once quiet.
        self._emitted: OrderedDict[K, float] = OrderedDict()
        self._held: dict[K, V] = {}
        # (deadline, order, subject) for each held subject; the order breaks
        # ties without comparing subjects.
        self._deadlines: list[tuple[float, int, K]] = []
        self._order = 0

    def __len__(self) -> int:
        """The number of subjects tracked: recently emitted or held."""
        return len(self._emitted.keys() | self._held.keys())

    def offer(self, subject: K, state: V, now: float) -> bool:
        """Record a change; True when it is to be emitted now, False when held."""
        self._prune(now)
        if subject in self._held:
            self._held[subject] = state
            return False
        last = self._emitted.get(subject)
        if last is None or now - last >= self.interval:
            self._mark_emitted(subject, now)
            return True
        self._held[subject] = state
        self._order += 1
        heapq.heappush(self._deadlines, (last + self.interval, self._order, subject))
        return False

    def due(self, now: float) -> list[tuple[K, V]]:
        """The held changes whose deadline has come, to emit now, oldest deadline first."""
        ready: list[tuple[K, V]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, subject = heapq.heappop(self._deadlines)
            ready.append((subject, self._held.pop(subject)))
            self._mark_emitted(subject, now)
        self._prune(now)
        return ready

    def next_deadline(self) -> float | None:
        """When :meth:`due` will next have something; None when nothing is held."""
        return self._deadlines[0][0] if self._deadlines else None

    def _mark_emitted(self, subject: K, now: float) -> None:
        self._emitted[subject] = now
        self._emitted.move_to_end(subject)

    def _prune(self, now: float) -> None:
        # A subject quiet for a whole interval needs no memory: its next
        # change is emitted at once. Held subjects stay: due() needs them.
        while self._emitted:
            subject, last = next(iter(self._emitted.items()))
            if now - last < self.interval or subject in self._held:
                break
            del self._emitted[subject]
