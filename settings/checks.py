"""Checks of single configuration values that a type and bounds do not say.

Each takes the coerced value and returns it (normalised where said) or
raises ``Invalid`` with the reason. The sections declare them
(``key(check=...)``); the renderers of Envoy's and Kamailio's configurations
call the same ones on their arguments, as a guard for callers that did not go
through the configuration.

Values that land in Kamailio's script are matched whole against patterns
with no quote, backslash, space or newline in them; host names in Envoy's
YAML land unquoted, hence the same care.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from settings.fields import Invalid

# Host names and IP literals only: the value lands unquoted in YAML.
_HOST = re.compile(r"^[A-Za-z0-9._:-]+$")
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_TRUNK_URI = re.compile(r"^sip:(?P<host>[0-9.]+)(?::(?P<port>[0-9]{1,5}))?(?P<params>(?:;transport=(?:udp|tcp))?)$")
_SAPI_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~-]+)*$")
_RTPENGINE = re.compile(r"^udp:(?P<host>[0-9.]+):(?P<port>[0-9]{1,5})$")
# An API key as wac makes them (URL-safe base64 with a prefix).
_API_KEY = re.compile(r"^[A-Za-z0-9._~+/=-]{16,512}$")

_REDIS_SCHEMES = ("redis", "rediss", "unix")
_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

_COUNTS = {2: "two", 3: "three", 4: "four"}

LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")


def port(value: int) -> int:
    if not 0 < value < 65536:
        raise Invalid(f"must be a TCP port (1-65535), got {value}")
    return value


def host(value: str) -> str:
    if not _HOST.match(value):
        raise Invalid(f"must be a host name or IP address, got {value!r}")
    return value


def split_address(address: str, *, any_port: bool = False) -> tuple[str, int]:
    """ "host:port" (or "[v6]:port") as (host, port), both halves checked;
    with ``any_port``, port 0 (a listener on any free port) too."""
    host_text, sep, port_text = address.rpartition(":")
    host_text = host_text.removeprefix("[").removesuffix("]")
    if not sep or not host_text or not port_text.isdigit() or not _HOST.match(host_text):
        raise Invalid(f"must be host:port, got {address!r}")
    number = int(port_text)
    if not (any_port and number == 0):
        port(number)
    return host_text, number


def address(value: str) -> str:
    """A listening or connecting address, host:port."""
    split_address(value)
    return value


def listen_address(value: str) -> str:
    """A listening address, host:port, port 0 meaning any free port."""
    split_address(value, any_port=True)
    return value


def optional_listen_address(value: str) -> str:
    """A listening address as listen_address, or empty: not listening."""
    return listen_address(value) if value else value


def ipv4_address(value: str) -> str:
    """host:port with an IPv4 host: Kamailio's listeners."""
    host_text, _port = split_address(value)
    if not is_ipv4(host_text):
        raise Invalid(f"must be an IPv4 address and port, got {host_text!r}")
    return value


def loopback(reason: str) -> Callable[[str], str]:
    """An IPv4 host:port on loopback; ``reason`` says why it must be."""

    def check(value: str) -> str:
        ipv4_address(value)
        host_text, _port = split_address(value)
        if not ipaddress.ip_address(host_text).is_loopback:
            raise Invalid(f"must be a loopback address ({reason}), got {host_text}")
        return value

    return check


def distinct_ports(named: dict[str, str]) -> None:
    """Listeners of one program need a port each."""
    ports = {split_address(value)[1] for value in named.values()}
    if len(ports) != len(named):
        names = list(named)
        count = _COUNTS.get(len(named), str(len(named)))
        raise Invalid(f"{', '.join(names[:-1])} and {names[-1]} need {count} different ports")


def rtp_ports(ports: tuple[int, int]) -> tuple[int, int]:
    """rtpengine's media port range (min, max)."""
    low, high = ports
    if not 1024 <= low < high <= 65535:
        raise Invalid(f"rtp_port_min < rtp_port_max within 1024-65535, got {low}-{high}")
    return ports


def ipv4(value: str) -> str:
    if not is_ipv4(value):
        raise Invalid(f"must be an IPv4 address, got {value!r}")
    return value


def sip_domain(value: str) -> str:
    if not _DOMAIN.match(value):
        raise Invalid(f"must be a host name or IPv4 address, got {value!r}")
    return value


@dataclass(frozen=True)
class Trunk:
    host: str
    port: int
    uri: str
    # udp, or tcp when the URI says ;transport=tcp.
    transport: str = "udp"

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


