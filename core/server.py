"""The composition root: builds every store, log and service from the
configuration, once, and serves them on one grpc.aio server.

The embedded or distributed implementation of each interface is chosen
here (the state cores share, through ``core/cluster/choose.py``) and
nowhere else.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.setup import Configured, configured, google_linker
from core import metrics
from core.auth.rates import RateTable
from core.calls.forward import Forwarder, advertised
from core.calls.gateway import GatewayCalls
from core.calls.handler import LEASE_PREFIX, CallHandler, Ownership
from core.calls.incall import InCall
from core.calls.servicer import CallsServicer
from core.calls.store import CallStore
from core.chat.wiring import SERVICE_NAME as MESSAGES_SERVICE
from core.chat.wiring import serve_chat
from core.clock import SYSTEM_CLOCK, Clock
from core.cluster.call_sets import CallSets, LocalCallSets
from core.cluster.choose import SharedState, shared_state
from core.cluster.devices import DeviceRegistry, LocalDeviceRegistry
from core.cluster.leases import Keeper, Leases
from core.conferences.bridge import ConferenceBridge, NoBridge
from core.conferences.history import ConferenceHistory
from core.conferences.store import ConferenceStore
from core.conferences.wiring import SERVICE_NAME as CONFERENCES_SERVICE
from core.conferences.wiring import serve_conferences
from core.contacts.handler import ContactsHandler
from core.contacts.servicer import ContactsServicer
from core.contacts.store import SqlContactsStore
from core.db.engine import create_engine
from core.db.work import dispose
from core.directory.connector import Connector
from core.directory.google import GoogleContacts
from core.directory.handler import DirectoryHandler
from core.directory.runner import RUN_LEASES, RunLeases, SyncRunner
from core.directory.servicer import DirectoryServicer
from core.directory.store import DirectoryStore
from core.events.edge_stream import EdgeStreamServicer, StreamLimits
from core.events.handler import EventsHandler
from core.events.log import EventLog
from core.events.memory import MemoryEventLog
from core.events.servicer import EventsServicer
from core.health import ReadinessHealth
from core.identity.handler import IdentityHandler
from core.identity.messages import SipGatewayAnnouncement
from core.identity.servicer import IdentityServicer
from core.identity.store import IdentityStore
from core.interceptor import CoreInterceptor, Forwarding
from core.presence.handler import PresenceHandler
from core.presence.servicer import PresenceServicer
from core.presence.store import SqlPresenceStore
from core.readiness import Readiness, database_probe, gateway_probe, head_revision
from settings import datadir, gatewaykey, hopkey, status, traces
from settings.collector import tend as collector_tend
from settings.config import Config, ConfigError
from wac.internal.v1 import stream_pb2_grpc
from wac.v1 import (
    calls_pb2,
    calls_pb2_grpc,
    contacts_pb2,
    contacts_pb2_grpc,
    directory_pb2,
    directory_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    presence_pb2,
    presence_pb2_grpc,
)

if TYPE_CHECKING:
    from connectors.kamailio import KamailioRpc, RevokedRegistrations
    from connectors.kamailio_events import KamailioCallEvents
    from connectors.sip_messages import SipMessages

log = logging.getLogger("wac.core")

MAX_MESSAGE_BYTES = 1 << 20

SERVICE_NAMES = (
    identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
    presence_pb2.DESCRIPTOR.services_by_name["PresenceService"].full_name,
    contacts_pb2.DESCRIPTOR.services_by_name["ContactsService"].full_name,
    directory_pb2.DESCRIPTOR.services_by_name["DirectoryService"].full_name,
    calls_pb2.DESCRIPTOR.services_by_name["CallsService"].full_name,
    CONFERENCES_SERVICE,
    MESSAGES_SERVICE,
    events_pb2.DESCRIPTOR.services_by_name["EventsService"].full_name,
)


@dataclass
class Core:
    """A running core: its server, its port, and what to close on stop."""

    config: Config
    engine: AsyncEngine
    server: grpc.aio.Server
    port: int
    identity: IdentityHandler
    events: EventLog
    devices: DeviceRegistry
    health: Any
    # This node's id, its leases, and what else it shares with other cores
    # (core/cluster/choose.py): embedded unless [cluster] redis_url is set.
    shared: SharedState
    presence: PresenceHandler | None = None
    contacts: ContactsHandler | None = None
    # The hop key this core trusts (see settings/hopkey.py), and StreamEvents.
    hop_key: str = ""
    event_streams: EdgeStreamServicer | None = None
    # The gateway's call reports, while [gateway] is enabled.
    gateway_events: KamailioCallEvents | None = None
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    closers: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def node(self) -> str:
        return self.shared.node

    @property
    def leases(self) -> Leases:
        return self.shared.leases

    @property
    def keeper(self) -> Keeper:
        return self.shared.keeper

    async def stop(self, grace: float | None = None) -> None:
        grace = self.config.core.shutdown_grace if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        for close in reversed(self.closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result
        await dispose(self.engine)


@dataclass(frozen=True)
class SubscriberFollowers:
    """The stored data that must follow every change of a subscriber (the
    directory's mirror, contacts linking a deleted subscriber), with the
    stores the core also uses for the rest of its wiring."""

    contacts_store: SqlContactsStore
    book: ContactsHandler
    directory_store: DirectoryStore
    directory: DirectoryHandler


def sip_gateway(config: Config) -> SipGatewayAnnouncement | None:
    """What Login and RefreshSession tell clients of the SIP gateway: the
    path Envoy proxies to Kamailio (envoy.yaml.tmpl), while it is enabled."""
    if not config.gateway.enabled:
        return None
    return SipGatewayAnnouncement(path="/sip", domain=config.gateway.domain, url=config.gateway.public_url)


def identity_with_followers(
    config: Config,
    engine: AsyncEngine,
    events: EventLog | None = None,
    devices: DeviceRegistry | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[IdentityHandler, SubscriberFollowers]:
    """The identity handler, already telling the stored followers of every
    subscriber change. The core and ``wac admin`` both build identity here,
    so no way of changing a subscriber can miss one (``wac admin subscriber
    add`` once did: its subscribers were never in the directory). Listeners
    of a running core's own state (presence) are the core's to add.

    Without ``events`` and ``devices`` (``wac admin``) this process holds
    no stream or device to tell of a revocation: running cores learn of it
    from their revocation poll."""
    events = MemoryEventLog() if events is None else events
    devices = LocalDeviceRegistry(0) if devices is None else devices
    identity = IdentityHandler(config, IdentityStore(engine), events, devices, clock)
    subscribers = IdentityStore(engine)
    region = config.phones.default_region
    contacts_store = SqlContactsStore(engine)
    book = ContactsHandler(contacts_store, events, subscribers, default_region=region, clock=clock.time)
    directory_store = DirectoryStore(engine, clock=clock.time)
    directory = DirectoryHandler(directory_store, subscribers, default_region=region)
    for listener in (book.subscriber_changed, directory.subscriber_changed):
        identity.on_subscriber_changed(listener)
    return identity, SubscriberFollowers(contacts_store, book, directory_store, directory)


async def build_core(
    config: Config,
    *,
    migrate: bool = True,
    clock: Clock = SYSTEM_CLOCK,
    conference_bridge: ConferenceBridge | None = None,
) -> Core:
    """Open the database, wire every service and start serving. ``clock``:
    every service's time and timers (tokens' expiry, throttle delays, ring
    and grace timeouts, coalescing windows, the event log's retention);
    tests pass a fake one. ``conference_bridge``: the conferences' media
    server; by default Janus's when conferences are on, else none."""
    # A bad connector section stops the start before anything is opened;
    # so does an unreadable Janus secret.
    wanted = _configured_connectors(config)
    bridge, close_bridge = (conference_bridge, None) if conference_bridge else _conference_bridge(config)
    # The database in it holds the private signing keys: wac's user only.
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if migrate:
        # Alembic (with Mako) weighs 9 MiB: loaded only by a core that migrates itself.
        from core.db.migrate import upgrade

        await asyncio.to_thread(upgrade, config.database_url)
    datadir.tighten_files(config.data_dir)
    engine = create_engine(config.database_url)

    # Embedded, or on the cluster's Redis: chosen there, once.
    shared = shared_state(config, clock)
    node, redis, leases, keeper = shared.node, shared.redis, shared.leases, shared.keeper
    events, devices = shared.events, shared.devices
    log.info("core node %s: %s", node, "embedded" if redis is None else "in a cluster")
    # One JSON-RPC client of Kamailio for every use (registrations, calls),
    # closed last.
    gateway_rpc: KamailioRpc | None = None
    if config.gateway.enabled:
        # The gateway's adapters (and httpx under them) load only when it is enabled.
        from connectors.kamailio import KamailioRpc

        gateway_rpc = KamailioRpc(config.gateway.jsonrpc_listen)
    gateway_registrations: RevokedRegistrations | None = None
    try:
        identity, followers = identity_with_followers(config, engine, events, devices, clock=clock)
        if gateway_rpc is not None:
            from connectors.kamailio import RevokedRegistrations

            # A revoked subscriber's gateway registrations end with their
            # sessions; listening before start(), whose poll may tell some.
            gateway_registrations = RevokedRegistrations(gateway_rpc)
            identity.on_sessions_revoked(gateway_registrations.sessions_revoked)
        await identity.start()
    except ConfigError:
        # A seal secret malformed, missing or wrong for the sealed signing
        # keys stops the start; what was opened is closed.
        if gateway_rpc is not None:
            await gateway_rpc.close()
        await shared.close()
        await dispose(engine)
        raise
    shared_tasks = await shared.start()
    # The edge and Envoy present this key: on StreamEvents, and in x-wac-hop
    # beside a client's credential to vouch for its forwarded address.
    hop_key = config.core.hop_key or await identity.provision_service_key(
        hopkey.NAME, [hopkey.SCOPE], hopkey.hop_key_path(config)
    )
    if config.gateway.enabled and not config.gateway.api_key:
        # The SIP gateway verifies callers' tokens and finds numbers' owners
        # with this key; `wac gateway` reads it from the file.
        await identity.provision_service_key(
            gatewaykey.NAME, list(gatewaykey.SCOPES), gatewaykey.gateway_key_path(config)
        )
    contacts_store = followers.contacts_store
    presence_store = SqlPresenceStore(engine)
    presence = PresenceHandler(
        presence_store,
        events,
        contacts_store,
        # Identity's subscriber read-cache, evicted by identity on every change.
        identity.subscribers,
        visibility=config.presence.visibility,
        coalesce_interval=config.presence.coalesce_ms / 1000,
        max_note=config.presence.max_note,
        device_retention=config.identity.refresh_token_ttl,
        subjects=shared.presence_subjects(presence_store.connected_usernames),
        clock=clock,
    )
    book, directory_store, directory = followers.book, followers.directory_store, followers.directory
    # In a cluster each run holds its connector's lease: one run at a time
    # in the whole cluster.
    run_leases = None if redis is None else RunLeases(keeper, leases, ttl=shared.lease_seconds)
    runner, google = _connectors(wanted, directory_store, events, run_leases, shared, clock)
    devices.on_online(presence.device_online)
    devices.on_lost(presence.device_lost)
    book.on_links_changed(presence.links_changed)
    identity.on_subscriber_changed(presence.subscriber_changed)
    if google is not None:
        identity.on_subscriber_changed(google.subscriber_changed)
    await presence.start()
    # Reconciles the mirror with the subscriber table, whatever wrote it.
    await directory.start()
    # Runs left RUNNING by a core that stopped are over (in a cluster, those
    # whose connector's lease lapsed); then the schedule may start.
    await runner.fail_interrupted_runs()
    if google is not None:
        await google.start()
    # In a cluster: the calls' counts and in-call sets every core sees
    # alike, and each live call owned by one core (by lease), the others
    # forwarding its inputs there.
    call_sets: CallSets = LocalCallSets()
    ownership: Ownership | None = None
    forwarder: Forwarder | None = None
    call_address: Callable[[int], str] | None = None
    if redis is not None:
        # Redis's client loads only in a cluster (core/cluster/choose.py).
        from core.cluster.redis_call_sets import RedisCallSets
        from core.cluster.redis_owners import RedisCallOwners

        call_sets = RedisCallSets(redis)
        call_address = advertised(config.cluster.advertise, config.core.listen)
        owners = RedisCallOwners(redis, node)
        ownership = Ownership(
            leases=leases,
            keeper=keeper,
            owners=owners,
            lease_seconds=shared.lease_seconds,
            heartbeat_seconds=shared.heartbeat_seconds,
        )
        forwarder = Forwarder(owners, hop_key=hop_key, address_header=config.core.client_address_header)
    # Who is in a call, whichever path carries it, for presence.
    in_call = InCall(presence.set_in_call, shared=None if redis is None else call_sets)
    gateway_calls: GatewayCalls | None = None
    gateway_events: KamailioCallEvents | None = None
    if gateway_rpc is not None:
        from connectors.kamailio import KamailioCallControl
        from connectors.kamailio_events import KamailioCallEvents

        # The calls through the SIP gateway, from its reports, in the same
        # history; HangupCall ends them there.
        gateway_calls = GatewayCalls(
            store=CallStore(engine),
            in_call=in_call,
            subscribers=IdentityStore(engine),
            control=KamailioCallControl(gateway_rpc),
            clock=clock,
        )
        await gateway_calls.start()
        gateway_events = KamailioCallEvents(config.gateway.events_listen, gateway_rpc, gateway_calls)
    calls = CallHandler(
        store=CallStore(engine),
        events=events,
        devices=devices,
        subscribers=identity.subscribers,
        config=config.calls,
        ice_config=config.ice,
        device_grace=config.presence.grace_period,
        in_call=in_call,
        gateway=gateway_calls,
        sets=call_sets,
        ownership=ownership,
        # Conferences are in the call history, Janus running or not.
        history=(ConferenceHistory(ConferenceStore(engine)),),
        clock=clock,
    )
    shared.on_lost(LEASE_PREFIX, calls.lease_lost)
    await calls.start()
    # Counted at scrape time (one core per process outside the tests).
    metrics.SOURCES.calls_by_state = calls.live_by_state
    metrics.SOURCES.events_retained = events.retained if isinstance(events, MemoryEventLog) else None

    # None unless [tracing] otlp_endpoint is set: OpenTelemetry is not even loaded.
    tracing = traces.start(config.tracing, "wac-core", node)
    server = grpc.aio.server(
        interceptors=[_interceptor(config, identity, hop_key, clock, tracing)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            # gRPC sets SO_REUSEPORT by default, so a second core on the same
            # port bound beside the live one and took half its connections.
            ("grpc.so_reuseport", 0),
        ],
    )
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(
        IdentityServicer(identity, sip_gateway=sip_gateway(config)), server
    )
    session_events = EventsHandler(events, devices)
    events_pb2_grpc.add_EventsServiceServicer_to_server(EventsServicer(session_events), server)
    # wac.internal.v1: served on the same port for the hops that hold the
    # hop key; left out of reflection and health (SERVICE_NAMES), which the
    # front door passes through.
    event_streams = EdgeStreamServicer(session_events, identity.authenticate, _stream_limits(config))
    stream_pb2_grpc.add_EdgeStreamServiceServicer_to_server(event_streams, server)
    presence_pb2_grpc.add_PresenceServiceServicer_to_server(PresenceServicer(presence), server)
    contacts_pb2_grpc.add_ContactsServiceServicer_to_server(ContactsServicer(book), server)
    directory_pb2_grpc.add_DirectoryServiceServicer_to_server(
        DirectoryServicer(directory, connectors=runner, runs=directory_store, google=google), server
    )
    calls_pb2_grpc.add_CallsServiceServicer_to_server(CallsServicer(calls, forwarder), server)
    conferences = await serve_conferences(
        server,
        config=config,
        engine=engine,
        identity=identity,
        events=events,
        devices=devices,
        in_call=in_call,
        bridge=bridge,
        clock=clock,
    )
    chat_gateway: SipMessages | None = None
    if config.gateway.enabled:
        from connectors.sip_messages import SipMessages

        # Chat's messages to numbers: SIP MESSAGE into the gateway's WebSocket.
        chat_gateway = SipMessages(ws_listen=config.gateway.ws_listen, domain=config.gateway.domain)
    chat = await serve_chat(
        server, config=config, engine=engine, identity=identity, events=events, gateway=chat_gateway, clock=clock
    )

    # Ready: the database reachable and migrated, and the gateway answering
    # when it is enabled (core/readiness.py); every service's health follows.
    probes = [("database", database_probe(config.database_url, engine, head_revision()))]
    if gateway_rpc is not None:
        probes.append(("gateway", gateway_probe(gateway_rpc)))
    health_servicer = ReadinessHealth(Readiness(probes), SERVICE_NAMES)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), server)

    try:
        port = server.add_insecure_port(config.core.listen)
    except RuntimeError:
        # grpc.aio raises a bare "Failed to bind"; the port is the useful part.
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {config.core.listen}: address in use or not local")
    # Evaluated before the first Check can arrive: until then grpc's health
    # servicer answers SERVING for "" with no checks, which the edge's /readyz
    # took for ready without a word about the gateway.
    await health_servicer.refresh()
    await server.start()
    if call_address is not None:
        calls.advertise(call_address(port))

    core = Core(
        config=config,
        engine=engine,
        server=server,
        port=port,
        identity=identity,
        events=events,
        devices=devices,
        health=health_servicer,
        shared=shared,
        presence=presence,
        contacts=book,
        hop_key=hop_key,
        event_streams=event_streams,
        gateway_events=gateway_events,
    )
    # Closed last (closers run in reverse): the leases and the heartbeat go
    # once nothing works under them any more.
    core.closers.append(shared.close)
    if tracing is not None:
        # Closed after everything else: the spans of the last calls go out too.
        core.closers.append(functools.partial(asyncio.to_thread, tracing.close))
    core.background.extend(shared_tasks)
    if gateway_rpc is not None:
        core.closers.append(gateway_rpc.close)
    if gateway_registrations is not None:
        # Closed after identity stops (closers run in reverse): no revocation comes later.
        core.closers.append(gateway_registrations.close)
    core.closers.append(identity.stop)
    core.closers.append(presence.stop)
    core.closers.append(calls.stop)
    # Before the calls stop the InCall both share (closers run in reverse).
    core.closers.append(conferences.stop)
    core.closers.append(chat.stop)
    if close_bridge is not None:
        core.closers.append(close_bridge)
    core.closers.append(functools.partial(setattr, metrics.SOURCES, "calls_by_state", None))
    core.closers.append(functools.partial(setattr, metrics.SOURCES, "events_retained", None))
    if forwarder is not None:
        core.closers.append(forwarder.close)
    if gateway_calls is not None and gateway_events is not None:
        # Closers run in reverse: the reports stop (a background task,
        # cancelled first), then their writes finish, then the calls stop.
        core.closers.append(gateway_calls.stop)
        core.background.append(asyncio.create_task(gateway_events.run(), name="gateway-call-events"))
    if google is not None:
        core.closers.append(google.stop)
    core.background.append(asyncio.create_task(runner.run_forever(), name="connector-schedule"))
    core.background.append(asyncio.create_task(_count_directory(directory_store, clock), name="directory-size"))
    core.background.append(asyncio.create_task(health_servicer.run(), name="readiness"))
    core.background.append(asyncio.create_task(_write_status(core, calls), name="status-file"))
    log.info("core listening on %s", config.core.listen.rsplit(":", 1)[0] + f":{port}")
    return core


