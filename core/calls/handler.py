"""The calls handler: runs each call's machine against the store, the event
log, timers and devices. The rules are in ``machine.py``; this module only
sequences them.

Every input to a call follows the same path, under that call's lock: load
the machine, apply the input, persist the new state, then carry out the
effects (publish events, start or cancel timers) and tell presence when the
call started or stopped being active. Inputs to one call are therefore
applied one at a time, in arrival order: of two racing answers the first
wins and the second gets FAILED_PRECONDITION.

Guarantees:

- A transition, once applied, completes: it runs in its own task, so a
  client that cancels its RPC cannot leave a call persisted but unannounced.
- State lives in the store. The live calls are also kept in memory (this
  core owns them); ended calls are read from the store. A restarted core
  reloads every live call and re-arms its timers from the stored deadlines:
  a deadline that passed while it was down fires at once. A device of a
  restored call that does not reconnect within the device grace period is
  treated as lost.
- The ICE relay counter is written with the call's next state change, not
  per candidate: a restart may let a call relay up to its bound again.
- Writes are group-committed (``writer.py``): a transition still returns
  only once its row is committed.
- Presence hears in-call changes after the call's own events, from a
  background worker, coalesced to each subscriber's latest state
  (``incall.py``, shared with the SIP gateway's calls).
- Calls through the SIP gateway (``gateway.py``) are in the same history;
  HangupCall ends them through the gateway, and the other inputs, which are
  SIP's there, are FAILED_PRECONDITION. Conferences are entries of the
  history too (``history.py``: ListCalls merges them in), never calls.

Access rules (the machine then checks which *device* may act):

- Only the call's parties (caller and callee) may act on it or read it;
  anyone else gets PERMISSION_DENIED "not a participant of this call", and
  so does an unknown call id, so that a call's existence is not leaked.
- Services with ``calls.read`` read any call (NOT_FOUND for an unknown id)
  and list any calls; with ``calls.write`` they end any call as OPERATOR.
- Placing a call needs ``call.audio``; a video call also ``call.video``.
  Receiving one needs nothing.
- The caller's device must have an open event stream (be online, or come
  online within ONLINE_WAIT seconds), or it would miss the call's events and
  could never be detected as lost.
- A subscriber cannot call itself, not even another of its devices: a call's
  parties are told apart by username.
- A caller has at most ``calls.max_calls_per_caller`` live calls placed, and
  at most ``calls.max_ringing_per_callee`` calls ring at one callee; beyond
  them CreateCall is RESOURCE_EXHAUSTED (the rule is the machine's). The
  counts are the cluster's (``core/cluster/call_sets.py``), and a call
  counts from the moment its place is reserved, before the check (before
  its row is written), so concurrent CreateCalls cannot all slip under the
  bound.

In a cluster (``ownership``), each live call is owned by one core, the one
holding its lease ``call:<id>``: the core that created it, or the one that
took it over. Only the owner holds the call in memory, runs its timers and
applies its inputs; the servicer forwards an input that reaches another
core to the owner (``locate``). A call whose owner is gone (its lease
lapsed) is adopted by the first core that gets its lease: at once when an
input for it arrives, otherwise at the next heartbeat of any core, which
looks through the gone nodes' sets of calls (``core/cluster/owners.py``).
The adopter restores the machine from the store, as a restart does, re-arms
its timers from the stored deadlines (a ring timeout that passed fires at
once) and treats the call's devices that are no longer online as lost. A
device lost on another core reaches the owner through its inbox.

No fencing token is written with the call rows: the Keeper stops a call's
work once its lease may lapse before the next renewal, before another core
can take it, so only an owner paused past its lease (a stopped process)
could write once more on waking; guarding against that would cost a column
and a conditional update on every transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from core import checks, failures, metrics, paging
from core.auth.principal import Principal, ServicePrincipal, SubscriberPrincipal
from core.calls import history, ice, messages
from core.calls.gateway import GatewayCalls
from core.calls.history import HistorySource
from core.calls.incall import InCall
from core.calls.machine import (
    CallError,
    CallInfo,
    CallMachine,
    CallState,
    CancelTimer,
    Deliver,
    DescriptionType,
    Effect,
    IceCandidate,
    Media,
    SessionDescription,
    StartTimer,
    TimerKind,
    Via,
    check_sdp,
    is_uri_callee,
)
from core.calls.store import CallStore, CallWrite, StoredCall
from core.calls.writer import GroupWriter
from core.clock import SYSTEM_CLOCK, Clock, Timer
from core.cluster.call_sets import CallSets, LocalCallSets
from core.cluster.devices import DeviceRegistry
from core.cluster.leases import Keeper, Lease, Leases
from core.cluster.owners import CallOwners, Orphan
from core.events.log import EventLog
from core.tasks import Work, cancelled
from settings.config import CallsConfig, IceConfig

log = logging.getLogger("wac.calls")

NOT_PARTICIPANT = "not a participant of this call"
# How long CreateCall waits for the caller's device to come online.
ONLINE_WAIT = 2.0
# In a cluster the device may come online on another core: how often the
# wait looks at the registry meanwhile.
ONLINE_POLL = 0.05
LEASE_PREFIX = "call:"
MAX_CALL_ID = 64
MAX_CALLEE = 256

Step = Callable[[CallMachine, float], list[Effect]]
T = TypeVar("T")


class Subscribers(Protocol):
    """Who exists and what they are called: identity's subscriber read-cache
    (``core/identity/subscribers.py``), which a call set-up reads from memory."""

    async def exists(self, username: str) -> bool: ...

    async def display_name(self, username: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Ownership:
    """What a core of a cluster owns its calls with: the leases, the Keeper
    that renews them (started and closed by the composition root), the
    owners' bookkeeping, and the address the other cores reach it at."""

    leases: Leases
    keeper: Keeper
    owners: CallOwners
    lease_seconds: float
    heartbeat_seconds: float


