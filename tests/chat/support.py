"""Chat test helpers: a real core (tests/calls/support.py's world) serving
MessagesService, and devices that collect their chat events."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import grpc

from core.clock import SYSTEM_CLOCK, Clock
from tests.calls.support import Device, World, open_world
from tests.support.core import login
from wac.v1 import messages_pb2, messages_pb2_grpc

CHAT_EVENTS = frozenset({"message_received", "message_read", "message_deleted", "conversation_changed", "typing"})
_KEYS = itertools.count()


def request_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Chatter(Device):
    """A device that collects its chat events (a calls' Device collects call events)."""

    @property
    def chat(self) -> messages_pb2_grpc.MessagesServiceStub:
        return messages_pb2_grpc.MessagesServiceStub(self.channel)

    collects: ClassVar[frozenset[str]] = CHAT_EVENTS

    async def send(
        self, text: str, *, to: str = "", conversation_id: str = "", key: str | None = None
    ) -> messages_pb2.Message:
        request = messages_pb2.SendMessageRequest(text=text, request_id=key or request_id())
        if to:
            request.recipient = to
        if conversation_id:
            request.conversation_id = conversation_id
        return await self.chat.SendMessage(request, metadata=self.metadata)

    async def group(self, title: str, *members: str) -> messages_pb2.Conversation:
        request = messages_pb2.CreateConversationRequest(title=title, members=members)
        return await self.chat.CreateConversation(request, metadata=self.metadata)

    async def conversation(self, conversation_id: str) -> messages_pb2.Conversation:
        request = messages_pb2.GetConversationRequest(conversation_id=conversation_id)
        return await self.chat.GetConversation(request, metadata=self.metadata)

    async def conversations(self, **fields: Any) -> messages_pb2.ListConversationsResponse:
        return await self.chat.ListConversations(
            messages_pb2.ListConversationsRequest(**fields), metadata=self.metadata
        )

    async def history(self, conversation_id: str, **fields: Any) -> messages_pb2.ListMessagesResponse:
        request = messages_pb2.ListMessagesRequest(conversation_id=conversation_id, **fields)
        return await self.chat.ListMessages(request, metadata=self.metadata)

    async def texts(self, conversation_id: str) -> list[str]:
        """Every message's text, oldest first."""
        return [m.text for m in (await self.history(conversation_id, page_size=1000)).messages][::-1]

    async def mark_read(self, conversation_id: str, message_id: str) -> messages_pb2.Conversation:
        request = messages_pb2.MarkReadRequest(conversation_id=conversation_id, message_id=message_id)
        return await self.chat.MarkRead(request, metadata=self.metadata)

    async def add(self, conversation_id: str, *members: str) -> messages_pb2.Conversation:
        request = messages_pb2.AddConversationMembersRequest(conversation_id=conversation_id, members=members)
        return await self.chat.AddConversationMembers(request, metadata=self.metadata)

    async def remove(self, conversation_id: str, *members: str) -> messages_pb2.Conversation:
        request = messages_pb2.RemoveConversationMembersRequest(conversation_id=conversation_id, members=members)
        return await self.chat.RemoveConversationMembers(request, metadata=self.metadata)

    async def rename(self, conversation_id: str, title: str) -> messages_pb2.Conversation:
        request = messages_pb2.UpdateConversationRequest(conversation_id=conversation_id, title=title)
        return await self.chat.UpdateConversation(request, metadata=self.metadata)

    async def typing(self, conversation_id: str, typing: bool = True) -> None:
        request = messages_pb2.SetTypingRequest(conversation_id=conversation_id, typing=typing)
        await self.chat.SetTyping(request, metadata=self.metadata)

    async def block(self, username: str) -> list[str]:
        request = messages_pb2.BlockSubscriberRequest(username=username)
        return list((await self.chat.BlockSubscriber(request, metadata=self.metadata)).usernames)

    async def unblock(self, username: str) -> list[str]:
        request = messages_pb2.UnblockSubscriberRequest(username=username)
        return list((await self.chat.UnblockSubscriber(request, metadata=self.metadata)).usernames)


@dataclass
class Operator:
    name: str
    key: str
    channel: grpc.aio.Channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)

    @property
    def chat(self) -> messages_pb2_grpc.MessagesServiceStub:
        return messages_pb2_grpc.MessagesServiceStub(self.channel)

    async def system(self, username: str, text: str, key: str | None = None) -> messages_pb2.Message:
        request = messages_pb2.SendSystemMessageRequest(username=username, text=text, request_id=key or request_id())
        return await self.chat.SendSystemMessage(request, metadata=self.metadata)

    async def delete(self, conversation_id: str, message_id: str) -> None:
        request = messages_pb2.DeleteMessageRequest(conversation_id=conversation_id, message_id=message_id)
        await self.chat.DeleteMessage(request, metadata=self.metadata)

    async def conversations(self, subscriber: str) -> messages_pb2.ListConversationsResponse:
        request = messages_pb2.ListConversationsRequest(subscriber=subscriber)
        return await self.chat.ListConversations(request, metadata=self.metadata)


@dataclass
class Chat:
    world: World

    async def device(self, username: str, name: str = "web", *, connect: bool = True) -> Chatter:
        """A logged-in device, its event stream open unless not ``connect``."""
        world = self.world
        await world.subscriber(username)
        session = await login(world.channel, username, device=name)
        device = Chatter(username, session.session_id, session.access_token, world.channel, world.core)
        if connect:
            await device.connect()
        world.devices.append(device)
        return device

    async def operator(self, *scopes: str) -> Operator:
        name = "ops-" + "-".join(scopes) + f"-{next(_KEYS)}"
        service = await self.world.service(name, *scopes)
        return Operator(name, service.key, self.world.channel)

    async def advance(self, seconds: float) -> None:
        await self.world.advance(seconds)


@asynccontextmanager
async def open_chat(
    tmp_path: Path, env: Mapping[str, str] | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[Chat]:
    async with open_world(tmp_path, env, clock=clock) as world:
        yield Chat(world)
