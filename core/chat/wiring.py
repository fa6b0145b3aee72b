"""What the composition root (``core/server.py``) calls to serve chat:
the handler over its store, started, its servicer on the server."""

from __future__ import annotations

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from core.chat.handler import ChatHandler, ChatLimits, MessageGateway
from core.chat.servicer import MessagesServicer
from core.chat.store import ChatStore
from core.clock import SYSTEM_CLOCK, Clock
from core.events.log import EventLog
from core.identity.handler import IdentityHandler
from settings.config import Config
from wac.v1 import messages_pb2, messages_pb2_grpc

# For the server's health and reflection (core/server.py's SERVICE_NAMES).
SERVICE_NAME = messages_pb2.DESCRIPTOR.services_by_name["MessagesService"].full_name


async def serve_chat(
    server: grpc.aio.Server,
    *,
    config: Config,
    engine: AsyncEngine,
    identity: IdentityHandler,
    events: EventLog,
    gateway: MessageGateway | None,
    clock: Clock = SYSTEM_CLOCK,
) -> ChatHandler:
    """Serve MessagesService on ``server``; the handler, for the caller to
    stop. ``gateway``: where messages to numbers go (None: nowhere)."""
    handler = ChatHandler(
        store=ChatStore(engine),
        events=events,
        subscribers=identity.subscribers,
        numbers=identity,
        limits=ChatLimits(max_text_bytes=config.messages.max_text_bytes, retention=config.messages.retention),
        gateway=gateway,
        domain=config.gateway.domain,
        phone_region=config.phones.default_region,
        clock=clock,
    )
    await handler.start()
    messages_pb2_grpc.add_MessagesServiceServicer_to_server(MessagesServicer(handler), server)
    return handler
