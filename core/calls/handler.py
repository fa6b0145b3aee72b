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
  SIP's there, are FAILED_PRECONDITION.

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
  counts are this core's live calls, and a call counts from the moment it
  passes the check (before its row is written), so concurrent CreateCalls
  cannot all slip under the bound.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from core import checks, failures, paging
from core.auth.principal import Principal, ServicePrincipal, SubscriberPrincipal
from core.calls import ice, messages
from core.calls.gateway import GatewayCalls
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
from core.calls.store import CallStore, CallWrite
from core.calls.writer import GroupWriter
from core.clock import SYSTEM_CLOCK, Clock, Timer
from core.cluster.devices import DeviceRegistry
from core.events.log import EventLog
from settings.config import CallsConfig, IceConfig

log = logging.getLogger("wac.calls")

NOT_PARTICIPANT = "not a participant of this call"
# How long CreateCall waits for the caller's device to come online.
ONLINE_WAIT = 2.0
MAX_CALL_ID = 64
MAX_CALLEE = 256

Step = Callable[[CallMachine, float], list[Effect]]
T = TypeVar("T")


class Subscribers(Protocol):
    """Who exists and what they are called: identity's subscriber read-cache
    (``core/identity/subscribers.py``), which a call set-up reads from memory."""

    async def exists(self, username: str) -> bool: ...

    async def display_name(self, username: str) -> str | None: ...


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
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``device_grace`` is how long a restored call waits for its devices
        to reconnect after a restart (the device registry's grace period).
        ``in_call`` (started and stopped here) tells presence who is in a
        call; ``gateway`` holds the calls through the SIP gateway; ``clock``
        gives the time and runs the calls' timers."""
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
        self._clock = clock
        self._locks = _CallLocks()
        self._live: dict[str, CallMachine] = {}
        # session id -> live calls it takes part in (caller or offered device)
        self._by_device: dict[str, set[str]] = {}
        # The bounds on creation: caller -> its live calls placed, callee ->
        # the calls ringing at it. A call enters both when it passes the
        # check in create(), and leaves them when it ends (the callee's also
        # when it is answered).
        self._placed: dict[str, set[str]] = {}
        self._ringing_at: dict[str, set[str]] = {}
        self._timers: dict[tuple[str, TimerKind], Timer] = {}
        self._arrivals: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconnect_check: Timer | None = None
        self._stopped = False

    # -- lifecycle ----------------------------------------------------
    async def start(self) -> None:
        """Reload the live calls and re-arm their timers; listen for lost devices."""
        self._devices.on_lost(self._device_lost)
        self._devices.on_online(self._device_online)
        self._in_call.start()
        for call_id, snapshot in await self._store.live_snapshots():
            try:
                machine = CallMachine.restore(snapshot)
            except ValueError:
                log.exception("call %s has an unreadable snapshot; it stays as stored", call_id)
                continue
            self._adopt(machine)
            if machine.state is CallState.ACTIVE:
                self._mark_active(machine.info())
            for timer in machine.pending_timers():
                self._arm(call_id, timer.kind, timer.at)
        if self._live:
            log.info("restored %d live call(s)", len(self._live))
            self._reconnect_check = self._clock.call_later(
                self._device_grace, lambda: self._spawn(self._drop_absent_devices(tuple(self._live)))
            )

    async def stop(self) -> None:
        """Stop the timers and let transitions in flight finish."""
        self._stopped = True
        if self._reconnect_check is not None:
            self._reconnect_check.cancel()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._writer.close()
        await self._in_call.stop()

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
        # From reading the counts to reserving the call in them there is no
        # await: no other CreateCall can run in between.
        machine, effects = _checked(
            lambda: CallMachine.create(
                call_id=secrets.token_urlsafe(16),
                caller=who.username,
                caller_device=who.session_id,
                callee=callee,
                media=media,
                offer=offer,
                online_devices=online,
                now=self._clock.time(),
                callee_busy=self._in_call.busy(callee),
                busy_on_busy=self._config.busy_on_busy,
                ring_timeout=self._config.ring_timeout,
                max_ice_candidates=self._config.max_candidates,
                max_sdp_bytes=self._config.max_sdp_bytes,
                caller_live_calls=len(self._placed.get(who.username, ())),
                callee_ringing_calls=len(self._ringing_at.get(callee, ())),
                max_calls_per_caller=self._config.max_calls_per_caller,
                max_ringing_per_callee=self._config.max_ringing_per_callee,
            )
        )
        if machine.state is not CallState.ENDED:
            self._count(machine.info())
        return await self._run(self._begin(machine, effects, display_name))

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
        calls = await self._store.list_calls(party=party, state=state, before=before, limit=size + 1)
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
        return await self._run(self._locked_step(who, call_id, step, durable))

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
        if durable and machine.snapshot() != before:
            try:
                await self._persist(machine)
            except BaseException:
                # Not stored, so not applied: the next input sees the old call.
                self._live[machine.call_id] = CallMachine.restore(before)
                raise
        await self._carry_out(machine, effects, was, display_name)
        return machine.info()

    async def _begin(self, machine: CallMachine, effects: list[Effect], display_name: str) -> CallInfo:
        async with self._locks.hold(machine.call_id):
            call = machine.info()
            live = call.state is not CallState.ENDED
            try:
                await self._writer.write(CallWrite(call, machine.snapshot() if live else None, new=True))
            except BaseException:
                self._uncount(call)  # not stored, so not placed: it frees its place
                raise
            if live:
                self._adopt(machine)
            await self._carry_out(machine, effects, CallState.RINGING, display_name)
            log.debug("call %s %s -> %s: %s", call.call_id, call.caller, call.callee, call.state.value)
            return call

    async def _persist(self, machine: CallMachine) -> None:
        ended = machine.state is CallState.ENDED
        await self._writer.write(CallWrite(machine.info(), None if ended else machine.snapshot()))

    async def _carry_out(
        self, machine: CallMachine, effects: Iterable[Effect], was: CallState, display_name: str
    ) -> None:
        call_id = machine.call_id
        for effect in effects:
            if isinstance(effect, Deliver):
                event = messages.event_pb(effect.event, caller_display_name=display_name)
                await self._events.publish_to_sessions(effect.to_devices, event)
            elif isinstance(effect, StartTimer):
                self._arm(call_id, effect.kind, effect.at)
            elif isinstance(effect, CancelTimer):
                self._disarm(call_id, effect.kind)
        call = machine.info()
        if was is CallState.RINGING and call.state is not CallState.RINGING:
            _discard(self._ringing_at, call.callee, call_id)
        if was is not CallState.ACTIVE and call.state is CallState.ACTIVE:
            self._mark_active(call)
        if call.state is CallState.ENDED:
            self._forget(machine)
            log.debug("call %s ended %s by %s", call_id, call.end_reason, call.ended_by)
            if was is CallState.ACTIVE:
                self._in_call.remove(call_id, call.caller, call.callee)

    # -- bookkeeping --------------------------------------------------
    def _adopt(self, machine: CallMachine) -> None:
        call = machine.info()
        self._live[call.call_id] = machine
        self._count(call)
        for device in (call.caller_device, *call.offered_devices):
            self._by_device.setdefault(device, set()).add(call.call_id)

    def _count(self, call: CallInfo) -> None:
        """A live call in the bounds' counts (idempotent)."""
        self._placed.setdefault(call.caller, set()).add(call.call_id)
        if call.state is CallState.RINGING:
            self._ringing_at.setdefault(call.callee, set()).add(call.call_id)

    def _uncount(self, call: CallInfo) -> None:
        _discard(self._placed, call.caller, call.call_id)
        _discard(self._ringing_at, call.callee, call.call_id)

    def _forget(self, machine: CallMachine) -> None:
        call = machine.info()
        self._live.pop(call.call_id, None)
        self._uncount(call)
        for kind in TimerKind:
            self._disarm(call.call_id, kind)
        for device in (call.caller_device, *call.offered_devices):
            calls = self._by_device.get(device)
            if calls is not None:
                calls.discard(call.call_id)
                if not calls:
                    del self._by_device[device]

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
        try:
            await asyncio.wait({arrival})
        finally:
            give_up.cancel()
            arrival.cancel()
        if arrival.cancelled():
            self._arrivals.pop(who.session_id, None)
            raise failures.FailedPrecondition(
                "this device has no open event stream: subscribe to EventsService before "
                "placing a call, or it would miss the call's events"
            )

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
        self._spawn(self._internal(call_id, lambda m, now: m.timer_fired(kind, now=now)))

    async def _device_lost(self, username: str, session_id: str) -> None:
        for call_id in tuple(self._by_device.get(session_id, ())):
            await self._run(self._internal(call_id, _lost(session_id)))

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

    # -- tasks --------------------------------------------------------
    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # Retrieved here so that a refusal nobody awaited any more (its RPC
        # was cancelled) is not reported as an unhandled task error.
        if not task.cancelled():
            task.exception()

    async def _run(self, work: Coroutine[Any, Any, T]) -> T:
        # Shielded: the transition completes even if the RPC is cancelled.
        return await asyncio.shield(self._spawn(work))


def _discard(index: dict[str, set[str]], key: str, call_id: str) -> None:
    calls = index.get(key)
    if calls is not None:
        calls.discard(call_id)
        if not calls:
            del index[key]


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
