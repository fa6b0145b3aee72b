"""Configuration: one TOML file, every key overridable from the environment.

A key ``[section] key`` is overridden by ``WAC_SECTION_KEY`` (``data_dir`` by
``WAC_DATA_DIR``). Lists in the environment are comma-separated. Nothing is
required: the defaults run everything on one machine.

Each section is read by ``settings.fields.load_section``: what a key accepts
is declared beside it with ``key(...)``, and a mistake is named
``[section] key: reason``. The ``[connectors.NAME]`` tables are kept as
given here and read the same way by ``settings.connectors`` when connectors
run.
"""

from __future__ import annotations

import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from settings import checks
from settings.fields import ConfigError, Invalid, key, load_section


@dataclass(frozen=True)
class CoreConfig:
    listen: str = "127.0.0.1:50051"
    # Empty: SQLite in the data directory. Otherwise an SQLAlchemy async URL,
    # e.g. postgresql+asyncpg://wac@127.0.0.1/wac.
    database_url: str = ""
    shutdown_grace: float = 5.0
    # Trusted hops (the WAPI edge, Envoy) pass the browser's address in this
    # metadata key; login throttling per client address uses it.
    client_address_header: str = "x-forwarded-for"
    # The hop key: the API key (scope "hop") wac's own hops present to the
    # core and to each other (StreamEvents, x-wac-hop). Empty: the file
    # hop.key in data_dir, which the core creates (0600) on start. Set it
    # (`wac admin apikey create hop --scope hop`) when the core and the edge
    # or Envoy run on different machines.
    hop_key: str = ""
    # Peer addresses (exact IPs) whose client_address_header is believed
    # without the hop key. Anyone else's forwarded address is ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Token bucket per caller on native gRPC (a subscriber session, an API
    # key, or the peer address on public methods): sustained calls per
    # second and burst; beyond: RESOURCE_EXHAUSTED with a retry delay.
    # The hop key is exempt (the edge limits each socket itself).
    rate_per_second: float = key(50.0, between=(0.001, 10_000_000))
    rate_burst: int = key(100, between=(1, 10_000_000))
    # The same for API keys (operator systems, which may verify a token per
    # request of their own); 0: API keys are not limited.
    api_key_rate_per_second: float = key(0.0, between=(0, 10_000_000))
    api_key_rate_burst: int = key(1000, between=(1, 10_000_000))
    # Prometheus's /metrics of the core (core/metrics.py), served by `wac
    # core` alone (not the tests' in-process cores). Empty: not served.
    metrics_listen: str = key("127.0.0.1:9464", check=checks.optional_listen_address)


# The smallest [edge] send_queue_bytes: any one event (a 32 KiB offer in its
# JSON) must fit, or a resume could never get past it.
MIN_SEND_QUEUE_BYTES = 65536


