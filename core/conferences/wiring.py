"""What the composition root (``core/server.py``) calls to serve
conferences: the handler over its store, listening to identity's
revocations and the device registry, started, its servicer on the server.

Apart from ``core/server.py`` so that the conferences' wiring is in one
place while the media server's bridge is chosen there (core imports
connectors only in the composition root): ``bridge`` is the Janus
connector's, or ``NoBridge()`` when Janus is not running.
"""

from __future__ import annotations

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.incall import InCall
from core.clock import SYSTEM_CLOCK, Clock
from core.cluster.devices import DeviceRegistry
from core.conferences.bridge import ConferenceBridge
from core.conferences.handler import ConferenceHandler
from core.conferences.servicer import ConferencesServicer
from core.conferences.store import ConferenceStore
from core.events.log import EventLog
from core.identity.handler import IdentityHandler
from settings.config import Config
from wac.v1 import conferences_pb2, conferences_pb2_grpc

# For the server's health and reflection (core/server.py's SERVICE_NAMES).
SERVICE_NAME = conferences_pb2.DESCRIPTOR.services_by_name["ConferencesService"].full_name


async def serve_conferences(
    server: grpc.aio.Server,
    *,
    config: Config,
    engine: AsyncEngine,
    identity: IdentityHandler,
    events: EventLog,
    devices: DeviceRegistry,
    in_call: InCall,
    bridge: ConferenceBridge,
    clock: Clock = SYSTEM_CLOCK,
) -> ConferenceHandler:
    """Serve ConferencesService on ``server``; the handler, for the caller
    to stop (before the calls' handler, which stops ``in_call``, the one
    the calls use: a subscriber in a call and a room is in a call until it
    left both)."""
    handler = ConferenceHandler(
        store=ConferenceStore(engine),
        events=events,
        devices=devices,
        subscribers=identity.subscribers,
        bridge=bridge,
        in_call=in_call,
        ice_config=config.ice,
        device_grace=config.presence.grace_period,
        max_participants=config.conferences.max_participants,
        idle_timeout=config.conferences.idle_timeout,
        clock=clock,
    )
    identity.on_sessions_revoked(handler.sessions_revoked)
    await handler.start()
    conferences_pb2_grpc.add_ConferencesServiceServicer_to_server(ConferencesServicer(handler), server)
    return handler