async def _write_status(core: Core, calls: CallHandler) -> None:
    """This core's part of ``wac status`` (settings/status.py), every few seconds."""
    started = time.time()
    host = core.config.core.listen.rsplit(":", 1)[0]
    # Once: looking the version up scans the installed packages.
    version, database = _version(), _database_name(core.config.database_url)
    while True:
        document = {
            "pid": os.getpid(),
            "time": time.time(),
            "started": started,
            "node": core.node,
            "version": version,
            "listen": f"{host}:{core.port}",
            "database": database,
            "active_calls": calls.live_calls,
            "failed": core.health.failed,
        }
        try:
            await asyncio.to_thread(status.write, core.config.data_dir, "core", document)
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)
        await asyncio.sleep(status.INTERVAL)


def _version() -> str:
    """As ``wac --version`` says it (cli/version.py, which the core may not import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wac")
    except PackageNotFoundError:
        return "0.0.0+checkout"


def _database_name(url: str) -> str:
    """The database's kind and where it is, never its password."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite {parsed.database}"
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
    return f"{parsed.get_backend_name()} {where}"


async def _count_directory(store: DirectoryStore, clock: Clock) -> None:
    """The directory's size for its gauge, counted at start and every
    metrics.DIRECTORY_COUNT_SECONDS; a failed count is retried then."""
    while True:
        try:
            metrics.DIRECTORY_ENTRIES.set(await store.count())
        except Exception as exc:  # an outage: the gauge keeps its last value
            log.debug("directory count failed: %s", exc)
        await clock.sleep(metrics.DIRECTORY_COUNT_SECONDS)


