"""The cluster's event log, on Redis: every core appends to and reads from
the same per-session logs, with the contract of the embedded one
(``memory.py``).

Keys (one Redis, not Redis Cluster: a publish touches the keys of many
sessions, named inside its script):

- ``wac:ev:<session>``, a stream: the session's log. Entry ids are
  ``<seq>-0``, so a resume reads ``XRANGE (<after_seq>-0 +`` directly;
  fields ``e``, the serialized Event without seq and time, and ``t``, the
  appending node's ``Clock.time`` (a fake clock in tests).
- ``wac:evmeta:<session>``, a hash: ``user``, ``open`` (1/0), ``next``
  (the next seq).
- ``wac:evuser:<username>``, a set: the user's open sessions (routing).
- ``wac:evroute:<session>``, a sorted set: the nodes with readers waiting
  on the session, each told of its new events, scored by when that ends
  unless one of its readers waits again (a retention window after its last
  wait), so a node that stopped reading drops out on its own.
- ``wac:inbox:<node>``, a stream: the notices of one node (session, seq,
  time and the event itself), bounded in length, gone a retention window
  after its last notice (a node that left).

Appending (a publish, a close with its final event) is one Lua script per
call: for each target session it takes the next seq, XADDs with an exact
MAXLEN of ``max_events`` and XADDs a notice to the inbox of each node
reading the session; a read drops the entries older than ``retention``. Every key is
PEXPIREd ``retention`` after its last write or read, so an abandoned
session costs nothing after the window (the embedded log's sweep, done by
Redis: ``sweep()`` has nothing to do). Unlike the embedded log, which drops
a log nobody read for the window even while events arrive, a log written
to lives on, bounded by count and time all the same. Times, and the
retention of entries and routes, are the nodes' ``Clock``; key expiry is
Redis's.

Fan-in: a node reads its inbox with ONE task doing ``XREAD BLOCK``,
however many sessions it serves, and hands each notice's event to the local
waiters of its session, which return it without another round trip, and to
its listeners (``listen``), which take it there and then, each checking
that it follows the last it took (a gap ends the listener, which reads). A
waiter registers before its read (the same script that routes the
session's notices to this node), so a notice arriving between the read and
the wait is kept. The node also keeps, per session it follows, the last seq
it was told of and the last few events: a reader's next wait then needs no
read at all while the route it set is surely alive (half a retention
window). With the append script's few commands per session, that took a
publish + wait round trip between two nodes from about 1.2 ms to 0.5 ms on
the machine that measured it. A gap in the seqs handed (a notice trimmed from an inbox that fell
behind), a close, a wait's timeout, a lost inbox connection (notices may be
lost with it) or ``stop()`` sends the readers back to their streams.

Seqs are never reused across a data loss: a session's log created when its
meta is unknown starts at the Redis server's time in microseconds (about
1.8e15, exact in a JavaScript number), above any seq a previous
incarnation of it issued (that would take a million events a second), so a
reader resuming from a seq of the lost incarnation gets EventsExpired (the
seq is below the first kept or was never issued), never a later event under
its old number. Redis's own clock, not the nodes': one clock for every
core, which a restarted Redis keeps.

Redis failing (refused, timed out) is ``failures.Unavailable``: the call
fails at once with UNAVAILABLE instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis.asyncio as redis
from redis.exceptions import OutOfMemoryError, ReadOnlyError

from core import failures, metrics
from core.clock import SYSTEM_CLOCK, Clock, Timer
from core.events.log import EventsExpired, Listener
from wac.v1 import events_pb2

log = logging.getLogger("wac.events")

# An inbox longer than this loses its oldest notices: a reader that far
# behind re-reads its streams (a waiter handed a gap does).
INBOX_MAX = 10_000
# Notices taken per XREAD.
INBOX_BATCH = 1_000
# How long one XREAD blocks: well below the client's reply timeout
# (core/cluster/redis_client.py, 2 s), which would otherwise cut it, with
# room for a Redis busy with a long script.
INBOX_BLOCK_MS = 500
# Usernames or sessions per append script (about 10 ms of Redis's time).
PUBLISH_CHUNK = 256
# Events of each followed session kept here for a reader's next wait.
FOLLOW_RECENT = 64
# Pause before reading the inbox again after Redis failed.
RETRY_SECONDS = 0.5

# Shared by the scripts. The seq is a Lua number (a double): written with
# %.0f, exact below 2^53, where tostring would write 1.8e+15.
_PRELUDE = """
local function int(n) return string.format('%.0f', n) end
local function stream_key(s) return 'wac:ev:' .. s end
local function meta_key(s) return 'wac:evmeta:' .. s end
local function route_key(s) return 'wac:evroute:' .. s end
local function user_key(u) return 'wac:evuser:' .. u end
-- Drop the entries appended before horizon (their time field).
local function prune(key, horizon)
  while true do
    local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 64)
    if #head == 0 then return end
    local keep = nil
    for _, entry in ipairs(head) do
      local fields = entry[2]
      local t
      for i = 1, #fields, 2 do
        if fields[i] == 't' then t = tonumber(fields[i + 1]) end
      end
      if t >= horizon then keep = entry[1] break end
    end
    if keep then
      redis.call('XTRIM', key, 'MINID', keep)
      return
    end
    local last = head[#head][1]
    redis.call('XTRIM', key, 'MINID', int(tonumber(string.match(last, '^(%d+)')) + 1))
    if #head < 64 then return end
  end
end
local function touch(s, user, ttl)
  redis.call('PEXPIRE', stream_key(s), ttl)
  redis.call('PEXPIRE', meta_key(s), ttl)
  if user then redis.call('PEXPIRE', user_key(user), ttl) end
end
"""

# ARGV: now, retention ms, max events, payload, mode ("users", "sessions",
# "close" after appending the payload, "end" closing with none), exclude
# session, then the usernames or session ids. Returns the number of events
# appended.
_APPEND = (
    _PRELUDE
    + """
local now, ttl, max_events = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local payload, mode, exclude = ARGV[4], ARGV[5], ARGV[6]
local appended = 0
local inboxes = {}
-- As few commands per session as can be: a publish to thousands of
-- sessions holds Redis for all of them. Entries past the retention window
-- are dropped by reads, as the embedded log does.
local function append(s)
  local seq = redis.call('HINCRBY', meta_key(s), 'next', 1) - 1
  local key = stream_key(s)
  redis.call('XADD', key, 'MAXLEN', max_events, int(seq) .. '-0', 'e', payload, 't', ARGV[1])
  redis.call('PEXPIRE', key, ttl)
  redis.call('PEXPIRE', meta_key(s), ttl)
  appended = appended + 1
  return seq
end
local function notify(s, seq, body, closed)
  -- The nodes whose route has not lapsed (a read drops those that have).
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', route_key(s), ARGV[1], '+inf')) do
    local inbox = 'wac:inbox:' .. node
    redis.call('XADD', inbox, 'MAXLEN', '~', '"""
    + str(INBOX_MAX)
    + """', '*', 's', s, 'q', int(seq), 'e', body, 't', ARGV[1], 'c', closed)
    inboxes[inbox] = true
  end
end
if mode == 'users' then
  for i = 7, #ARGV do
    local user = ARGV[i]
    local sessions = redis.call('SMEMBERS', user_key(user))
    if #sessions > 0 then redis.call('PEXPIRE', user_key(user), ttl) end
    for _, s in ipairs(sessions) do
      if redis.call('HGET', meta_key(s), 'open') == '1' then
        if s ~= exclude then notify(s, append(s), payload, '0') end
      else
        -- Its meta expired or it was closed: no longer routed.
        redis.call('SREM', user_key(user), s)
      end
    end
  end
else
  for i = 7, #ARGV do
    local s = ARGV[i]
    local meta = redis.call('HMGET', meta_key(s), 'user', 'open')
    if meta[2] == '1' then
      redis.call('PEXPIRE', user_key(meta[1]), ttl)
      if mode == 'close' or mode == 'end' then
        local seq = 0
        if mode == 'close' then seq = append(s) end
        redis.call('HSET', meta_key(s), 'open', '0')
        redis.call('SREM', user_key(meta[1]), s)
        -- Closed ('1'): the readers read the stream again and see it.
        notify(s, seq, payload, '1')
      else
        notify(s, append(s), payload, '0')
      end
    end
  end
end
for inbox in pairs(inboxes) do redis.call('PEXPIRE', inbox, ttl) end
return appended
"""
)

# KEYS: none. ARGV: session, username, retention ms.
_OPEN = (
    _PRELUDE
    + """
local s, user, ttl = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', meta_key(s)) == 0 then
  local now = redis.call('TIME')
  local first = now[1] .. string.format('%06d', tonumber(now[2]))
  redis.call('HSET', meta_key(s), 'user', user, 'open', '1', 'next', first)
  redis.call('SADD', user_key(user), s)
end
touch(s, redis.call('HGET', meta_key(s), 'user'), ttl)
return 1
"""
)

# ARGV: session, after seq, limit, now, retention ms, route node ("" for a
# plain read). Returns {0, open, entries, last seq issued} or {1, reason}.
_READ = (
    _PRELUDE
    + """
local s, after, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now, ttl, node = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
if node ~= '' then
  redis.call('ZREMRANGEBYSCORE', route_key(s), '-inf', '(' .. ARGV[4])
  redis.call('ZADD', route_key(s), now + ttl / 1000, node)
  redis.call('PEXPIRE', route_key(s), ttl)
end
local meta = redis.call('HMGET', meta_key(s), 'user', 'open', 'next')
if not meta[3] then
  if after > 0 then
    return {1, 'no events are kept for this session after seq ' .. int(after)}
  end
  return {0, 0, {}, 0}
end
local next_seq = tonumber(meta[3])
touch(s, meta[1], ttl)
local key = stream_key(s)
prune(key, now - ttl / 1000)
if after >= next_seq then
  return {1, 'seq ' .. int(after) .. ' was never issued to this session (last is ' .. int(next_seq - 1) .. ')'}
end
local first = next_seq
local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end
if after ~= 0 and after + 1 < first then
  return {1, 'events after seq ' .. int(after) .. ' are no longer kept (oldest kept is ' .. int(first) .. ')'}
end
local open = 0
if meta[2] == '1' then open = 1 end
local entries = redis.call('XRANGE', key, '(' .. int(after) .. '-0', '+', 'COUNT', limit)
return {0, open, entries, next_seq - 1}
"""
)

T = TypeVar("T")
# A stream's entries as redis-py parses them: (id, fields).
_Entries = list[tuple[bytes, dict[bytes, bytes]]]


# A handed event: (seq, time, the event without seq and time).
_Handed = tuple[int, float, events_pb2.Event]


@dataclass(slots=True)
class _Follow:
    """What this node knows of a session it reads, so that a reader's next
    wait needs no read of its stream: every event up to ``known`` was read
    or handed here, and the session's route names this node since
    ``routed_at`` (for a retention window; trusted for half of it)."""

    known: int
    routed_at: float
    recent: deque[_Handed]
    closed: bool = False

    def take(self, seq: int, when: float, shared: events_pb2.Event) -> bool:
        """Keep a handed event; False on a gap (a notice lost)."""
        if seq <= self.known:
            return True
        if seq > self.known + 1:
            return False
        self.known = seq
        self.recent.append((seq, when, shared))
        return True

    def since(self, after_seq: int, limit: int, horizon: float) -> list[events_pb2.Event] | None:
        """The events after ``after_seq`` (none: wait for the next), or
        None when they are not all here."""
        if after_seq == self.known:
            return []
        if not self.recent or self.recent[0][0] > after_seq + 1:
            return None
        kept = [handed for handed in self.recent if handed[0] > after_seq]
        if kept[0][1] < horizon:
            return None  # past the retention window: the read says so
        return _following(kept, after_seq, limit)


@dataclass(slots=True)
class _Waiter:
    # A bare future with a timer handle is much cheaper than
    # asyncio.wait_for, which makes a task per wake-up; with thousands of
    # idle streams that is most of the cost.
    future: asyncio.Future[None]
    # Handed by the inbox reader.
    handed: list[_Handed] = field(default_factory=list)


class _Listening:
    """A listener of a session this node follows (``EventLog.listen``),
    handed its events by the inbox reader."""

    __slots__ = ("_by_session", "_session_id", "_timer", "ended", "last", "listener")

    def __init__(self, by_session: dict[str, list[_Listening]], session_id: str, listener: Listener, last: int) -> None:
        self._by_session: dict[str, list[_Listening]] | None = by_session
        self._session_id = session_id
        self._timer: Timer | None = None
        self.listener = listener
        self.last = last
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def hand(self, seq: int, shared: events_pb2.Event) -> None:
        if seq <= self.last:
            return  # read already
        if seq == self.last + 1 and self.listener(seq, shared):
            self.last = seq
        else:
            self.end()  # a gap (a notice lost), or refused: read from last

    def end(self) -> None:
        _wake(self.ended)
        self.cancel()

    def cancel(self) -> None:
        by_session, self._by_session = self._by_session, None
        if by_session is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        listeners = by_session.get(self._session_id, [])
        if self in listeners:
            listeners.remove(self)
            if not listeners:
                del by_session[self._session_id]


class RedisEventLog:
    """The event log of node ``node`` on the Redis of ``client``
    (core/cluster/redis_client.py), every node of the cluster on the same
    one. ``start()`` before waiting: the inbox reader wakes the waiters."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        node: str,
        retention: float = 120.0,
        max_events: int = 10_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._redis = client
        self.node = node
        self._inbox = f"wac:inbox:{node}"
        self._retention = retention
        self._ttl_ms = max(1, round(retention * 1000))
        self._max_events = max_events
        self._clock = clock
        self._waiters: dict[str, list[_Waiter]] = {}
        self._listeners: dict[str, list[_Listening]] = {}
        self._follows: dict[str, _Follow] = {}
        self._recent = min(FOLLOW_RECENT, max_events)
        self._forgotten_at = clock.time()
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False
        self._append = client.register_script(_APPEND)
        self._open = client.register_script(_OPEN)
        self._read = client.register_script(_READ)

    async def start(self) -> None:
        """Start this node's one inbox reader."""
        if self._reader is None:
            self._stopped = False
            last = await _unavailable(self._last_inbox_id())
            self._reader = asyncio.create_task(self._read_inbox(last), name=f"events-inbox-{self.node}")

    async def stop(self) -> None:
        """Stop the inbox reader and wake every waiter (it returns what its
        stream holds)."""
        self._stopped = True
        reader, self._reader = self._reader, None
        if reader is not None:
            # Not cancelled in its XREAD: redis-py (8.1) may swallow the
            # cancellation there and read on. A notice of no session ends
            # the XREAD, and the reader sees it is stopped; at worst the
            # XREAD's own block ends it.
            with contextlib.suppress(redis.RedisError, OSError):
                await self._redis.xadd(self._inbox, {"s": ""}, maxlen=INBOX_MAX, approximate=True)
            await asyncio.wait({reader}, timeout=2 * INBOX_BLOCK_MS / 1000)
            if not reader.done():
                # Waiting to retry after a failure.
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        self._wake_all()

    def sweep(self) -> None:
        """Nothing to do: Redis expires a log a retention window after its
        last write or read."""

    async def open(self, session_id: str, username: str) -> None:
        await _unavailable(self._open(args=[session_id, username, self._ttl_ms]))

    async def close(self, session_id: str, final: events_pb2.Event | None = None) -> None:
        payload = b"" if final is None else final.SerializeToString()
        await self._run_append("end" if final is None else "close", payload, "", [session_id])

    async def publish(
        self,
        usernames: Iterable[str],
        event: events_pb2.Event,
        exclude_session: str | None = None,
    ) -> None:
        metrics.EVENTS_PUBLISHED.inc()
        names = list(usernames)
        if names:
            await self._run_append("users", event.SerializeToString(), exclude_session or "", names)

    async def publish_to_sessions(self, session_ids: Iterable[str], event: events_pb2.Event) -> None:
        metrics.EVENTS_PUBLISHED.inc()
        sessions = list(session_ids)
        if sessions:
            await self._run_append("sessions", event.SerializeToString(), "", sessions)

    async def read(self, session_id: str, after_seq: int, limit: int = 500) -> list[events_pb2.Event]:
        events, _, _ = await self._read_log(session_id, after_seq, limit, route=False)
        return events

    async def wait(self, session_id: str, after_seq: int, timeout: float, limit: int = 500) -> list[events_pb2.Event]:
        deadline = self._clock.time() + timeout
        trust = True
        # The seq the next event follows: after_seq, or for a reader from 0
        # that found nothing, the last seq issued.
        since = after_seq
        while True:
            # Registered before the read: a notice that arrives before the
            # read's reply is handed to it, not lost.
            waiter = _Waiter(asyncio.get_running_loop().create_future())
            waiters = self._waiters.setdefault(session_id, [])
            waiters.append(waiter)
            try:
                events = self._known(session_id, after_seq, limit) if trust else None
                if events is None:
                    now = self._clock.time()
                    events, still_open, last = await self._read_log(session_id, after_seq, limit, route=True)
                    self._follow(session_id, last, now, still_open, waiter.handed)
                    if not still_open or self._stopped:
                        return events
                    if not events and after_seq == 0:
                        since = last
                if events:
                    return events
                remaining = deadline - self._clock.time()
                if remaining <= 0:
                    return []
                if not waiter.future.done():
                    timer = self._clock.call_later(remaining, _wake, waiter.future)
                    try:
                        await waiter.future
                    finally:
                        timer.cancel()
                handed = _following(waiter.handed, since, limit)
                if handed:
                    return handed
                # Woken without the next event (a close, a gap, a lost
                # inbox connection, the timeout): read the stream again.
                trust = False
            finally:
                if not waiter.future.done():
                    waiter.future.cancel()
                waiters.remove(waiter)
                if not waiters and self._waiters.get(session_id) is waiters:
                    del self._waiters[session_id]

    def listen(self, session_id: str, after_seq: int, listener: Listener, timeout: float) -> _Listening | None:
        follow = self._follows.get(session_id)
        # Only while this node is surely told of the session's events (its
        # route alive, no gap, not closed) and has handed all up to after_seq.
        if follow is None or follow.closed or follow.known != after_seq or self._stopped:
            return None
        trusted = follow.routed_at + self._retention / 2 - self._clock.time()
        if trusted <= 0:
            return None
        listening = _Listening(self._listeners, session_id, listener, after_seq)
        self._listeners.setdefault(session_id, []).append(listening)
        # Ends while the route is surely alive: the wait that follows reads,
        # which renews it.
        listening._timer = self._clock.call_later(min(timeout, trusted), _wake, listening.ended)
        return listening

    def _known(self, session_id: str, after_seq: int, limit: int) -> list[events_pb2.Event] | None:
        """The events after ``after_seq`` from what this node was told of
        the session, or None when its stream must be read."""
        follow = self._follows.get(session_id)
        now = self._clock.time()
        if follow is None or follow.closed or now - follow.routed_at > self._retention / 2:
            return None
        if after_seq > follow.known:
            return None  # a seq this node has not seen: the read judges it
        return follow.since(after_seq, limit, now - self._retention)

    def _follow(self, session_id: str, last: int, routed_at: float, still_open: bool, handed: list[_Handed]) -> None:
        """Start trusting what this node is told of the session from a read
        that routed it here and saw seqs up to ``last``."""
        if not still_open:
            self._follows.pop(session_id, None)
            return
        follow = _Follow(known=last, routed_at=routed_at, recent=deque(maxlen=self._recent))
        for seq, when, shared in handed:
            if not follow.take(seq, when, shared):
                self._follows.pop(session_id, None)
                return
        self._follows[session_id] = follow
        if routed_at - self._forgotten_at > self._retention:
            self._forgotten_at = routed_at
            self._forget(routed_at)

    def _forget(self, now: float) -> None:
        """Drop what is known of sessions whose route lapsed."""
        for session_id, follow in tuple(self._follows.items()):
            if now - follow.routed_at > self._retention:
                del self._follows[session_id]

    async def is_open(self, session_id: str) -> bool:
        state = await _unavailable(self._redis.hget(f"wac:evmeta:{session_id}", "open"))
        return state == b"1"

    async def _run_append(self, mode: str, payload: bytes, exclude: str, names: Sequence[str]) -> None:
        now = repr(self._clock.time())
        # A script holds Redis while it runs: a publish to many sessions
        # runs as several, one after the other (each session's events stay
        # in the order of this node's publishes).
        for start in range(0, len(names), PUBLISH_CHUNK):
            chunk = names[start : start + PUBLISH_CHUNK]
            args: list[Any] = [now, self._ttl_ms, self._max_events, payload, mode, exclude, *chunk]
            await _unavailable(self._append(args=args))

    async def _read_log(
        self, session_id: str, after_seq: int, limit: int, *, route: bool
    ) -> tuple[list[events_pb2.Event], bool, int]:
        """The events, whether the session is open, the last seq issued."""
        args: list[Any] = [
            session_id,
            after_seq,
            limit,
            repr(self._clock.time()),
            self._ttl_ms,
            self.node if route else "",
        ]
        reply = await _unavailable(self._read(args=args))
        if reply[0] == 1:
            raise EventsExpired(_text(reply[1]))
        events = []
        for entry_id, fields in reply[2]:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            events.append(_event(_seq(entry_id), float(values[b"t"]), values[b"e"]))
        return events, reply[1] == 1, int(reply[3])

    async def _last_inbox_id(self) -> str:
        last = cast(_Entries, await self._redis.xrevrange(self._inbox, count=1))
        return _text(last[0][0]) if last else "0-0"

    async def _read_inbox(self, last: str) -> None:
        inbox = self._inbox
        while not self._stopped:
            try:
                replies = cast(
                    list[tuple[bytes, _Entries]],
                    await self._redis.xread({inbox: last}, count=INBOX_BATCH, block=INBOX_BLOCK_MS),
                )
            except redis.TimeoutError:
                # Redis was slow to answer (a publish to thousands of
                # sessions holds it): the notices after ``last`` are still
                # in the inbox.
                log.warning("events: reading the inbox of node %s timed out", self.node)
                continue
            except (redis.RedisError, OSError):
                log.warning("events: reading the inbox of node %s failed", self.node, exc_info=True)
                last = await self._recover()
                continue
            # A fan-out's notices carry the same event: parsed once.
            parsed: dict[tuple[bytes, bytes], events_pb2.Event] = {}
            for _, notices in replies:
                for notice_id, fields in notices:
                    last = _text(notice_id)
                    self._hand(fields, parsed)

    async def _recover(self) -> str:
        """After a failed read: where to read on, once Redis answers; then
        every waiter re-reads its stream, since notices may have been lost
        meanwhile."""
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            if self._stopped:
                return "0-0"
            try:
                last = await self._last_inbox_id()
                # The idle connections of the pool may be to the Redis that
                # went away (a restart): the client does not retry on them,
                # so the woken waiters would fail on their re-read.
                await self._redis.connection_pool.disconnect(inuse_connections=False)
            except (redis.RedisError, OSError):
                continue
            self._wake_all()
            return last

    def _hand(self, fields: dict[bytes, bytes], parsed: dict[tuple[bytes, bytes], events_pb2.Event]) -> None:
        session_id = _text(fields[b"s"])
        waiters = self._waiters.get(session_id)
        follow = self._follows.get(session_id)
        listeners = self._listeners.get(session_id)
        if not waiters and follow is None and not listeners:
            return  # no reader here any more (or stop()'s notice)
        seq, payload, stamp = int(fields[b"q"]), fields[b"e"], fields[b"t"]
        when = float(stamp)
        shared = None
        if seq:  # 0: a close with no final event
            shared = parsed.get((payload, stamp))
            if shared is None:
                # Stamped with its time for the listeners, who take it as it is.
                shared = parsed[payload, stamp] = events_pb2.Event.FromString(payload)
                shared.time.FromMicroseconds(round(when * 1e6))
        closed = fields.get(b"c") == b"1"
        if follow is not None:
            if closed:
                follow.closed = True
            if shared is not None and not follow.take(seq, when, shared):
                del self._follows[session_id]
        if listeners:
            # Each its own judge of a gap: another reader here may have
            # dropped what this node knows of the session.
            for listening in tuple(listeners):
                if shared is not None:
                    listening.hand(seq, shared)
                if closed:
                    listening.end()
        for waiter in waiters or ():
            if shared is not None:
                waiter.handed.append((seq, when, shared))
            _wake(waiter.future)

    def _wake_all(self) -> None:
        # What this node was told may have gaps now.
        self._follows.clear()
        for listeners in tuple(self._listeners.values()):
            for listening in tuple(listeners):
                listening.end()
        for waiters in self._waiters.values():
            for waiter in waiters:
                _wake(waiter.future)


def _following(handed: list[_Handed], after_seq: int, limit: int) -> list[events_pb2.Event]:
    """The handed events that follow ``after_seq`` with no gap, or none."""
    events: list[events_pb2.Event] = []
    expected = after_seq + 1
    for seq, when, shared in handed:
        if seq < expected:
            continue  # read already, before the wait
        if seq > expected or len(events) == limit:
            break
        event = events_pb2.Event()
        event.CopyFrom(shared)
        _stamp(event, seq, when)
        events.append(event)
        expected += 1
    # A gap after the first ones is fine: the next wait reads from there.
    return events


def _event(seq: int, when: float, payload: bytes) -> events_pb2.Event:
    event = events_pb2.Event.FromString(payload)
    _stamp(event, seq, when)
    return event


def _stamp(event: events_pb2.Event, seq: int, when: float) -> None:
    event.seq = seq
    event.time.FromMicroseconds(round(when * 1e6))


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _unavailable(reply: Awaitable[T]) -> T:
    """The reply; Redis failing is the log being unavailable. A full or
    read-only Redis (a replica after a failover) cannot serve now, like a
    lost one; any other error is a bug here, left as it is."""
    try:
        return await reply
    except (redis.ConnectionError, redis.TimeoutError, ReadOnlyError, OutOfMemoryError, OSError) as exc:
        raise failures.Unavailable(f"the event log (Redis) is unavailable: {exc}") from exc
