"""The chat handler: runs the rules (``rules.py``) against the store and
the event log. It only sequences them.

Guarantees:

- A message is stored before anyone is told of it, with the next seq of
  its conversation (under the conversation's row lock): ListMessages is
  the truth a device catches up from, whatever events it missed.
- A send is idempotent per sender and request_id: the same key again (a
  retry after a lost answer, a queued send replayed on reconnection)
  answers the message the first one made and tells nobody again.
- A message goes to every member's devices (``messageReceived``): the
  sender's other devices with its request_id, the other members without,
  and none of those who block the sender. Read receipts
  (``messageRead``), deletions (``messageDeleted``) and changes to a
  conversation (``conversationChanged``, to those removed too) go the same
  way. A change, once stored, is announced: it runs in a task of its own,
  so a client that cancels its RPC cannot leave it unannounced.
- A message to a party on the gateway's side (a number, a sip: URI of
  another domain) goes out through the SIP gateway (``MessageGateway``)
  with the sender's own token, and is kept once the far end took it: the
  gateway's refusal is the send's. A message from the trunk to a
  subscriber's number (``receive``) lands in the holder's one-to-one
  conversation with the sender; the party's URI stands in the members.
- With ``[messages] retention`` set, every core purges the messages older
  than it every quarter of it (at most an hour); conversations and read
  state stay.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from core import checks, failures, paging
from core.auth.principal import Principal, ServicePrincipal, SubscriberPrincipal
from core.chat import messages, rules
from core.chat.rules import Conversation, Kind, Message, View
from core.chat.store import ChatStore, Check
from core.clock import SYSTEM_CLOCK, Clock
from core.events.log import EventLog
from core.tasks import Work, cancelled

log = logging.getLogger("wac.chat")

# The purge's period at most.
MAX_PURGE_PERIOD = 3600.0
# Messages one purge statement deletes (then the next, until none are left).
PURGE_BATCH = 1000
# One-to-one conversation ids a core keeps (they never change once made).
MAX_DIRECTS = 100_000
NOT_ACCEPTED = "the recipient does not accept messages from you"
# How long a typing event is shown at most: a client that keeps typing
# says so again before it passes (the SDK every 3 s).
TYPING_SECONDS = 6.0


class Subscribers(Protocol):
    """identity's subscriber read-cache (``core/identity/subscribers.py``)."""

    async def exists(self, username: str) -> bool: ...


class Numbers(Protocol):
    """identity's phone numbers (``core/identity/handler.py``)."""

    async def phone_number_owner(self, number: str) -> tuple[str, str]:
        """The number in E.164 and its holder; NotFound when nobody holds it."""
        ...


class MessageGateway(Protocol):
    """The SIP gateway, for messages (``connectors/sip_messages.py``)."""

    async def send(self, *, token: str, sender: str, to: str, text: str) -> None:
        """Returns once the far end took the text; raises a ``failures`` error."""
        ...


class _Outside(Exception):
    """A send's conversation is with a party on the gateway's side."""

    def __init__(self, party: str) -> None:
        self.party = party


@dataclass(frozen=True, slots=True)
class ChatLimits:
    """``[messages]``: the text's bytes at most, and how long messages are kept (0: for ever)."""

    max_text_bytes: int = 4096
    retention: float = 0.0