@dataclass(frozen=True)
class EdgeConfig:
    listen: str = key("127.0.0.1:8081", check=checks.listen_address)
    core_address: str = "127.0.0.1:50051"
    max_message_bytes: int = key(65536, at_least=1024)
    max_batch: int = key(20, between=(1, 1000))
    rate_per_second: float = key(50.0, positive=True)
    rate_burst: int = key(100, at_least=1)
    flood_close_after: int = key(200, at_least=1)
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    send_queue: int = key(256, at_least=1)
    long_poll_seconds: float = key(25.0, positive=True)
    # The WAPI's HTTP side (POST /wapi/http, long polls, /sdk/ and the demo),
    # beside the WebSocket on `listen`; Envoy routes to both.
    http_listen: str = key("127.0.0.1:8082", check=checks.listen_address)
    # Deadline of every unary call to the core, in seconds (> 0): a core that
    # is down or stuck answers UNAVAILABLE or DEADLINE_EXCEEDED, never a hang.
    call_deadline: float = key(10.0, positive=True)
    # Frames executing at once on one WebSocket (>= 1); reading waits beyond.
    max_inflight: int = key(32, at_least=1)
    # Where /sdk/ and / are served from; empty: clients/js/dist and
    # clients/js/demo of this checkout.
    sdk_dir: str = ""
    demo_dir: str = ""
    # WAPI connections (open WebSockets plus HTTP fallback requests being
    # answered) one client address may hold at once (>= 1); beyond: the
    # upgrade or request is refused with 429 and a JSON error.
    max_connections_per_address: int = key(64, at_least=1)
    # Seconds a WebSocket may stay open without authenticating (a Login or
    # RefreshSession, or a call accepted with its access token) (> 0);
    # then it is closed with 4401.
    auth_deadline: float = key(10.0, positive=True)
    # Bytes (UTF-8) of outgoing messages queued for one slow reader (>= 65536,
    # so that any one event fits); beyond, as beyond send_queue messages:
    # close 4408.
    send_queue_bytes: int = key(1048576, at_least=MIN_SEND_QUEUE_BYTES)
    # Seconds an HTTP connection on http_listen may take to send a request's
    # headers (and its body), counted from its opening or its previous
    # answer; an idle keep-alive connection is closed after it too (> 0).
    header_timeout: float = key(10.0, positive=True)
    # Browser Origins allowed to use the WAPI (WebSocket upgrade and HTTP
    # fallback); requests without Origin (non-browser clients) always pass.
    # Empty: the front door's own origin (http://127.0.0.1:<envoy port>,
    # http://localhost:<envoy port>) and the edge's http_listen origin.
    # "*" allows any. Others are refused with 403 and a JSON error.
    allowed_origins: tuple[str, ...] = ()
    # Prometheus's /metrics of the edge (edges/wapi/metrics.py), served by
    # `wac edge`. Empty: not served.
    metrics_listen: str = key("127.0.0.1:9465", check=checks.optional_listen_address)


@dataclass(frozen=True)
class EnvoyConfig:
    listen: str = key("127.0.0.1:8080", check=checks.address)
    # 0: Envoy's admin interface (it can stop Envoy and dump its state) is a
    # unix socket, envoy-admin.sock in the data dir, mode 0600: only wac's
    # user reaches it. A port opens it on 127.0.0.1 to every local user.
    admin_port: int = key(0, between=(0, 65535))
    log_level: str = key("warning", choices=checks.LOG_LEVELS)
    # Ceiling on open client connections (each WebSocket is one); `wac envoy`
    # lowers it further to fit Envoy's file-descriptor limit (half of
    # RLIMIT_NOFILE less 256), so a flood meets refusals, not EMFILE.
    max_connections: int = 50000
    # New WebSockets (upgrade requests) one client address may open per
    # minute at the front door; beyond: 429 until the minute is over. 0: no limit.
    upgrades_per_address: int = 120
    # Envoy's worker threads. 0: chosen by what Envoy fronts: 1 for one
    # node's core and edge (`wac run`, `wac envoy`; cli/envoy.NODE_WORKERS),
    # one per CPU for `wac cluster`'s several.
    workers: int = key(0, at_least=0)