def _interceptor(
    config: Config, identity: IdentityHandler, hop_key: str, clock: Clock, tracing: traces.Tracing | None
) -> CoreInterceptor:
    core = config.core  # the rates' ranges are checked with the configuration
    forwarding = Forwarding(
        hop_key=hop_key, trusted_proxies=frozenset(core.trusted_proxies), header=core.client_address_header.lower()
    )
    return CoreInterceptor(
        identity,
        forwarding=forwarding,
        subscriber_rates=RateTable(rate=core.rate_per_second, burst=core.rate_burst),
        # A rate of 0 leaves API keys unlimited (RateTable then keeps nothing).
        api_key_rates=RateTable(rate=core.api_key_rate_per_second, burst=core.api_key_rate_burst),
        clock=clock.monotonic,
        tracing=tracing,
    )


def _conference_bridge(config: Config) -> tuple[ConferenceBridge, Callable[[], Awaitable[None]] | None]:
    """Janus's rooms when conferences are on (`wac run` turns them off
    for its children when Janus is not installed), else none; and what
    closes the bridge's client."""
    if not config.conferences.enabled:
        return NoBridge(), None
    # The connector (and httpx under it) loads only when conferences are on.
    from connectors.janus import JanusBridge, JanusRooms, RoomSettings
    from settings.januskey import janus_secrets

    secrets = janus_secrets(config)
    rooms = JanusRooms(
        f"http://{config.conferences.janus_api_listen}/janus",
        token_secret=secrets.token,
        room_admin_key=secrets.room_admin,
        settings=RoomSettings(max_participants=config.conferences.max_participants),
    )
    bridge = JanusBridge(rooms)
    return bridge, bridge.close