class ChatHandler:
    """Chat; the composition root calls start() and stop()."""

    def __init__(
        self,
        *,
        store: ChatStore,
        events: EventLog,
        subscribers: Subscribers,
        limits: ChatLimits,
        numbers: Numbers,
        gateway: MessageGateway | None = None,
        domain: str = "",
        phone_region: str = "ES",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._store = store
        self._events = events
        self._subscribers = subscribers
        self._numbers = numbers
        self._gateway = gateway
        self._domain = domain
        self._region = phone_region
        self._limits = limits
        self._clock = clock
        self._work = Work()
        self._purger: asyncio.Task[None] | None = None
        # rules.direct_key -> the one-to-one conversation's id.
        self._directs: dict[str, str] = {}

    async def start(self) -> None:
        if self._limits.retention > 0:
            self._purger = asyncio.ensure_future(self._purge())

    async def stop(self) -> None:
        if self._purger is not None:
            await cancelled(self._purger)
        await self._work.drain()

    # -- sending ---------------------------------------------------------
    async def send(
        self,
        who: SubscriberPrincipal,
        *,
        conversation_id: str,
        recipient: str,
        text: str,
        request_id: str,
        token: str = "",
    ) -> Message:
        """A text to a conversation of the caller's, or to a subscriber (their
        one-to-one conversation, made by the first message), or through the
        gateway to a party on its side (with ``token``, the caller's). One
        write transaction does the checks and the append (``ChatStore.append``)."""
        rules.text(text, self._limits.max_text_bytes)
        rules.request_id(request_id)
        if recipient:
            party = rules.external_party("recipient", recipient, self._domain, self._region)
            if party is not None:
                return await self._send_out(who, token, party, "", text, request_id)
            conversation_id = await self._direct(who.username, rules.subscriber_of(recipient))
        elif not conversation_id:
            raise failures.Invalid("recipient", "is required: name a recipient or a conversation_id")
        else:
            rules.conversation_id(conversation_id)

        def check(conversation: Conversation | None, blockers: frozenset[str]) -> Conversation:
            conversation = rules.may_send(conversation, who.username)
            if conversation.kind is Kind.DIRECT:
                peer = conversation.peer(who.username)
                if rules.is_external(peer):
                    raise _Outside(peer)  # rolled back: it goes through the gateway first
                if peer in blockers:
                    raise failures.PermissionDenied(NOT_ACCEPTED)
            return conversation

        try:
            return await self._append(conversation_id, check, who.username, text, request_id, who.session_id)
        except _Outside as outside:
            return await self._send_out(who, token, outside.party, conversation_id, text, request_id)

    async def _send_out(
        self, who: SubscriberPrincipal, token: str, party: str, conversation_id: str, text: str, request_id: str
    ) -> Message:
        """Through the gateway first, then kept: a message is in the
        conversation once the far end took it. A retry of one already kept
        answers it and sends nothing."""
        earlier = await self._store.by_request(who.username, request_id)
        if earlier is not None:
            return earlier
        if self._gateway is None:
            raise failures.FailedPrecondition(
                f"messages to {party.partition(':')[0]}: addresses go through the SIP gateway, which is not enabled"
            )
        await self._gateway.send(token=token, sender=who.username, to=party, text=text)
        if not conversation_id:
            conversation_id = await self._direct_id(who.username, party)
        return await self._append(
            conversation_id,
            lambda c, _: rules.may_send(c, who.username),
            who.username,
            text,
            request_id,
            who.session_id,
        )

    async def receive(
        self, who: ServicePrincipal, phone_number: str, sender: str, text: str, request_id: str
    ) -> Message:
        """A message from the trunk to a subscriber's number (the gateway's
        ReceiveMessage), into the holder's conversation with the sender."""
        checks.require("phone_number", phone_number)
        sender = rules.sender_party("sender", sender, self._domain, self._region)
        rules.text(text, self._limits.max_text_bytes)
        rules.request_id(request_id)
        _, holder = await self._numbers.phone_number_owner(phone_number)
        if await self._store.blockers(sender, (holder,)):
            # Dropped, and answered as taken: the sender learns nothing.
            log.info("a message from %s to a subscriber who blocks it was dropped", sender)
            return Message("", "", 0, sender, "", self._clock.time(), False, "", "")
        conversation_id = await self._direct_id(sender, holder)
        return await self._append(
            conversation_id,
            lambda c, _: rules.member(c, holder),
            sender,
            text,
            request_id,
            None,
            requester=f"gateway:{who.key_name}",
        )

    async def _append(
        self,
        conversation_id: str,
        check: Check,
        sender: str,
        text: str,
        request_id: str,
        session: str | None,
        *,
        requester: str = "",
    ) -> Message:
        """Appends ``sender``'s message if ``check`` passes, and tells the
        members; a system message (the operator's) has no sender."""
        requester = requester or sender
        now = self._clock.time()

        def make(conversation: Conversation) -> Message:
            return Message(
                message_id=secrets.token_urlsafe(16),
                conversation_id=conversation.conversation_id,
                seq=conversation.last_seq + 1,
                sender=sender,
                text=text,
                create_time=now,
                system=not sender,
                requester=requester,
                request_id=request_id,
            )

        async def change() -> Message:
            done = await self._store.append(conversation_id, check, make, requester=requester, request_id=request_id)
            if done.conversation is not None:  # else a retry: answered, nobody told again
                await self._received(rules.sent(done.conversation, now), done.message, session, done.blockers)
            return done.message

        return await self._work.run(change())

    async def send_system(self, who: ServicePrincipal, username: str, text: str, request_id: str) -> Message:
        """The operator's message to a subscriber, in its system conversation."""
        rules.valid_username("username", username)
        rules.text(text, self._limits.max_text_bytes)
        rules.request_id(request_id)
        requester = f"operator:{who.key_name}"
        if not await self._subscribers.exists(username):
            raise failures.NotFound(f"subscriber '{username}' does not exist", field="username")
        now = self._clock.time()
        made = Conversation(secrets.token_urlsafe(16), Kind.SYSTEM, (username,), now, now)
        conversation = await self._store.get_or_create(rules.system_key(username), made)
        return await self._append(
            conversation.conversation_id,
            lambda c, _: rules.member(c, username),
            "",
            text,
            request_id,
            None,
            requester=requester,
        )

    async def _direct(self, sender: str, recipient: str) -> str:
        """The id of the one-to-one conversation of the two, made if there is
        none yet. Kept once known: its members never change."""
        rules.valid_username("recipient", recipient)
        if recipient == sender:
            raise failures.Invalid("recipient", "is the sender: a subscriber does not message itself")
        key = rules.direct_key(sender, recipient)
        known = self._directs.get(key)
        if known is not None:
            return known
        if not await self._subscribers.exists(recipient):
            raise failures.NotFound(f"subscriber '{recipient}' does not exist", field="recipient")
        # Not made for a sender its recipient blocks (the send is refused).
        await self._require_accepted(sender, recipient)
        return await self._direct_id(sender, recipient)

    async def _direct_id(self, first: str, second: str) -> str:
        """The one-to-one conversation of the two (``first`` wrote first), made if need be."""
        key = rules.direct_key(first, second)
        known = self._directs.get(key)
        if known is not None:
            return known
        now = self._clock.time()
        made = Conversation(secrets.token_urlsafe(16), Kind.DIRECT, (first, second), now, now)
        conversation_id = (await self._store.get_or_create(key, made)).conversation_id
        if len(self._directs) >= MAX_DIRECTS:
            self._directs.pop(next(iter(self._directs)))
        self._directs[key] = conversation_id
        return conversation_id

    async def _require_accepted(self, sender: str, recipient: str) -> None:
        if await self._store.blockers(sender, (recipient,)):
            raise failures.PermissionDenied(NOT_ACCEPTED)

    # -- groups ------------------------------------------------------------
    async def create_group(self, who: SubscriberPrincipal, title: str, members: Sequence[str]) -> View:
        title = rules.title(title)
        new = rules.new_members("members", members, members=(who.username,))
        await self._require_subscribers("members", members, new)
        now = self._clock.time()
        conversation = Conversation(
            conversation_id=secrets.token_urlsafe(16),
            kind=Kind.GROUP,
            members=(who.username, *new),
            create_time=now,
            update_time=now,
            title=title,
            owner=who.username,
        )

        async def change() -> View:
            await self._store.create(conversation)
            await self._changed(conversation, added=conversation.members, removed=(), exclude=who.session_id)
            return View(conversation, 0, 0, None)

        return await self._work.run(change())

    async def rename(self, who: SubscriberPrincipal, conversation_id: str, title: str) -> View:
        rules.conversation_id(conversation_id)
        return await self._change(who, conversation_id, lambda c: rules.rename(c, who.username, title))

    async def add(self, who: SubscriberPrincipal, conversation_id: str, members: Sequence[str]) -> View:
        rules.conversation_id(conversation_id)
        checks.require("members", members)
        # Refused before any username is looked up: a stranger learns nothing.
        known = rules.owned(await self._store.get(conversation_id), who.username)
        new = rules.new_members("members", members, members=known.members)
        await self._require_subscribers("members", members, new)
        return await self._change(who, conversation_id, lambda c: rules.add(c, who.username, members))

    async def remove(self, who: SubscriberPrincipal, conversation_id: str, members: Sequence[str]) -> View:
        rules.conversation_id(conversation_id)
        checks.require("members", members)
        return await self._change(who, conversation_id, lambda c: rules.remove(c, who.username, members))

    async def _change(self, who: SubscriberPrincipal, conversation_id: str, step: Any) -> View:
        async def change() -> Conversation:
            before, after = await self._store.change(conversation_id, step)
            if after != before:
                added = tuple(m for m in after.members if m not in before.members)
                removed = tuple(m for m in before.members if m not in after.members)
                await self._changed(after, added=added, removed=removed, exclude=who.session_id)
            return after

        after = await self._work.run(change())
        if not after.is_member(who.username):
            return View(after, 0, 0, None)  # it left: nothing more of it to read
        return await self.get(who, conversation_id)

    # -- reading -----------------------------------------------------------
    async def get(self, who: SubscriberPrincipal, conversation_id: str) -> View:
        rules.conversation_id(conversation_id)
        found = await self._store.views(who.username, before=None, limit=1, ids=[conversation_id])
        if not found:
            raise failures.PermissionDenied(rules.NOT_MEMBER)
        return found[0]

    async def list_conversations(
        self, who: Principal, *, subscriber: str, page_size: int, page_token: str
    ) -> tuple[str, list[View], str]:
        """Whose conversations, a page of them, and the next page's token."""
        if isinstance(who, SubscriberPrincipal):
            if subscriber and subscriber != who.username:
                raise failures.PermissionDenied("subscribers may list only their own conversations")
            subscriber = who.username
        else:
            rules.valid_username("subscriber", subscriber)
        size = paging.page_size(page_size)
        position = paging.decode_token(page_token)
        before: tuple[float, str] | None = None
        if position is not None:
            if not (
                isinstance(position, list)
                and len(position) == 2
                and isinstance(position[0], int | float)
                and not isinstance(position[0], bool)
                and isinstance(position[1], str)
            ):
                raise paging.invalid_token()
            before = (float(position[0]), position[1])
        found = await self._store.views(subscriber, before=before, limit=size + 1)
        if len(found) <= size:
            return subscriber, found, ""
        last = found[size - 1].conversation
        return subscriber, found[:size], paging.encode_token([last.update_time, last.conversation_id])

    async def list_messages(
        self, who: SubscriberPrincipal, conversation_id: str, *, page_size: int, page_token: str, after_seq: int
    ) -> tuple[list[Message], str]:
        rules.conversation_id(conversation_id)
        if after_seq < 0:
            raise failures.Invalid("after_seq", "must not be negative")
        rules.member(await self._store.get(conversation_id), who.username)
        size = paging.page_size(page_size)
        position = paging.decode_token(page_token)
        if position is not None and (not isinstance(position, int) or isinstance(position, bool) or position < 0):
            raise paging.invalid_token()
        hidden = await self._store.blocked_by(who.username)
        if after_seq:
            found = await self._store.messages(
                conversation_id,
                before_seq=None,
                after_seq=position if position is not None else after_seq,
                hidden=hidden,
                limit=size + 1,
            )
        else:
            found = await self._store.messages(
                conversation_id, before_seq=position, after_seq=None, hidden=hidden, limit=size + 1
            )
        if len(found) <= size:
            return found, ""
        return found[:size], paging.encode_token(found[size - 1].seq)

    async def mark_read(self, who: SubscriberPrincipal, conversation_id: str, message_id: str) -> View:
        rules.message_id(message_id)
        before = await self.get(who, conversation_id)  # a member's, or NOT_MEMBER
        message = await self._store.get_message(conversation_id, message_id)
        if message is None:
            raise failures.NotFound(f"message '{message_id}' is not in this conversation", field="message_id")
        if before.read_seq >= message.seq:
            return before  # read already: nobody to tell

        async def change() -> None:
            # Told once: of two racing marks, only the one that moved the seq.
            if await self._store.mark_read(conversation_id, who.username, message.seq):
                # The caller's other devices learn its badge, the others a receipt.
                await self._events.publish(
                    before.conversation.members,
                    messages.read(conversation_id, who.username, message),
                    exclude_session=who.session_id,
                )

        await self._work.run(change())
        return await self.get(who, conversation_id)

    async def typing(self, who: SubscriberPrincipal, conversation_id: str, typing: bool) -> None:
        """Tells the other members that the caller types in the conversation
        (or stopped): an event only, never stored; none to those who block it."""
        rules.conversation_id(conversation_id)
        conversation = rules.may_send(await self._store.get(conversation_id), who.username)
        members = [m for m in conversation.members if m != who.username]
        blockers = await self._store.blockers(who.username, members)
        others = [m for m in members if m not in blockers]
        if others:
            expire = self._clock.time() + TYPING_SECONDS
            await self._events.publish(others, messages.typing(conversation_id, who.username, typing, expire))

    # -- blocks ------------------------------------------------------------
    async def block(self, who: SubscriberPrincipal, username: str) -> list[str]:
        blocked = rules.external_party("username", username, self._domain, self._region)
        if blocked is None:  # a subscriber; else a number or sip: URI, on the gateway's side
            blocked = rules.valid_username("username", rules.subscriber_of(username))
            if blocked == who.username:
                raise failures.Invalid("username", "is the caller: a subscriber does not block itself")
            if not await self._subscribers.exists(blocked):
                raise failures.NotFound(f"subscriber '{blocked}' does not exist", field="username")
        await self._store.block(who.username, blocked, self._clock.time())
        return await self._store.blocked_by(who.username)

    async def unblock(self, who: SubscriberPrincipal, username: str) -> list[str]:
        blocked = rules.external_party("username", username, self._domain, self._region)
        if blocked is None:
            blocked = rules.valid_username("username", rules.subscriber_of(username))
        await self._store.unblock(who.username, blocked)
        return await self._store.blocked_by(who.username)

    async def blocked(self, who: SubscriberPrincipal) -> list[str]:
        return await self._store.blocked_by(who.username)

    # -- operators -----------------------------------------------------------
    async def delete(self, who: ServicePrincipal, conversation_id: str, message_id: str) -> None:
        rules.conversation_id(conversation_id)
        rules.message_id(message_id)

        async def change() -> None:
            gone = await self._store.delete_message(conversation_id, message_id)
            if gone is None:
                raise failures.NotFound(f"message '{message_id}' does not exist in conversation '{conversation_id}'")
            conversation = await self._store.get(conversation_id)
            if conversation is not None:
                await self._events.publish(conversation.members, messages.deleted(gone))
            log.info("message %s of %s deleted by %s", message_id, conversation_id, who.key_name)

        await self._work.run(change())

    # -- telling -----------------------------------------------------------
    async def _received(
        self, conversation: Conversation, message: Message, session: str | None, blockers: frozenset[str]
    ) -> None:
        others = [m for m in conversation.members if m != message.sender and m not in blockers]
        if others:
            await self._events.publish(others, messages.received(replace(message, request_id=""), conversation))
        if message.sender and not rules.is_external(message.sender):
            # Its request_id, for the sender's other devices to match a send of theirs.
            await self._events.publish(
                (message.sender,), messages.received(message, conversation), exclude_session=session
            )

    async def _changed(
        self, conversation: Conversation, *, added: Iterable[str], removed: Iterable[str], exclude: str | None
    ) -> None:
        removed = tuple(removed)
        await self._events.publish(
            (*conversation.members, *removed),
            messages.changed(conversation, added=tuple(added), removed=removed),
            exclude_session=exclude,
        )

    async def _require_subscribers(self, field: str, requested: Sequence[str], new: Sequence[str]) -> None:
        for index, username in enumerate(requested):
            if username in new and not await self._subscribers.exists(username):
                raise failures.NotFound(
                    f"{field}[{index}]: subscriber '{username}' does not exist", field=f"{field}[{index}]"
                )

    async def _purge(self) -> None:
        period = min(MAX_PURGE_PERIOD, self._limits.retention / 4)
        while True:
            try:
                before = self._clock.time() - self._limits.retention
                total = 0
                while (count := await self._store.purge(before, PURGE_BATCH)) > 0:
                    total += count
                    if count < PURGE_BATCH:
                        break
                if total:
                    log.info("purged %d message(s) older than the retention", total)
            except Exception:
                log.exception("chat: the purge failed; again in %g s", period)
            await self._clock.sleep(period)