@dataclass(frozen=True)
class IdentityConfig:
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    # Seconds during which the refresh token just replaced is still accepted
    # (once more rotating the session) instead of counting as stolen: a
    # client whose refresh answer was lost with its connection retries.
    refresh_reuse_grace: float = 10.0
    # Signing keys are rotated this often; old keys keep verifying until the
    # last token they signed has expired.
    key_rotation_days: int = 30
    issuer: str = "wac"
    # 32 random bytes in base64 (openssl rand -base64 32), best given as
    # WAC_IDENTITY_KEY_SEAL_SECRET: the private signing keys are stored
    # sealed under it (AES-256-GCM) and clear ones are sealed at the next
    # start. Empty: stored in clear. Once sealed, the core does not start
    # without the same secret. Never logged (nor in this dataclass's repr).
    key_seal_secret: str = key("", secret=True)
    # Login throttling, per (username, client address) pair and per client
    # address: after `throttle_after` failures in `throttle_window` seconds
    # each further attempt waits `throttle_delay` (doubling, at most 60 s)
    # or is refused with RESOURCE_EXHAUSTED; after `lock_after` failures the
    # pair (or address) is locked for `lock_seconds`. Ranges: see their key(between=...).
    throttle_after: int = key(3, between=(1, 10_000))
    throttle_delay: float = key(1.0, between=(0.001, 3600))
    lock_after: int = key(10, between=(1, 100_000))
    lock_seconds: int = key(300, between=(1, 604_800))
    throttle_window: int = key(900, between=(1, 604_800))
    # Failures for a username from any address only slow its logins (the
    # same doubling delay, at most this many seconds, 0: off) and never
    # refuse them: a stranger cannot lock its owner out.
    username_max_delay: float = key(5.0, between=(0, 300))
    # The cost of argon2id, passwords' hash: RFC 9106's second recommended
    # profile (t=3, 64 MiB, 4 lanes) by default. A hash keeps the cost it was
    # made with, so a change applies to passwords set after it. Lower only
    # where passwords need no protection (the test suite).
    argon2_time_cost: int = key(3, between=(1, 100))
    argon2_memory_kib: int = key(65536, between=(64, 4_194_304))
    argon2_parallelism: int = key(4, between=(1, 64))
    # argon2 checks (64 MiB each by default) running at once in this core (1..256);
    # logins waiting for one (0..10000); logins under way per client
    # address (1..1000; one per username and address), each with
    # login_queue_per_address more waiting in turn (0..100000). Beyond any of
    # these bounds: RESOURCE_EXHAUSTED with a retry delay, at once.
    max_password_checks: int = key(4, between=(1, 256))
    password_check_queue: int = key(64, between=(0, 10_000))
    max_logins_per_address: int = key(2, between=(1, 1000))
    login_queue_per_address: int = key(8, between=(0, 100_000))
    # Seconds a session must wait between two rotations of its refresh
    # token (0: no limit); a retry answered within refresh_reuse_grace
    # does not rotate and is not limited. Beyond: RESOURCE_EXHAUSTED.
    refresh_min_interval: float = key(1.0, between=(0, 3600))
    revocation_poll: float = 0.5


@dataclass(frozen=True)
class PresenceConfig:
    visibility: str = key("contacts", choices=("contacts", "domain"))
    grace_period: float = 30.0
    coalesce_ms: int = 250
    max_note: int = 256


@dataclass(frozen=True)
class CallsConfig:
    ring_timeout: float = 60.0
    busy_on_busy: bool = False
    max_sdp_bytes: int = 32768
    max_candidates: int = 200
    # Bounds against call bombing, far above what a softphone does: live
    # (ringing or active) calls one subscriber has placed, and calls ringing
    # at one callee at once. Beyond them CreateCall is RESOURCE_EXHAUSTED.
    max_calls_per_caller: int = key(4, between=(1, 1000))
    max_ringing_per_callee: int = key(8, between=(1, 1000))


@dataclass(frozen=True)
class EventsConfig:
    retention: float = 120.0
    max_events_per_session: int = 10000
    # Bounds of the edge-internal StreamEvents (hop key only): sessions
    # attached to one stream, streams open at once per caller, deliveries
    # waiting for a stream, and seconds a full stream may go without
    # taking any before it is ended with RESOURCE_EXHAUSTED. The queue holds
    # one event to every session a stream may carry: a presence change seen
    # by all of them is queued whole instead of making the overflow read
    # their logs again (4096 made 904 of 5,000 sessions do so per change).
    max_attachments_per_stream: int = key(20000, between=(1, 1_000_000))
    max_streams_per_peer: int = key(8, between=(1, 10_000))
    stream_send_queue: int = key(20000, between=(1, 1_000_000))
    stream_stall_seconds: float = key(30.0, between=(0.01, 3600))


@dataclass(frozen=True)
class PhonesConfig:
    default_region: str = "ES"


@dataclass(frozen=True)
class IceConfig:
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = ""
    turn_ttl: int = 86400


