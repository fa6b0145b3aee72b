"""MessagesService: translates the protobuf API to the chat handler.
Access rules live in ``rules.py`` and ``handler.py``; this module reads
the caller and converts messages."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from core.auth.principal import ServicePrincipal, credential, current, subscriber
from core.chat import messages
from core.chat.handler import ChatHandler
from core.failures import PermissionDenied
from wac.v1 import messages_pb2, messages_pb2_grpc


def _operator() -> ServicePrincipal:
    who = current()
    if not isinstance(who, ServicePrincipal):
        raise PermissionDenied("this method is for operators: use an API key")
    return who


class MessagesServicer(messages_pb2_grpc.MessagesServiceServicer):
    def __init__(self, handler: ChatHandler) -> None:
        self._chat = handler

    async def SendMessage(
        self, request: messages_pb2.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.Message:
        who = subscriber()
        message = await self._chat.send(
            who,
            conversation_id=request.conversation_id,
            recipient=request.recipient,
            text=request.text,
            request_id=request.request_id,
            token=credential(),  # a message through the gateway carries it
        )
        return messages.message_pb(message, who.username)

    async def CreateConversation(
        self, request: messages_pb2.CreateConversationRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.Conversation:
        who = subscriber()
        view = await self._chat.create_group(who, request.title, list(request.members))
        return messages.view_pb(view, who.username)

    async def GetConversation(
        self, request: messages_pb2.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.Conversation:
        who = subscriber()
        return messages.view_pb(await self._chat.get(who, request.conversation_id), who.username)

    async def ListConversations(
        self, request: messages_pb2.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.ListConversationsResponse:
        who = current()
        assert who is not None  # the policy admits no anonymous caller
        reader, found, next_token = await self._chat.list_conversations(
            who, subscriber=request.subscriber, page_size=request.page_size, page_token=request.page_token
        )
        return messages_pb2.ListConversationsResponse(
            conversations=[messages.view_pb(v, reader) for v in found], next_page_token=next_token
        )

    async def UpdateConversation(
        self, request: messages_pb2.UpdateConversationRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.Conversation:
        who = subscriber()
        return messages.view_pb(await self._chat.rename(who, request.conversation_id, request.title), who.username)

    async def AddConversationMembers(
        self, request: messages_pb2.AddConversationMembersRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.Conversation:
        who = subscriber()
        view = await self._chat.add(who, request.conversation_id, list(request.members))
        return messages.view_pb(view, who.username)

    async def RemoveConversationMembers(
        self, request: messages_pb2.RemoveConversationMembersRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.Conversation:
        who = subscriber()
        view = await self._chat.remove(who, request.conversation_id, list(request.members))
        return messages.view_pb(view, who.username)

    async def ListMessages(
        self, request: messages_pb2.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.ListMessagesResponse:
        who = subscriber()
        found, next_token = await self._chat.list_messages(
            who,
            request.conversation_id,
            page_size=request.page_size,
            page_token=request.page_token,
            after_seq=request.after_seq,
        )
        return messages_pb2.ListMessagesResponse(
            messages=[messages.message_pb(m, who.username) for m in found], next_page_token=next_token
        )

    async def MarkRead(
        self, request: messages_pb2.MarkReadRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.Conversation:
        who = subscriber()
        view = await self._chat.mark_read(who, request.conversation_id, request.message_id)
        return messages.view_pb(view, who.username)

    async def SetTyping(
        self, request: messages_pb2.SetTypingRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._chat.typing(subscriber(), request.conversation_id, request.typing)
        return empty_pb2.Empty()

    async def BlockSubscriber(
        self, request: messages_pb2.BlockSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.BlockedSubscribers:
        return messages_pb2.BlockedSubscribers(usernames=await self._chat.block(subscriber(), request.username))

    async def UnblockSubscriber(
        self, request: messages_pb2.UnblockSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.BlockedSubscribers:
        return messages_pb2.BlockedSubscribers(usernames=await self._chat.unblock(subscriber(), request.username))

    async def ListBlockedSubscribers(
        self, request: messages_pb2.ListBlockedSubscribersRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.BlockedSubscribers:
        return messages_pb2.BlockedSubscribers(usernames=await self._chat.blocked(subscriber()))

    async def SendSystemMessage(
        self, request: messages_pb2.SendSystemMessageRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.Message:
        message = await self._chat.send_system(_operator(), request.username, request.text, request.request_id)
        return messages.message_pb(message)

    async def ReceiveMessage(
        self, request: messages_pb2.ReceiveMessageRequest, context: grpc.aio.ServicerContext
    ) -> messages_pb2.Message:
        message = await self._chat.receive(
            _operator(), request.phone_number, request.sender, request.text, request.request_id
        )
        return messages.message_pb(message)

    async def DeleteMessage(
        self, request: messages_pb2.DeleteMessageRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._chat.delete(_operator(), request.conversation_id, request.message_id)
        return empty_pb2.Empty()