def _stream_limits(config: Config) -> StreamLimits:
    events = config.events  # ranges checked with the configuration
    return StreamLimits(
        max_attachments=events.max_attachments_per_stream,
        max_streams=events.max_streams_per_peer,
        send_queue=events.stream_send_queue,
        stall_seconds=events.stream_stall_seconds,
    )


def _configured_connectors(config: Config) -> Configured:
    """The [connectors.NAME] sections, checked: a bad one is a ConfigError naming its key."""
    return configured(config.connectors)


def _connectors(
    wanted: Configured,
    directory: DirectoryStore,
    events: EventLog,
    run_leases: RunLeases | None,
    shared: SharedState,
    clock: Clock,
) -> tuple[SyncRunner, GoogleContacts | None]:
    """The LDAP connectors on one runner, and the Google link flow if a
    Google section is configured (its subscribers' connectors join the
    runner as they link)."""
    google: GoogleContacts | None = None

    async def on_failure(connector: Connector, exc: Exception) -> None:
        # Of all failures, only a refused Google grant concerns a subscriber.
        if google is not None:
            await google.connector_failed(connector, exc)

    runner = SyncRunner(directory, wanted.ldap, on_failure=on_failure, sleep=clock.sleep, leases=run_leases)
    if run_leases is not None:
        shared.on_lost(RUN_LEASES, runner.lease_lost)
    if wanted.google is not None:
        linker = google_linker(wanted.google, directory)
        google = GoogleContacts(linker, linker.links, runner, directory, events)
    return runner, google


async def serve(config: Config, *, migrate: bool = True) -> None:
    """Run the core until SIGTERM or SIGINT, then drain and stop.

    One core per data dir: a second one would mark the live core's devices
    offline and run the same call timers. The lock is held until this
    process ends, however it ends. ``migrate=False``: the caller brought
    the schema up to date (``wac core`` does, in a child process).
    """
    lock = datadir.lock(config.data_dir, datadir.CORE_LOCK, what="core")
    core = await build_core(config, migrate=migrate)
    metrics_listener = metrics.listen(config.core.metrics_listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    collector = asyncio.create_task(collector_tend(), name="gc")
    await stop.wait()
    collector.cancel()
    log.info("core stopping: draining calls for up to %.0f s", config.core.shutdown_grace)
    await core.stop()
    if metrics_listener is not None:
        metrics_listener.close()
    lock.close()