@dataclass(frozen=True)
class GatewayConfig:
    """Kamailio (SIP over WebSocket, RFC 7118) and rtpengine: see gateway/README.md."""

    # `wac run` starts `wac gateway` and `wac rtpengine` when the programs
    # are installed (deps/debian.txt); without them it runs without the gateway.
    # While enabled, the core keeps the gateway's API key (scopes
    # identity.verify, numbers.lookup and messages.deliver) in gateway.key in
    # the data dir, 0600.
    enabled: bool = True
    # The SIP domain: subscribers register as sip:USERNAME@domain, and the
    # realm of the gateway's Bearer challenges. An IP literal works on
    # loopback without DNS (Kamailio, sipp and browsers never resolve it).
    domain: str = key("127.0.0.1", check=checks.sip_domain)
    # Kamailio's WebSocket listener; browsers reach it through Envoy's /sip.
    ws_listen: str = key("127.0.0.1:8088", check=checks.ipv4_address)
    # The trunk side: SIP over UDP and TCP.
    sip_listen: str = key("127.0.0.1:5060", check=checks.ipv4_address)
    # Where calls to numbers go (sip:IPv4[:port][;transport=udp|tcp]); calls
    # from this host and port over UDP are the trunk's (a trunk sends from
    # the port it listens on), and with ;transport=tcp every TCP request
    # from this host.
    trunk_uri: str = key("sip:127.0.0.1:5090", check=checks.trunk_uri)
    # rtpengine's control (ng protocol) address.
    rtpengine: str = key("udp:127.0.0.1:22222", check=checks.rtpengine)
    # The address rtpengine puts in SDP and receives media on.
    media_address: str = key("127.0.0.1", check=checks.ipv4)
    # RTP/RTCP ports rtpengine uses (below Linux's ephemeral range).
    rtp_port_min: int = key(20000, between=(1024, 65_535))
    rtp_port_max: int = key(29999, between=(1024, 65_535))
    # Kamailio's shared memory in MB (its 64 MB default ran out near 800 calls/s).
    shm_mb: int = key(256, between=(16, 65_536))
    # Kamailio's SIP worker processes per UDP listener (TCP and WebSocket
    # connections are served by as many TCP workers).
    workers: int = key(4, between=(1, 256))
    # Kamailio's JSON-RPC over HTTP (POST /RPC), for wac's vendor connector.
    # Loopback only: it can end calls and read registrations.
    jsonrpc_listen: str = key("127.0.0.1:8089", check=checks.loopback("it can end calls"))
    # Kamailio's call events (evapi: a JSON netstring per call answered,
    # ended or failed), which the core reads for the call history and
    # presence. Loopback only: they name who calls whom.
    events_listen: str = key("127.0.0.1:8090", check=checks.loopback("it tells who calls whom"))
    # The SAPI the gateway asks (identity:verify, identity:authorize,
    # phoneNumbers/{n}). Empty: the front door, http://127.0.0.1:<[envoy] listen port>.
    sapi_url: str = key("", check=checks.sapi_url)
    # The gateway's API key towards the SAPI. Empty: the file gateway.key in
    # data_dir, which the core creates (0600) on start. Set it (`wac admin
    # apikey create sip-gateway --scope identity.verify --scope
    # numbers.lookup --scope messages.deliver`) when several cores share
    # one database: each would
    # otherwise make its own and end the others'.
    api_key: str = key("", check=checks.api_key, secret=True)
    # The gateway's WebSocket URL announced to clients at login (Session
    # sip_gateway.url). Empty: clients derive ws(s)://<the host they reached
    # wac on>/sip from their own WAPI URL, right behind any public name.
    public_url: str = ""

    def __post_init__(self) -> None:
        listeners = {
            "ws_listen": self.ws_listen,
            "sip_listen": self.sip_listen,
            "jsonrpc_listen": self.jsonrpc_listen,
            "events_listen": self.events_listen,
        }
        checks.distinct_ports(listeners)
        checks.rtp_ports((self.rtp_port_min, self.rtp_port_max))