@dataclass(slots=True)
class _Lock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _CallLocks:
    """One lock per call id, dropped once nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, _Lock] = {}

    @asynccontextmanager
    async def hold(self, call_id: str) -> AsyncIterator[None]:
        entry = self._locks.get(call_id)
        if entry is None:
            entry = self._locks[call_id] = _Lock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[call_id]


class CallHandler:
    """Calls between subscribers; the composition root calls start() and stop()."""

    def __init__(
        self,
        *,
        store: CallStore,
        events: EventLog,
        devices: DeviceRegistry,
        subscribers: Subscribers,
        config: CallsConfig,
        ice_config: IceConfig,
        device_grace: float,
        in_call: InCall | None = None,
        gateway: GatewayCalls | None = None,
        sets: CallSets | None = None,
        ownership: Ownership | None = None,
        history: Sequence[HistorySource] = (),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``device_grace`` is how long a restored call waits for its devices
        to reconnect after a restart (the device registry's grace period).
        ``in_call`` (started and stopped here) tells presence who is in a
        call; ``gateway`` holds the calls through the SIP gateway; ``sets``
        the counts the bounds check and the devices' calls; ``ownership``
        makes this core one of a cluster; ``history`` the entries other
        services add to the call history (conferences); ``clock`` gives the
        time and runs the calls' timers."""
        self._store = store
        self._writer = GroupWriter(store)
        self._events = events
        self._devices = devices
        self._subscribers = subscribers
        self._config = config
        self._ice = ice_config
        self._device_grace = device_grace
        self._in_call = in_call or InCall()
        self._gateway = gateway
        self._history = tuple(history)
        self._clock = clock
        self._locks = _CallLocks()
        self._live: dict[str, CallMachine] = {}
        # The bounds on creation (a call enters the caller's and callee's
        # counts when create() reserves its place, and leaves them when it
        # ends, the callee's also when it is answered), and the live calls
        # of each device (caller or offered).
        self._sets = sets or LocalCallSets()
        self._ownership = ownership
        self._address = ""
        self._heartbeat: asyncio.Task[None] | None = None
        self._timers: dict[tuple[str, TimerKind], Timer] = {}
        self._arrivals: dict[str, asyncio.Event] = {}
        self._work = Work()
        self._reconnect_check: Timer | None = None
        self._stopped = False

    @property
    def live_calls(self) -> int:
        """The calls in progress that this core holds (rings and answered ones)."""
        return len(self._live)

    # -- lifecycle ----------------------------------------------------
    async def start(self) -> None:
        """Reload the live calls and re-arm their timers; listen for lost
        devices. In a cluster, the calls are taken over as their owners go,
        by the heartbeat ``advertise`` starts."""
        self._devices.on_lost(self._device_lost)
        self._devices.on_online(self._device_online)
        self._in_call.start()
        if self._ownership is not None:
            await self._ownership.owners.restart()
            return
        for call_id, snapshot in await self._store.live_snapshots():
            try:
                machine = CallMachine.restore(snapshot)
            except ValueError:
                log.exception("call %s has an unreadable snapshot; it stays as stored", call_id)
                continue
            await self._adopt(machine, counted=False)
            if machine.state is CallState.ACTIVE:
                self._mark_active(machine.info())
            for timer in machine.pending_timers():
                self._arm(call_id, timer.kind, timer.at)
        if self._live:
            log.info("restored %d live call(s)", len(self._live))
            self._reconnect_check = self._clock.call_later(
                self._device_grace, lambda: self._work.spawn(self._drop_absent_devices(tuple(self._live)))
            )

    def live_by_state(self) -> dict[str, int]:
        """Live calls on this core by state, the gateway's included: a metric
        read at scrape time, on the metrics listener's thread (the copy is
        atomic under the GIL)."""
        counts = {} if self._gateway is None else self._gateway.live_by_state()
        for machine in list(self._live.values()):
            state = machine.state.value
            counts[state] = counts.get(state, 0) + 1
        return counts

    def advertise(self, address: str) -> None:
        """In a cluster: the address other cores reach this one's gRPC at
        (known once the server is bound); starts the heartbeat that
        announces it, reads this core's inbox and adopts orphaned calls."""
        if self._ownership is None or self._heartbeat is not None:
            return
        self._address = address
        self._heartbeat = asyncio.create_task(self._beat(self._ownership), name="calls-ownership")

    async def stop(self) -> None:
        """Stop the timers and let transitions in flight finish. In a
        cluster the Keeper's close then releases the calls' leases, and the
        other cores take them over at their next heartbeat."""
        self._stopped = True
        if self._heartbeat is not None:
            await cancelled(self._heartbeat)
        if self._reconnect_check is not None:
            self._reconnect_check.cancel()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self._work.drain()
        await self._writer.close()
        await self._in_call.stop()
        if self._ownership is not None:
            try:
                await self._ownership.owners.leave()
            except Exception:  # its announcement lapses instead
                log.warning("calls: could not leave the cluster's owners", exc_info=True)

    # -- subscriber inputs --------------------------------------------
    async def create(
        self, who: SubscriberPrincipal, *, callee: str, media: Media, offer: SessionDescription
    ) -> CallInfo:
        """Offer a call from the caller's device to the callee's online devices."""
        if not who.has("call.audio"):
            raise failures.PermissionDenied("placing a call needs the call.audio permission")
        if media.video and not who.has("call.video"):
            raise failures.PermissionDenied("a video call needs the call.video permission")
        checks.require("callee", callee)
        checks.max_length("callee", callee, MAX_CALLEE)
        if callee == who.username:
            raise failures.Invalid("callee", "a subscriber cannot call itself")
        if offer.type is not DescriptionType.OFFER:
            raise failures.Invalid("offer.type", "must be OFFER")
        _checked(lambda: check_sdp("offer.sdp", offer.sdp, self._config.max_sdp_bytes))
        to_uri = is_uri_callee(callee)
        online = () if to_uri else tuple(await self._devices.online_devices(callee))
        # Online devices prove the callee exists (deleting a subscriber ends
        # its sessions); only an offline callee costs a lookup.
        if not to_uri and not online and not await self._subscribers.exists(callee):
            raise failures.NotFound(f"subscriber '{callee}' does not exist")
        await self._require_online(who)
        display_name = await self._display_name(who.username)
        callee_busy = await self._in_call.busy_anywhere(callee)
        call_id = secrets.token_urlsafe(16)
        # The place is taken before the rule is checked, in one step with
        # reading the counts: concurrent CreateCalls see each other.
        placed, ringing = await self._sets.reserve(call_id, who.username, callee)
        try:
            machine, effects = self._created(who, call_id, callee, media, offer, online, callee_busy, placed, ringing)
        except BaseException:
            await self._sets.release(call_id, who.username, callee)
            raise
        if machine.state is CallState.ENDED:
            await self._sets.release(call_id, who.username, callee)
        return await self._work.run(self._begin(machine, effects, display_name))

    def _created(
        self,
        who: SubscriberPrincipal,
        call_id: str,
        callee: str,
        media: Media,
        offer: SessionDescription,
        online: tuple[str, ...],
        callee_busy: bool,
        placed: int,
        ringing: int,
    ) -> tuple[CallMachine, list[Effect]]:
        return _checked(
            lambda: CallMachine.create(
                call_id=call_id,
                caller=who.username,
                caller_device=who.session_id,
                callee=callee,
                media=media,
                offer=offer,
                online_devices=online,
                now=self._clock.time(),
                callee_busy=callee_busy,
                busy_on_busy=self._config.busy_on_busy,
                ring_timeout=self._config.ring_timeout,
                max_ice_candidates=self._config.max_candidates,
                max_sdp_bytes=self._config.max_sdp_bytes,
                caller_live_calls=placed,
                callee_ringing_calls=ringing,
                max_calls_per_caller=self._config.max_calls_per_caller,
                max_ringing_per_callee=self._config.max_ringing_per_callee,
            )
        )

    async def answer(self, who: SubscriberPrincipal, call_id: str, answer: SessionDescription) -> CallInfo:
        return await self._act(who, call_id, lambda m, now: m.answer(device=who.session_id, answer=answer, now=now))

    async def reject(self, who: SubscriberPrincipal, call_id: str, *, busy: bool) -> CallInfo:
        return await self._act(who, call_id, lambda m, now: m.reject(device=who.session_id, busy=busy, now=now))

    async def hangup(self, who: Principal, call_id: str) -> CallInfo:
        """A party's hangup, or an operator's (a service with calls.write)."""
        if not isinstance(who, SubscriberPrincipal) and not who.has_scope("calls.write"):
            raise failures.PermissionDenied("ending a call needs the calls.write scope")
        if self._gateway is not None and self._gateway.holds(call_id):
            return await self._gateway.hangup(who, call_id)
        if isinstance(who, SubscriberPrincipal):
            return await self._act(
                who,
                call_id,
                lambda m, now: m.hangup(by_username=who.username, by_device=who.session_id, now=now),
            )
        return await self._act(who, call_id, lambda m, now: m.hangup(by_username=who.key_name, by_device=None, now=now))

    async def ice_candidate(
        self,
        who: SubscriberPrincipal,
        call_id: str,
        candidate: IceCandidate | None,
        end_of_candidates: bool,
    ) -> None:
        await self._act(
            who,
            call_id,
            lambda m, now: m.ice_candidate(
                from_device=who.session_id,
                candidate=candidate,
                end_of_candidates=end_of_candidates,
                now=now,
            ),
            durable=False,
        )

    async def renegotiate(self, who: SubscriberPrincipal, call_id: str, description: SessionDescription) -> CallInfo:
        return await self._act(
            who,
            call_id,
            lambda m, now: m.renegotiate(from_device=who.session_id, description=description, now=now),
        )

    # -- reading ------------------------------------------------------
    async def get(self, who: Principal, call_id: str) -> CallInfo:
        _check_call_id(call_id)
        call = await self._read(call_id)
        if _reads_any(who):
            if call is None:
                raise failures.NotFound(f"call '{call_id}' does not exist")
            return call
        assert isinstance(who, SubscriberPrincipal)
        if call is None or not call.is_party(who.username):
            raise failures.PermissionDenied(NOT_PARTICIPANT)
        return call

    async def list_calls(
        self,
        who: Principal,
        *,
        state: CallState | None,
        subscriber: str,
        page_size: int,
        page_token: str,
    ) -> tuple[list[CallInfo], str]:
        """Calls newest first, and the next page's token ("" on the last page)."""
        size = paging.page_size(page_size)
        if _reads_any(who):
            party = subscriber or None
        else:
            assert isinstance(who, SubscriberPrincipal)
            if subscriber and subscriber != who.username:
                raise failures.PermissionDenied("subscribers may list only their own calls")
            party = who.username
        position = paging.decode_token(page_token)
        before: tuple[float, str] | None = None
        if position is not None:
            if not (
                isinstance(position, list)
                and len(position) == 2
                and isinstance(position[0], int | float)
                and isinstance(position[1], str)
            ):
                raise paging.invalid_token()
            before = (float(position[0]), position[1])
        pages = [await self._store.list_calls(party=party, state=state, before=before, limit=size + 1)]
        for source in self._history:
            pages.append(await source.entries(party=party, state=state, before=before, limit=size + 1))
        calls = history.merged(pages, size + 1)
        if len(calls) <= size:
            return calls, ""
        last = calls[size - 1]
        return calls[:size], paging.encode_token([last.create_time, last.call_id])

    def ice_servers(self, who: SubscriberPrincipal) -> tuple[list[ice.IceServer], int]:
        """STUN and TURN servers for the device, and the credentials' ttl."""
        return ice.ice_servers(self._ice, who.username, self._clock.time())

    # -- the one path of every input ----------------------------------
    async def _act(self, who: Principal, call_id: str, step: Step, *, durable: bool = True) -> CallInfo:
        _check_call_id(call_id)
        return await self._work.run(self._locked_step(who, call_id, step, durable))

    async def _locked_step(self, who: Principal, call_id: str, step: Step, durable: bool) -> CallInfo:
        async with self._locks.hold(call_id):
            machine = self._live.get(call_id)
            call = machine.info() if machine is not None else await self._read(call_id)
            if isinstance(who, SubscriberPrincipal):
                if call is None or not call.is_party(who.username):
                    raise failures.PermissionDenied(NOT_PARTICIPANT)
            elif call is None:
                raise failures.NotFound(f"call '{call_id}' does not exist")
            if machine is None:
                if call.via is Via.SIP and call.state is not CallState.ENDED:
                    raise failures.FailedPrecondition("this call goes through the SIP gateway: its signalling is SIP's")
                if call.state is not CallState.ENDED and self._ownership is not None:
                    # Live, yet held by no core at this instant (its owner
                    # just died, or let it go): adopted within a lease.
                    raise failures.Unavailable("the call is being taken over by a core: retry")
                # Only ended calls are not live: every live call of this core
                # is in memory from its creation or from start().
                raise failures.FailedPrecondition("call has ended")
            return await self._step(machine, step, durable=durable)

    async def _step(
        self, machine: CallMachine, step: Step, *, durable: bool = True, display_name: str = ""
    ) -> CallInfo:
        """Apply one input to a live machine under its lock; persist; carry out."""
        before = machine.snapshot()
        was = machine.state
        effects = _checked(lambda: step(machine, self._clock.time()))
        # The call after the input, read once: the row, the effects and the answer share it.
        call = machine.info()
        if durable:
            after = None if call.state is CallState.ENDED else machine.snapshot()
            if after != before:
                try:
                    await self._writer.write(CallWrite(call, after))
                except BaseException:
                    # Not stored, so not applied: the next input sees the old call.
                    self._live[machine.call_id] = CallMachine.restore(before)
                    raise
        await self._carry_out(call, effects, was, display_name)
        return call

    async def _begin(self, machine: CallMachine, effects: list[Effect], display_name: str) -> CallInfo:
        async with self._locks.hold(machine.call_id):
            call = machine.info()
            live = call.state is not CallState.ENDED
            try:
                if live:
                    # Leased before its row exists: no other core adopts a
                    # call it finds in the store while this one writes it.
                    await self._own(call.call_id)
                await self._writer.write(CallWrite(call, machine.snapshot() if live else None, new=True))
            except BaseException:
                # Not stored, so not placed: it frees its place.
                await self._sets.release(call.call_id, call.caller, call.callee)
                if live:
                    await self._disown(call.call_id)
                raise
            if live:
                await self._adopt(machine, counted=True)
            metrics.CALLS_PLACED.inc()
            await self._carry_out(call, effects, CallState.RINGING, display_name)
            log.debug("call %s %s -> %s: %s", call.call_id, call.caller, call.callee, call.state.value)
            return call

    async def _carry_out(self, call: CallInfo, effects: Iterable[Effect], was: CallState, display_name: str) -> None:
        """Carry out a transition's effects; ``call`` is the call after it."""
        call_id = call.call_id
        for effect in effects:
            if isinstance(effect, Deliver):
                event = messages.event_pb(effect.event, caller_display_name=display_name)
                await self._events.publish_to_sessions(effect.to_devices, event)
            elif isinstance(effect, StartTimer):
                self._arm(call_id, effect.kind, effect.at)
            elif isinstance(effect, CancelTimer):
                self._disarm(call_id, effect.kind)
        if was is CallState.RINGING and call.state is CallState.ACTIVE:
            metrics.CALL_SETUPS.inc()
            if call.answer_time is not None:
                metrics.CALL_SETUP_DURATION.observe(max(0.0, call.answer_time - call.create_time))
            await self._sets.answered(call_id, call.callee)
        if was is not CallState.ACTIVE and call.state is CallState.ACTIVE:
            self._mark_active(call)
        if call.state is CallState.ENDED:
            metrics.CALL_ENDINGS_BY(call.end_reason.value if call.end_reason else "UNKNOWN").inc()
            await self._forget(call)
            log.debug("call %s ended %s by %s", call_id, call.end_reason, call.ended_by)
            if was is CallState.ACTIVE:
                self._in_call.remove(call_id, call.caller, call.callee)

    # -- bookkeeping --------------------------------------------------
    async def _adopt(self, machine: CallMachine, *, counted: bool) -> None:
        """Hold a live call in memory; ``counted``: create() reserved its
        place already (a restored or adopted call takes it again)."""
        call = machine.info()
        self._live[call.call_id] = machine
        if not counted:
            await self._sets.reserve(call.call_id, call.caller, call.callee)
            if call.state is not CallState.RINGING:
                await self._sets.answered(call.call_id, call.callee)
        await self._sets.attach(call.call_id, (call.caller_device, *call.offered_devices))

    async def _forget(self, call: CallInfo) -> None:
        self._live.pop(call.call_id, None)
        for kind in TimerKind:
            self._disarm(call.call_id, kind)
        await self._sets.release(call.call_id, call.caller, call.callee)
        await self._sets.detach(call.call_id, (call.caller_device, *call.offered_devices))
        await self._disown(call.call_id)

    def _mark_active(self, call: CallInfo) -> None:
        self._in_call.add(call.call_id, call.caller, call.callee)

    async def _require_online(self, who: SubscriberPrincipal) -> None:
        """The caller's device must be online; a Subscribe sent just before
        CreateCall may reach the registry just after it, so wait a moment."""
        if who.session_id in await self._devices.online_devices(who.username):
            return
        arrived = self._arrivals.setdefault(who.session_id, asyncio.Event())
        arrival = asyncio.ensure_future(arrived.wait())
        give_up = self._clock.call_later(ONLINE_WAIT, arrival.cancel)
        # In a cluster the device may open its stream on another core,
        # whose registry tells only that core.
        watch = None if self._ownership is None else asyncio.ensure_future(self._watch_online(who, arrived))
        try:
            await asyncio.wait({arrival})
        finally:
            give_up.cancel()
            arrival.cancel()
            if watch is not None:
                watch.cancel()
                if self._arrivals.get(who.session_id) is arrived and arrived.is_set():
                    del self._arrivals[who.session_id]
        if arrival.cancelled():
            self._arrivals.pop(who.session_id, None)
            raise failures.FailedPrecondition(
                "this device has no open event stream: subscribe to EventsService before "
                "placing a call, or it would miss the call's events"
            )

    async def _watch_online(self, who: SubscriberPrincipal, arrived: asyncio.Event) -> None:
        while not arrived.is_set():
            await self._clock.sleep(ONLINE_POLL)
            if who.session_id in await self._devices.online_devices(who.username):
                arrived.set()

    async def _device_online(self, username: str, session_id: str) -> None:
        arrived = self._arrivals.pop(session_id, None)
        if arrived is not None:
            arrived.set()

    async def _display_name(self, username: str) -> str:
        """The caller's display name for invites (a renamed caller's new
        name within the subscriber cache's staleness bound)."""
        return await self._subscribers.display_name(username) or username

    async def _read(self, call_id: str) -> CallInfo | None:
        machine = self._live.get(call_id)
        if machine is not None:
            return machine.info()
        stored = await self._store.get(call_id)
        return stored.call if stored is not None else None

    # -- timers and devices -------------------------------------------
    def _arm(self, call_id: str, kind: TimerKind, at: float) -> None:
        self._disarm(call_id, kind)
        if self._stopped:
            return
        delay = max(0.0, at - self._clock.time())
        self._timers[(call_id, kind)] = self._clock.call_later(delay, self._timer_due, call_id, kind)

    def _disarm(self, call_id: str, kind: TimerKind) -> None:
        handle = self._timers.pop((call_id, kind), None)
        if handle is not None:
            handle.cancel()

    def _timer_due(self, call_id: str, kind: TimerKind) -> None:
        self._timers.pop((call_id, kind), None)
        self._work.spawn(self._internal(call_id, lambda m, now: m.timer_fired(kind, now=now)))

    async def _device_lost(self, username: str, session_id: str) -> None:
        for call_id in await self._sets.calls_of(session_id):
            await self._lost_input(call_id, session_id)

    async def _lost_input(self, call_id: str, device: str) -> None:
        """Apply a lost device to its call here, or send it to the call's owner."""
        if self._ownership is not None and call_id not in self._live:
            try:
                owner = await self._owner_elsewhere(call_id)
            except failures.Unavailable:
                owner = None  # being taken over: the adopter checks its devices
            if owner is not None:
                await self._ownership.owners.send(owner, call_id, device)
                return
        await self._work.run(self._internal(call_id, _lost(device)))

    async def _drop_absent_devices(self, call_ids: tuple[str, ...]) -> None:
        """After a restart: the devices of restored calls that never came back are lost."""
        for call_id in call_ids:
            machine = self._live.get(call_id)
            if machine is None:
                continue
            call = machine.info()
            devices = [(call.caller, call.caller_device)]
            devices += [(call.callee, d) for d in machine.ringing_devices]
            if call.callee_device:
                devices.append((call.callee, call.callee_device))
            for username, device in devices:
                if device not in await self._devices.online_devices(username):
                    await self._internal(call_id, _lost(device))

    async def _internal(self, call_id: str, step: Step) -> None:
        """An input from wac itself (timer, lost device): no caller to answer."""
        if self._stopped:
            return
        async with self._locks.hold(call_id):
            machine = self._live.get(call_id)
            if machine is None:
                return
            try:
                await self._step(machine, step)
            except Exception:
                log.exception("call %s: internal input failed", call_id)

    # -- ownership in a cluster ---------------------------------------
    async def locate(self, call_id: str, *, forwarded: bool) -> str | None:
        """The node that owns the call, when it is another live core (the
        input goes there); None when this core applies it, after adopting
        the call if its owner is gone. ``forwarded``: the input comes from
        another core, which found this one the owner."""
        if self._ownership is None:
            return None
        _check_call_id(call_id)
        if call_id in self._live or (self._gateway is not None and self._gateway.holds(call_id)):
            return None
        owner = await self._owner_elsewhere(call_id)
        if owner is not None and forwarded:
            raise failures.Unavailable("the call moved to another core meanwhile: retry")
        return owner

    def lease_lost(self, lease: Lease) -> None:
        """The Keeper lost a call's lease: another core may own the call
        now, so this one lets it go (its state stays in the store)."""
        self._work.spawn(self._let_go(lease.name.removeprefix(LEASE_PREFIX)))

    async def _own(self, call_id: str) -> None:
        if self._ownership is None:
            return
        if await self._ownership.keeper.acquire(LEASE_PREFIX + call_id, self._ownership.lease_seconds) is None:
            raise failures.Aborted(f"call '{call_id}' is held by another core")
        await self._ownership.owners.claim(call_id)

    async def _disown(self, call_id: str) -> None:
        if self._ownership is None:
            return
        await self._ownership.keeper.release(LEASE_PREFIX + call_id)
        await self._ownership.owners.disown(call_id)

    async def _owner_elsewhere(self, call_id: str) -> str | None:
        """The other core owning a call this one does not hold, after
        trying to take it over if none does."""
        own = self._ownership
        assert own is not None
        name = LEASE_PREFIX + call_id
        owner = await own.leases.owner(name)
        if owner is None:
            owner = await self._take_over(call_id, None)
        elif owner == own.owners.node and own.keeper.held(name) is None:
            # Held under this node's id but not by this process: its
            # previous run's, killed and restarted under the same id. The
            # call is adopted once that lease lapses (the orphan search).
            raise failures.Unavailable("the call is being taken over by a core: retry")
        return None if owner is None or owner == own.owners.node else owner

    async def _take_over(self, call_id: str, orphan: Orphan | None) -> str | None:
        """Adopt a call with no owner: None once this core holds it (or
        there is nothing live to hold), else the node that owns it."""
        own = self._ownership
        assert own is not None
        name = LEASE_PREFIX + call_id
        async with self._locks.hold(call_id):
            if call_id in self._live:
                return None
            if await own.keeper.acquire(name, own.lease_seconds) is None:
                owner = await own.leases.owner(name)
                if owner is None or owner == own.owners.node:
                    # Lapsing as we look, or a lease of this node's previous run.
                    raise failures.Unavailable("the call is being taken over by a core: retry")
                if orphan is not None and orphan.node not in (None, owner):
                    await own.owners.forget(orphan)  # adopted elsewhere meanwhile
                return owner
            try:
                machine = _restorable(await self._store.get(call_id))
                if machine is None:
                    await own.keeper.release(name)
                    if orphan is not None:
                        await own.owners.forget(orphan)
                    return None
                await own.owners.claim(call_id, None if orphan is None else orphan.node)
                await self._adopt(machine, counted=False)
            except BaseException:
                # Not held here after all: the lease must not outlive it.
                self._live.pop(call_id, None)
                await own.keeper.release(name)
                raise
            if machine.state is CallState.ACTIVE:
                self._mark_active(machine.info())
            for timer in machine.pending_timers():
                self._arm(call_id, timer.kind, timer.at)
            log.info("call %s taken over%s", call_id, f" from node {orphan.node}" if orphan and orphan.node else "")
        # The devices' state is the cluster's: those gone with the old owner are lost now.
        self._work.spawn(self._drop_absent_devices((call_id,)))
        return None

    async def _let_go(self, call_id: str) -> None:
        own = self._ownership
        assert own is not None
        async with self._locks.hold(call_id):
            machine = self._live.pop(call_id, None)
            if machine is None:
                return
            for kind in TimerKind:
                self._disarm(call_id, kind)
            call = machine.info()
            # Still in the call, on whichever core adopts it.
            self._in_call.forget(call_id, call.caller, call.callee)
            log.warning("call %s: its lease was lost; another core takes it over", call_id)
            try:
                await own.owners.disown(call_id, orphaned=True)
            except Exception:
                log.warning("call %s: could not mark it orphaned", call_id, exc_info=True)

    async def _beat(self, own: Ownership) -> None:
        """Every heartbeat: announce this core, apply the inputs other cores
        sent its calls, adopt the calls whose owner is gone."""
        # Checked as well as cancelled: on Python 3.11 asyncio.wait_for (under
        # the Redis client's commands) can swallow a cancellation.
        while not self._stopped:
            try:
                await own.owners.announce(self._address, own.lease_seconds)
                for call_id, device in await own.owners.inbox():
                    await self._lost_input(call_id, device)
                for orphan in await own.owners.orphans():
                    if self._stopped:
                        return
                    # Unavailable: its lease has not lapsed yet; the next heartbeat.
                    with contextlib.suppress(failures.Unavailable):
                        await self._take_over(orphan.call_id, orphan)
            except Exception:
                log.warning("calls: the ownership heartbeat failed; retrying", exc_info=True)
            await self._clock.sleep(own.heartbeat_seconds)


def _restorable(stored: StoredCall | None) -> CallMachine | None:
    """The machine of a stored call that is live on the call machine's path."""
    if stored is None or stored.snapshot is None or stored.call.via is not Via.WAPI:
        return None
    if stored.call.state is CallState.ENDED:
        return None
    try:
        return CallMachine.restore(stored.snapshot)
    except ValueError:
        log.exception("call %s has an unreadable snapshot; it stays as stored", stored.call.call_id)
        return None


def _lost(device: str) -> Step:
    return lambda machine, now: machine.device_lost(device, now=now)


def _checked(work: Callable[[], T]) -> T:
    """Run a machine call, turning a refused input into the API's error."""
    try:
        return work()
    except CallError as exc:
        raise messages.failure(exc) from None


def _check_call_id(call_id: str) -> None:
    checks.require("call_id", call_id)
    checks.max_length("call_id", call_id, MAX_CALL_ID)


def _reads_any(who: Principal) -> bool:
    """Services with calls.read, and admin subscribers, read every call."""
    if isinstance(who, ServicePrincipal):
        return who.has_scope("calls.read")
    return "admin" in who.permissions
