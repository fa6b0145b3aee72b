"""The conferences handler: runs the rules (``rules.py``) against the
store, the event log, the media server (through a ``ConferenceBridge``),
in-call presence, lost devices and revoked sessions. It only sequences them.

Every input that changes a conference follows the same path: the store
applies the rules' step to the conference under its row lock and keeps the
result (``store.change``), then the handler carries out what changed: the
events to the members, in-call presence, the media server. A change, once
stored, is carried out: it runs in a task of its own, so a client that
cancels its RPC cannot leave a conference changed but unannounced.

Guarantees:

- State lives in the database alone: any core answers for any conference,
  and a core that restarts or dies loses nothing but the timer below. A
  participant counts as IN_CALL for presence (``core/calls/incall.py``,
  shared with calls: in a conference a subscriber is busy as in a call)
  from any core's joining to any core's leaving.
- A participant leaves the room when it calls LeaveConference, when the
  conference ends, when an operator kicks it, when its session ends
  (identity's revocation listener, and the device registry's: this core's
  revocations at once, another core's within ``[identity] revocation_poll``),
  and when its device goes offline past the presence grace period (the
  device registry, as calls do). Each time the members get
  conferenceParticipantLeft and its feed is kicked out of the room through
  the bridge, so that nobody wac counts out publishes in it. A restarted core gives the
  devices of the participants it finds in the store that grace period to
  come back.
- The media server's token of a join expires with the caller's access
  token (the principal carries no later expiry of its session): the SDK
  joins again, from the same device, for a new one, and keeps its place.
  That token cannot be revoked, so each join also admits the device to
  the room with a room token of its own (``ConferenceBridge.admit``), taken
  back whenever it leaves, before its feed is kicked.
- A conference whose room stays empty for ``idle_timeout`` seconds ends
  by itself (``ended_by`` "wac"), its room destroyed: every core sweeps
  every ``idle_timeout / 4`` seconds (at most a minute), and the rule,
  applied under the row lock, ends it once whichever core comes first.
- Ending a conference never fails for the media server: the conference
  ends in wac, and a room the bridge could not destroy is logged.
  Creating and joining need the media server; kicking asks it first, so an
  operator is told when the participant could not be taken out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from core import checks, failures, metrics, paging
from core.auth.principal import Principal, ServicePrincipal, SubscriberPrincipal
from core.calls import ice
from core.calls.incall import InCall
from core.clock import SYSTEM_CLOCK, Clock, Timer
from core.cluster.devices import DeviceRegistry
from core.conferences import messages, rules
from core.conferences.bridge import ConferenceBridge
from core.conferences.rules import Conference, EndReason, LeaveReason, Media, Participant, State
from core.conferences.store import ConferenceStore
from core.events.log import EventLog
from core.identity.revocations import SessionsRevoked
from core.tasks import Work, cancelled
from settings.config import IceConfig

log = logging.getLogger("wac.conferences")

# In-call presence counts each room apart from calls' ids.
ROOM_PREFIX = "conference:"
# How long JoinConference waits for the caller's device to come online (a
# Subscribe sent just before it may reach the registry just after), and how
# often it looks meanwhile (the device may come online on another core).
ONLINE_WAIT = 2.0
ONLINE_POLL = 0.05
# The idle sweep's period at most: an empty room outlives its timeout by
# no more than this (or a quarter of the timeout, when that is shorter).
MAX_SWEEP_PERIOD = 60.0


class Subscribers(Protocol):
    """identity's subscriber read-cache (``core/identity/subscribers.py``)."""

    async def exists(self, username: str) -> bool: ...

    async def display_name(self, username: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Joined:
    """What a device needs to enter a conference's room (the participant's
    room token among it)."""

    conference: Conference
    participant: Participant
    janus_path: str
    token: str
    ice_servers: list[ice.IceServer]


class ConferenceHandler:
    """Conferences; the composition root calls start() and stop()."""

    def __init__(
        self,
        *,
        store: ConferenceStore,
        events: EventLog,
        devices: DeviceRegistry,
        subscribers: Subscribers,
        bridge: ConferenceBridge,
        in_call: InCall,
        ice_config: IceConfig,
        device_grace: float,
        max_participants: int | None = None,
        idle_timeout: float = 0.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``in_call`` is the calls' (started and stopped by them): one
        subscriber in a call and a room is in a call until it left both.
        ``device_grace``: how long a restarted core waits for the devices
        of the participants it finds to come back. ``max_participants``:
        the publishers a room of the media server holds (a join past it is
        refused here, not by the media server after wac admitted it).
        ``idle_timeout``: how long a room may stay empty before its
        conference ends (0: never)."""
        self._store = store
        self._events = events
        self._devices = devices
        self._subscribers = subscribers
        self._bridge = bridge
        self._in_call = in_call
        self._ice = ice_config
        self._device_grace = device_grace
        self._max_participants = max_participants
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._work = Work()
        self._reconnect_check: Timer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stopped = False

    # -- lifecycle ----------------------------------------------------
    async def start(self) -> None:
        """Listen for lost devices; count the participants in the store as
        in a call, and give their devices the grace period to come back;
        sweep the idle rooms."""
        self._devices.on_lost(self._device_lost)
        if self._idle_timeout > 0:
            self._sweeper = asyncio.ensure_future(self._sweep_idle())
        present = await self._store.present()
        for conference_id, username, _ in present:
            self._in_call.joined(ROOM_PREFIX + conference_id, username)
        if present:
            log.info("%d participant(s) in conference rooms", len(present))
            self._reconnect_check = self._clock.call_later(
                self._device_grace, lambda: self._work.spawn(self._drop_absent(present))
            )

    async def stop(self) -> None:
        """Let the changes in flight finish (for a moment)."""
        self._stopped = True
        if self._reconnect_check is not None:
            self._reconnect_check.cancel()
        if self._sweeper is not None:
            await cancelled(self._sweeper)
        await self._work.drain()

    async def sessions_revoked(self, event: SessionsRevoked) -> None:
        """identity's listener: the sessions' devices leave every room, at
        once (a task: identity's listeners must be short). Matched by
        session, never by username: a revocation learnt late from another
        core must not take out a device that logged in since."""
        if event.session_ids and not self._stopped:
            self._work.spawn(self._leave_rooms(event.session_ids, LeaveReason.SESSION_ENDED))

    async def _device_lost(self, username: str, session_id: str) -> None:
        if self._stopped:
            return
        # A revocation closes the session's events before it loses the
        # device: a session still open went offline past its grace period.
        reason = LeaveReason.CONNECTION_LOST
        if not await self._events.is_open(session_id):
            reason = LeaveReason.SESSION_ENDED
        self._work.spawn(self._leave_rooms((session_id,), reason))

    # -- subscriber inputs --------------------------------------------
    async def create(
        self, who: SubscriberPrincipal, *, title: str, invitees: Sequence[str], media: Media
    ) -> Conference:
        if not who.has("call.audio"):
            raise failures.PermissionDenied("a conference needs the call.audio permission")
        if media.video and not who.has("call.video"):
            raise failures.PermissionDenied("a video conference needs the call.video permission")
        title = rules.title(title)
        new = rules.new_invitees("invitees", invitees, creator=who.username)
        await self._require_subscribers("invitees", invitees, new)
        # Counted before the room is made: creations racing past the bound
        # can each take one more, which bounds the rooms all the same.
        if await self._store.active_created_by(who.username) >= rules.MAX_ACTIVE_PER_CREATOR:
            raise failures.Exhausted(
                f"at most {rules.MAX_ACTIVE_PER_CREATOR} conferences of one creator may be active: end one first"
            )
        conference = Conference(
            conference_id=secrets.token_urlsafe(16),
            title=title,
            creator=who.username,
            media=media,
            invitees=new,
            participants=(),
            state=State.ACTIVE,
            room=0,
            create_time=self._clock.time(),
            idle_since=self._clock.time(),
        )
        return await self._work.run(self._begin(conference))

    async def _begin(self, conference: Conference) -> Conference:
        """Make the room, then store the conference in it (in the shielded
        task: a cancelled RPC leaves no room behind)."""
        room = await self._bridge.create_room(conference.conference_id, video=conference.media.video)
        conference = replace(conference, room=room)
        try:
            await self._store.create(conference)
        except BaseException:
            await self._destroy(conference)  # not stored, so not made
            raise
        metrics.CONFERENCES_CREATED.inc()
        await self._invited(conference, conference.invitees)
        log.debug("conference %s created by %s", conference.conference_id, conference.creator)
        return conference

    async def invite(self, who: SubscriberPrincipal, conference_id: str, invitees: Sequence[str]) -> Conference:
        rules.conference_id(conference_id)
        checks.require("invitees", invitees)
        # Refused before any invitee is looked up: a stranger learns nothing.
        known = rules.invite(await self._store.get(conference_id), who.username, ())
        new = rules.new_invitees("invitees", invitees, creator=known.creator, invited=known.invitees)
        await self._require_subscribers("invitees", invitees, new)
        if not new:
            return known  # every one of them is a member already

        async def change() -> Conference:
            before, after = await self._store.change(conference_id, lambda c: rules.invite(c, who.username, invitees))
            await self._invited(after, after.invitees[len(before.invitees) :])
            return after

        return await self._work.run(change())

    async def join(self, who: SubscriberPrincipal, conference_id: str) -> Joined:
        rules.conference_id(conference_id)
        current = rules.may_join(await self._store.get(conference_id), who.username)
        await self._require_online(who)
        # Before the join is stored: without a token there is no join.
        token = await self._bridge.join_token(who.expires_at)
        path = self._bridge.janus_path
        now = self._clock.time()

        async def change() -> Conference:
            # A new room token each time, the same device's too (its
            # reconnect joins the room anew); a token of a device that has
            # joined is taken back once it is replaced: the media server
            # checks it when a publisher joins, not after.
            admitted = await self._bridge.admit(current.room)

            def step(conference: Conference | None) -> Conference:
                return rules.join(
                    conference,
                    who.username,
                    who.session_id,
                    now,
                    _draw_feed_id,
                    admitted,
                    max_participants=self._max_participants,
                )

            try:
                before, after = await self._store.change(conference_id, step)
            except BaseException:
                await self._revoke(current.room, admitted)  # not stored, so not admitted
                raise
            was = before.participant(who.username)
            if was is not None and was.session_id == who.session_id:
                await self._revoke(current.room, was.room_token)
            await self._carried_out(before, after, LeaveReason.MOVED, exclude=who.session_id)
            return after

        after = await self._work.run(change())
        participant = after.participant(who.username)
        assert participant is not None
        servers, _ = ice.ice_servers(self._ice, who.username, now)
        return Joined(after, participant, path, token, servers)

    async def leave(self, who: SubscriberPrincipal, conference_id: str) -> Conference:
        rules.conference_id(conference_id)

        async def change() -> Conference:
            # This device's place only: a device the place moved away from
            # (told MOVED) leaving must not take the other one out.
            before, after = await self._store.change(
                conference_id, lambda c: rules.leave(c, who.username, now=self._clock.time(), session_id=who.session_id)
            )
            await self._carried_out(before, after, LeaveReason.LEFT, exclude=who.session_id)
            return after

        return await self._work.run(change())

    # -- subscriber or operator inputs ---------------------------------
    async def end(self, who: Principal, conference_id: str) -> Conference:
        """The creator's end, or an operator's (a service with
        conferences.write, or an admin subscriber)."""
        rules.conference_id(conference_id)
        by = who.key_name if isinstance(who, ServicePrincipal) else who.username
        username = None if _operates(who, "conferences.write") else by
        now = self._clock.time()

        def step(conference: Conference | None) -> Conference:
            conference = rules.may_end(conference, conference_id, username)
            mine = isinstance(who, SubscriberPrincipal) and who.username == conference.creator
            return rules.end(conference, by, now, EndReason.CREATOR if mine else EndReason.OPERATOR)

        async def change() -> Conference:
            before, after = await self._store.change(conference_id, step)
            await self._carried_out(before, after, LeaveReason.LEFT)
            log.debug("conference %s ended by %s", conference_id, by)
            return after

        return await self._work.run(change())

    async def kick(self, who: Principal, conference_id: str, username: str) -> Conference:
        """An operator's kick: out of the media server's room first, so that
        an operator is told (UNAVAILABLE) when it could not be done."""
        if not _operates(who, "conferences.write"):
            raise failures.PermissionDenied("kicking a participant needs the conferences.write scope")
        rules.conference_id(conference_id)
        checks.require("username", username)
        current = await self._store.get(conference_id)
        participant = rules.to_kick(current, conference_id, username)
        assert current is not None
        if participant.room_token:
            await self._bridge.revoke(current.room, participant.room_token)
        await self._bridge.kick(current.room, participant.feed_id)

        def step(conference: Conference | None) -> Conference:
            # From that device only: one that took its place since was not kicked.
            found = rules.found(conference, conference_id)
            return rules.leave(found, username, now=self._clock.time(), session_id=participant.session_id)

        async def change() -> Conference:
            before, after = await self._store.change(conference_id, step)
            await self._carried_out(before, after, LeaveReason.KICKED, kicked=True)
            return after

        return await self._work.run(change())

    async def list_conferences(
        self, who: Principal, *, page_size: int, page_token: str
    ) -> tuple[list[Conference], str]:
        """A subscriber's conferences (active first), or, for an operator
        (conferences.read), every active one; and the next page's token."""
        size = paging.page_size(page_size)
        position = paging.decode_token(page_token)
        found: list[Conference]
        if isinstance(who, ServicePrincipal):
            operator = _before(position, active=False)
            found = await self._store.list_active(before=operator, limit=size + 1)
        else:
            member = _before(position, active=True)
            found = await self._store.list_for_member(who.username, before=member, limit=size + 1)
        if len(found) <= size:
            return found, ""
        last = found[size - 1]
        key: list[Any] = [last.create_time, last.conference_id]
        if not isinstance(who, ServicePrincipal):
            key.insert(0, last.state is State.ACTIVE)
        return found[:size], paging.encode_token(key)

    # -- carrying out ---------------------------------------------------
    async def _carried_out(
        self,
        before: Conference,
        after: Conference,
        reason: LeaveReason,
        *,
        exclude: str | None = None,
        kicked: bool = False,
    ) -> None:
        """Tell the members what changed between ``before`` and ``after``,
        and carry it out in presence and on the media server. ``exclude``:
        the device that made the change (it knows); ``reason``: why the
        participants who left did; ``kicked``: their feeds are out of the
        room already."""
        room = ROOM_PREFIX + after.conference_id
        if after.state is State.ENDED and before.state is not State.ENDED:
            metrics.CONFERENCE_ENDINGS_BY(after.end_reason.value if after.end_reason else "UNKNOWN").inc()
            await self._events.publish(after.members, messages.ended(after))
            for participant in before.participants:
                self._in_call.left(room, participant.username)
            await self._destroy(after)
            return
        stayed = {p.username for p in after.participants}
        for participant in rules.departed(before, after):
            # A participant whose other device took its place is told so
            # there, and is still in the room: still in a call.
            why = LeaveReason.MOVED if participant.username in stayed else reason
            metrics.CONFERENCE_LEAVES_BY(why.value).inc()
            await self._events.publish(
                after.members,
                messages.participant_left(after, participant.username, why),
                exclude_session=exclude,
            )
            if why is not LeaveReason.MOVED:
                self._in_call.left(room, participant.username)
            if not kicked:
                # Out in wac, out of the room: even one that left of its own
                # accord (it may have left wac only).
                await self._take_out(after.room, participant)
        for participant in rules.arrived(before, after):
            metrics.CONFERENCE_JOINS.inc()
            self._in_call.joined(room, participant.username)
            await self._events.publish(
                after.members, messages.participant_joined(after, participant.username), exclude_session=exclude
            )

    async def _invited(self, conference: Conference, usernames: Iterable[str]) -> None:
        usernames = tuple(usernames)
        if not usernames:
            return
        name = await self._subscribers.display_name(conference.creator) or conference.creator
        await self._events.publish(usernames, messages.invited(conference, name))

    async def _take_out(self, room: int, participant: Participant) -> None:
        """Its room token taken back, then its feed kicked out of the room."""
        await self._revoke(room, participant.room_token)
        try:
            await self._bridge.kick(room, participant.feed_id)
        except Exception as exc:
            # Out in wac all the same, and its room token lets it in no more.
            log.warning("could not kick %s's feed out of room %s: %s", participant.username, room, exc)

    async def _revoke(self, room: int, token: str) -> None:
        if not token:
            return
        try:
            await self._bridge.revoke(room, token)
        except Exception as exc:
            log.warning("could not take a room token of room %s back: %s", room, exc)

    async def _destroy(self, conference: Conference) -> None:
        try:
            await self._bridge.destroy_room(conference.room)
        except Exception as exc:
            log.warning("conference %s: room %s not destroyed: %s", conference.conference_id, conference.room, exc)

    async def _leave_rooms(self, session_ids: Iterable[str], reason: LeaveReason) -> None:
        """Each of these devices out of every room it is in."""
        for conference_id, username, session_id in await self._store.rooms_of(session_ids):
            await self._leave_room(conference_id, username, session_id, reason)

    async def _leave_room(self, conference_id: str, username: str, session_id: str, reason: LeaveReason) -> None:
        try:
            before, after = await self._store.change(
                conference_id, lambda c: rules.leave(c, username, now=self._clock.time(), session_id=session_id)
            )
            await self._carried_out(before, after, reason)
        except Exception:
            log.exception("conference %s: %s could not be taken out of the room", conference_id, username)

    async def _drop_absent(self, present: Sequence[tuple[str, str, str]]) -> None:
        """After a restart: the participants whose device never came back leave."""
        for conference_id, username, session_id in present:
            if session_id not in await self._devices.online_devices(username):
                await self._leave_room(conference_id, username, session_id, LeaveReason.CONNECTION_LOST)

    async def _sweep_idle(self) -> None:
        """End the conferences whose room stayed empty for the idle timeout."""
        period = min(MAX_SWEEP_PERIOD, self._idle_timeout / 4)
        while True:
            await self._clock.sleep(period)
            try:
                now = self._clock.time()
                for conference_id in await self._store.idle(now - self._idle_timeout):
                    await self._work.run(self._expire(conference_id, now))
            except Exception:
                log.exception("conferences: the idle sweep failed; again in %g s", period)

    async def _expire(self, conference_id: str, now: float) -> None:
        def step(conference: Conference | None) -> Conference:
            return rules.expire(rules.found(conference, conference_id), now, self._idle_timeout)

        before, after = await self._store.change(conference_id, step)
        if after is not before:
            await self._carried_out(before, after, LeaveReason.LEFT)
            log.info("conference %s ended: its room stayed empty for %g s", conference_id, self._idle_timeout)

    # -- checks -------------------------------------------------------
    async def _require_subscribers(self, field: str, requested: Sequence[str], new: Sequence[str]) -> None:
        """Each new invitee must be a subscriber: NOT_FOUND naming its place."""
        for index, username in enumerate(requested):
            if username in new and not await self._subscribers.exists(username):
                raise failures.NotFound(
                    f"{field}[{index}]: subscriber '{username}' does not exist", field=f"{field}[{index}]"
                )

    async def _require_online(self, who: SubscriberPrincipal) -> None:
        """The device must have an open event stream, or it would miss the
        conference's events and could never be found lost."""
        for _ in range(int(ONLINE_WAIT / ONLINE_POLL)):
            if who.session_id in await self._devices.online_devices(who.username):
                return
            await self._clock.sleep(ONLINE_POLL)
        if who.session_id in await self._devices.online_devices(who.username):
            return
        raise failures.FailedPrecondition(
            "this device has no open event stream: subscribe to EventsService before "
            "joining, or it would miss the conference's events"
        )


def _draw_feed_id() -> int:
    return secrets.randbelow(rules.FEED_ID_LIMIT - 1) + 1


def _operates(who: Principal, scope: str) -> bool:
    """Services with the scope, and admin subscribers, act on any conference."""
    if isinstance(who, ServicePrincipal):
        return who.has_scope(scope)
    return "admin" in who.permissions


def _before(position: Any, *, active: bool) -> Any:
    """A page token's position: ([active,] create time, conference id) of
    the previous page's last conference; INVALID_ARGUMENT for anything else."""
    if position is None:
        return None
    if not isinstance(position, list) or len(position) != (3 if active else 2):
        raise paging.invalid_token()
    *head, time, conference_id = position
    if active and not isinstance(head[0], bool):
        raise paging.invalid_token()
    if isinstance(time, bool) or not isinstance(time, int | float) or not isinstance(conference_id, str):
        raise paging.invalid_token()
    return (*head, float(time), conference_id)