@dataclass(frozen=True)
class ClusterConfig:
    """For a cluster (issue Scale-out, in progress): the state cores share."""

    # Empty: embedded, one process keeps it all in memory. Otherwise Redis
    # (redis://, rediss:// or unix://), the same URL for every node. Never
    # echoed: it may carry a password.
    redis_url: str = key("", check=checks.redis_url, secret=True)
    # This node's name in leases and heartbeats, unique in the cluster
    # ([A-Za-z0-9._-], at most 64). Empty: the host name and process id.
    node_id: str = key("", check=checks.node_id)
    # Seconds a lease (ownership of a call, a presence subject, a
    # connector's run) outlives a node that stopped renewing it: how long
    # a dead node's work waits before another node takes it over.
    lease_seconds: float = key(5.0, between=(1, 60))
    # Seconds between renewals; less than half of lease_seconds, so that a
    # renewal delayed by one beat still arrives in time.
    heartbeat_seconds: float = key(1.0, between=(0.1, 10))
    # host:port at which the other cores reach this core's gRPC (a call's
    # inputs are forwarded to the core that owns it). Empty: core.listen
    # with its bound port, refused at start if that host is a wildcard
    # (0.0.0.0, ::) while redis_url is set.
    advertise: str = key("", check=lambda value: value and checks.address(value))

    def __post_init__(self) -> None:
        if not self.heartbeat_seconds < self.lease_seconds / 2:
            raise Invalid(
                f"must be less than half of lease_seconds ({self.lease_seconds:g}), got {self.heartbeat_seconds:g}",
                "heartbeat_seconds",
            )


@dataclass(frozen=True)
class ConferencesConfig:
    """Multi-party conferences through Janus's VideoRoom (cli/janus.py)."""

    # Janus runs under `wac run` when it is installed; off, or without it,
    # ConferencesService answers that conferences are off.
    enabled: bool = True
    # Janus's WebSocket API (subprotocol janus-protocol), which browsers
    # reach through the front door at /janus; loopback only.
    janus_ws_listen: str = key("127.0.0.1:8188", check=checks.loopback("browsers reach Janus through /janus"))
    # Janus's HTTP API, where the core creates and ends rooms; loopback only.
    janus_api_listen: str = key("127.0.0.1:8187", check=checks.loopback("only the core calls it"))
    # The UDP ports of Janus's media (RTP and RTCP, one per stream).
    rtp_port_min: int = key(40000, between=(1024, 65_535))
    rtp_port_max: int = key(44999, between=(1024, 65_535))
    # The network interfaces (or address prefixes) Janus gathers ICE
    # candidates on, comma-separated: "lo" serves this machine's browsers;
    # a deployment names its interface ("eth0") and its public_address.
    ice_interfaces: str = key("lo", check=checks.ice_interfaces)
    # The public IPv4 address of a Janus behind a 1:1 NAT (a cloud VM): put
    # in its candidates instead of the private one. Empty: none.
    public_address: str = key("", check=lambda value: value and checks.ipv4(value))
    # A STUN server (host:port) Janus asks for its public address. Empty: none.
    stun_server: str = key("", check=lambda value: value and checks.address(value))
    # Publishers one room holds at most (Janus's "publishers").
    max_participants: int = key(16, between=(2, 100))
    # Seconds a conference's room may stay empty (from its creation, then
    # from its last leave) before the conference ends by itself and its
    # room is destroyed; 0: never (its creator or an operator ends it).
    idle_timeout: float = key(300.0, between=(0, 604_800))
    # The secret Janus's tokens are signed with and its rooms administered
    # by; the same on every node in a cluster. Empty: janus.key in the data
    # dir, made at the first start. Never echoed.
    janus_secret: str = key("", secret=True, secret_file=True)

    def __post_init__(self) -> None:
        checks.rtp_ports((self.rtp_port_min, self.rtp_port_max))
        checks.distinct_ports({"janus_ws_listen": self.janus_ws_listen, "janus_api_listen": self.janus_api_listen})


@dataclass(frozen=True)
class MessagesConfig:
    """Chat (MessagesService, core/chat/)."""

    # The longest text of one message, in bytes of UTF-8.
    max_text_bytes: int = key(4096, between=(1, 1_048_576))
    # Seconds a message is kept before it is purged (conversations and read
    # state stay); 0: for ever.
    retention: float = key(0.0, between=(0, 3_153_600_000))