def parse_trunk(uri: str) -> Trunk:
    """``sip:IP[:port][;transport=udp|tcp]``: an IP, since calls from the trunk are recognised by address."""
    match = _TRUNK_URI.match(uri)
    if match is None or not is_ipv4(match["host"]):
        raise Invalid(f"must be sip:IPv4[:port][;transport=udp|tcp], got {uri!r}")
    number = int(match["port"] or 5060)
    if not 0 < number < 65536:
        raise Invalid(f"port out of range in {uri!r}")
    return Trunk(match["host"], number, uri, "tcp" if match["params"] else "udp")


def trunk_uri(value: str) -> str:
    parse_trunk(value)
    return value


def split_rtpengine(value: str) -> tuple[str, int]:
    """rtpengine's control address, ``udp:IPv4:port``, as (host, port)."""
    match = _RTPENGINE.match(value)
    if match is None or not is_ipv4(match["host"]):
        raise Invalid(f"must be udp:IPv4:port, got {value!r}")
    return match["host"], port(int(match["port"]))


def rtpengine(value: str) -> str:
    split_rtpengine(value)
    return value


def sapi_url(value: str) -> str:
    """Where the gateway reaches the SAPI; empty: the front door."""
    if value and not _SAPI_URL.match(value):
        raise Invalid(f"must be http(s)://host[:port][/path] without a trailing slash, got {value!r}")
    return value


def api_key(value: str) -> str:
    """Empty (the file in the data dir), or an API key as wac makes them. Never echoed."""
    if value and not _API_KEY.match(value):
        raise Invalid("is not an API key (`wac admin apikey create` makes them)")
    return value


def redis_url(value: str) -> str:
    """Empty (embedded), or where the cluster's Redis is. Only the scheme is
    echoed: the URL may carry a password."""
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in _REDIS_SCHEMES:
        raise Invalid(f"must be a redis://, rediss:// or unix:// URL, got scheme {parts.scheme!r}")
    if parts.scheme == "unix":
        if not parts.path:
            raise Invalid("must name the socket's path (unix:///run/redis/redis.sock)")
        return value
    try:
        parts.port  # noqa: B018 (it parses the port)
    except ValueError:
        raise Invalid("has a port that is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise Invalid(f"must name a host ({parts.scheme}://host[:port][/db])")
    return value


def node_id(value: str) -> str:
    """Empty (derived at start), or a node's name: it lands in Redis keys and values."""
    if value and not _NODE_ID.fullmatch(value):
        raise Invalid(f"must be 1 to 64 of A-Z a-z 0-9 . _ -, got {value!r}")
    return value


def https_url(value: str) -> str:
    """An https URL; plain http only to this machine (a local proxy or
    stand-in), as OAuth 2.0 for loopback addresses allows."""
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return value
    raise Invalid(f"must be an https URL (http only on loopback), got {value!r}")


_INTERFACE_ITEM = re.compile(r"[A-Za-z0-9.:_-]{1,64}")


def ice_interfaces(value: str) -> str:
    """Janus's ice_enforce_list: interface names or address prefixes,
    comma-separated ("lo", "eth0", "eth0,192.168.")."""
    items = [item.strip() for item in value.split(",")]
    if not value or not all(_INTERFACE_ITEM.fullmatch(item) for item in items):
        raise Invalid(f'must be interface names or address prefixes, comma-separated ("lo", "eth0"), got {value!r}')
    return ",".join(items)


def otlp_endpoint(value: str) -> str:
    """Empty (traces off), or an OTLP/gRPC collector: http://host:port
    (plaintext) or https://host:port (TLS), no path."""
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(f"must be an OTLP/gRPC collector's http://host:port or https://host:port, got {value!r}")
    try:
        port = parts.port
    except ValueError:
        raise Invalid("has a port that is not a number from 0 to 65535") from None
    if port is None or port == 0:
        raise Invalid(f"must name the collector's port (4317 by convention), got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise Invalid(f"must be http(s)://host:port alone (OTLP/gRPC has no path), got {value!r}")
    return value


def region(value: str) -> str:
    """A region of libphonenumber, upper-cased."""
    # Imported here: only a connector's section sets a region, and every
    # process reads the configuration (1.2 MiB resident in each otherwise).
    import phonenumbers

    upper = value.upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise Invalid(f"must be a two-letter region like ES or GB, got {upper!r}")
    return upper


def is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def _is_loopback(host_text: str | None) -> bool:
    if host_text == "localhost":
        return True
    try:
        return ipaddress.ip_address(host_text or "").is_loopback
    except ValueError:
        return False


def guard(what: str, check: Callable[[Any], Any], value: Any) -> Any:
    """``check(value)`` for a renderer's argument: ValueError naming it."""
    try:
        return check(value)
    except Invalid as exc:
        raise ValueError(f"{what}: {exc.reason}") from None