@dataclass(frozen=True)
class TracingConfig:
    """OpenTelemetry traces of the core, the edge and Envoy (settings/traces.py)."""

    # Empty (the default): no spans are made or exported, and OpenTelemetry
    # is not even loaded. Otherwise the OTLP/gRPC collector every process
    # exports its spans to: http://host:port, or https:// for TLS.
    otlp_endpoint: str = key("", check=checks.otlp_endpoint)
    # The fraction of new traces kept (0 to 1); a request that arrives
    # with a W3C traceparent follows its caller's sampled flag.
    sample_ratio: float = key(1.0, between=(0, 1))


DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "user": ("call.audio", "call.video", "presence.publish", "contacts.directory"),
    "pstn": ("call.pstn", "message.pstn"),
    "admin": ("admin",),
}


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("var")
    core: CoreConfig = field(default_factory=CoreConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    envoy: EnvoyConfig = field(default_factory=EnvoyConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    calls: CallsConfig = field(default_factory=CallsConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    phones: PhonesConfig = field(default_factory=PhonesConfig)
    ice: IceConfig = field(default_factory=IceConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    conferences: ConferencesConfig = field(default_factory=ConferencesConfig)
    messages: MessagesConfig = field(default_factory=MessagesConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    # Role name -> permissions. New subscribers get the "user" role.
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    # Connector name -> its table, validated by the connectors package.
    connectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # rtpengine and Janus on one machine: a shared port would fail one
        # call's or one room's media now and then, far from any message.
        gateway, rooms = self.gateway, self.conferences
        if (
            gateway.enabled
            and rooms.enabled
            and gateway.rtp_port_min <= rooms.rtp_port_max
            and rooms.rtp_port_min <= gateway.rtp_port_max
        ):
            raise ConfigError(
                f"[conferences] rtp_port_min-rtp_port_max ({rooms.rtp_port_min}-{rooms.rtp_port_max}) overlaps "
                f"[gateway]'s ({gateway.rtp_port_min}-{gateway.rtp_port_max}): Janus and rtpengine need ports of "
                "their own"
            )

    @property
    def database_url(self) -> str:
        return self.core.database_url or sqlite_url(self.data_dir)


def sqlite_url(data_dir: Path) -> str:
    """The default database: one SQLite file in the data directory."""
    return f"sqlite+aiosqlite:///{(data_dir / 'wac.sqlite3').resolve()}"


SECTIONS: dict[str, type] = {
    "core": CoreConfig,
    "edge": EdgeConfig,
    "envoy": EnvoyConfig,
    "identity": IdentityConfig,
    "presence": PresenceConfig,
    "calls": CallsConfig,
    "events": EventsConfig,
    "phones": PhonesConfig,
    "ice": IceConfig,
    "gateway": GatewayConfig,
    "cluster": ClusterConfig,
    "conferences": ConferencesConfig,
    "messages": MessagesConfig,
    "tracing": TracingConfig,
}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (``--config``, else ``WAC_CONFIG``, else none) and the environment."""
    env = os.environ if env is None else env
    path = path or env.get("WAC_CONFIG") or None
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            # TOML is UTF-8 by definition; name the spot, not the codec's internals.
            raise ConfigError(f"config file {path} is not valid UTF-8 (byte offset {exc.start})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    allowed = {*SECTIONS, "data_dir", "roles", "connectors"}
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {
        name: load_section(cls, raw.get(name, {}), name, env=env, env_prefix=name) for name, cls in SECTIONS.items()
    }
    values["data_dir"] = Path(env.get("WAC_DATA_DIR") or raw.get("data_dir") or "var")
    roles = dict(DEFAULT_ROLES)
    for role, table in raw.get("roles", {}).items():
        perms = table.get("permissions") if isinstance(table, dict) else None
        if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
            raise ConfigError(f"[roles.{role}] permissions: expected a list of strings")
        roles[role] = tuple(perms)
    values["roles"] = types.MappingProxyType(roles)
    values["connectors"] = types.MappingProxyType(dict(raw.get("connectors", {})))
    return Config(**values)
