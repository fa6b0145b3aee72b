"""Connector configuration: the ``[connectors.NAME]`` sections of wac.toml.

Each section has ``type = "ldap"`` or ``type = "google"``. Parsing checks
every key and fails with a ``ConfigError`` naming it
("connectors.corp.page_size: must be an integer from 1 to 10000, got 0");
unknown keys are errors too, so a typo never passes for a default.

An OpenLDAP directory needs little more than its address::

    [connectors.corp]
    type = "ldap"
    urls = ["ldaps://ldap1.example.org", "ldaps://ldap2.example.org"]
    bind_dn = "cn=wac,ou=services,dc=example,dc=org"
    bind_password_file = "/etc/wac/ldap-password"
    base_dn = "ou=people,dc=example,dc=org"
    default_region = "ES"
    interval = "15m"
    full_every = "1d"

Active Directory names things differently; map them, and follow changes by
uSNChanged, which every domain controller keeps::

    [connectors.ad]
    type = "ldap"
    urls = ["ldaps://dc1.corp.example.com"]
    bind_dn = "CN=wac,OU=Service Accounts,DC=corp,DC=example,DC=com"
    bind_password_file = "/etc/wac/ad-password"
    base_dn = "OU=Staff,DC=corp,DC=example,DC=com"
    # People whose account is enabled (bit 2 of userAccountControl is "disabled").
    filter = "(&(objectCategory=person)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))"
    change_attribute = "uSNChanged"
    page_size = 1000          # AD's MaxPageSize

    [connectors.ad.attributes]
    id = "objectGUID"         # binary; stored in its usual text form
    display = ["displayName", "cn", "sAMAccountName"]
    phones = ["telephoneNumber", "mobile", "ipPhone", "homePhone"]
    email = ["mail", "userPrincipalName"]
    department = ["department"]

uSNChanged is per domain controller: list one controller in ``urls``, or
accept that a fail-over means one full run (a cursor from another DC finds
nothing newer and the next periodic full run repairs it).

Google contacts are one section for every subscriber who links an account::

    [connectors.google]
    type = "google"
    client_id = "1234.apps.googleusercontent.com"
    client_secret_file = "/etc/wac/google-client-secret"
    redirect_uri = "https://wac.example.org/oauth2/google/callback"
    token_key_file = "/etc/wac/google-token-key"   # 32 random bytes, base64
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import phonenumbers

from connectors.errors import ConfigError
from core.directory.connector import DAY

GOOGLE_AUTHORIZATION_ENDPOINT = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
GOOGLE_REVOKE_ENDPOINT = "https://oauth2.googleapis.com/revoke"
GOOGLE_PEOPLE_ENDPOINT = "https://people.googleapis.com/v1/people/me/connections"
GOOGLE_CONTACTS_SCOPE = "https://www.googleapis.com/auth/contacts.readonly"

CHANGE_ATTRIBUTES = ("modifyTimestamp", "entryUSN", "uSNChanged")


@dataclass(frozen=True, slots=True)
class AttributeMap:
    """Which LDAP attributes make a directory entry; the first present wins
    where there is a list (all of them, for phones and e-mails)."""

    id: str = "entryUUID"
    display: tuple[str, ...] = ("displayName", "cn")
    given: str = "givenName"
    family: str = "sn"
    phones: tuple[str, ...] = ("telephoneNumber", "mobile", "homePhone")
    email: tuple[str, ...] = ("mail",)
    department: tuple[str, ...] = ("ou", "departmentNumber")


@dataclass(frozen=True, slots=True)
class LdapConfig:
    name: str
    urls: tuple[str, ...]
    base_dn: str
    bind_dn: str = ""  # "" binds anonymously
    bind_password: str = field(default="", repr=False)
    start_tls: bool = False
    use_ssl: bool = False
    ca_file: str = ""
    filter: str = "(objectClass=inetOrgPerson)"
    page_size: int = 500
    attributes: AttributeMap = AttributeMap()
    change_attribute: str = "modifyTimestamp"
    default_region: str = "ES"
    require_phone: bool = True
    timeout: float = 30.0
    interval: float = 900.0
    full_every: float | None = DAY


@dataclass(frozen=True, slots=True)
class GoogleConfig:
    name: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    token_key: bytes = field(repr=False)  # AES-256 key sealing tokens at rest
    authorization_endpoint: str = GOOGLE_AUTHORIZATION_ENDPOINT
    token_endpoint: str = GOOGLE_TOKEN_ENDPOINT
    revoke_endpoint: str = GOOGLE_REVOKE_ENDPOINT
    people_endpoint: str = GOOGLE_PEOPLE_ENDPOINT
    scope: str = GOOGLE_CONTACTS_SCOPE
    page_size: int = 1000
    default_region: str = "ES"
    require_phone: bool = True
    timeout: float = 30.0
    link_timeout: float = 600.0  # how long a started link may wait for its callback
    interval: float = 3600.0
    # Google reports deletions and expires sync tokens itself (after 7 days).
    full_every: float | None = None


ConnectorConfig = LdapConfig | GoogleConfig

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, None: 1.0}


class _Section:
    """Reads one section's keys, remembering which were read."""

    def __init__(self, path: str, table: Mapping[str, Any]) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{path}: must be a table")
        self.path = path
        self.table = table
        self.read: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}.{key}: {message}")

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str) -> Any:
        self.read.add(key)
        return self.table.get(key)

    def string(self, key: str, default: str | None = None) -> str:
        value = self.raw(key)
        if value is None:
            if default is None:
                raise self.error(key, "is required")
            return default
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {value!r}")
        return value

    def secret(self, key: str, *, required: bool) -> str:
        """A secret given inline or, better, as ``<key>_file``. Never echoed."""
        inline, path = self.raw(key), self.raw(f"{key}_file")
        if inline is not None and path is not None:
            raise self.error(key, f"give {key} or {key}_file, not both")
        if path is not None:
            if not isinstance(path, str):
                raise self.error(f"{key}_file", "must be a path")
            try:
                return Path(path).read_text().strip()
            except OSError as exc:
                raise self.error(f"{key}_file", f"cannot read {path}: {exc.strerror}") from None
        if inline is None:
            if required:
                raise self.error(key, f"is required (or {key}_file)")
            return ""
        if not isinstance(inline, str):
            raise self.error(key, "must be a string")
        return inline

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"must be a non-empty list of strings, got {value!r}")
        return tuple(value)

    def duration(self, key: str, default: float | None, *, never: bool = False) -> float | None:
        """Seconds, as a number or "90s", "15m", "6h", "1d"; "never" where allowed."""
        value = self.raw(key)
        if value is None:
            return default
        if never and value == "never":
            return None
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
        if seconds is None or seconds < 0:
            hint = ', or "never"' if never else ""
            raise self.error(key, f'must be a duration like 900, "15m", "6h" or "1d"{hint}, got {value!r}')
        return seconds

    def url(self, key: str, default: str | None = None) -> str:
        """An https URL; plain http only to this machine (a local proxy or
        stand-in), as OAuth 2.0 for loopback addresses allows."""
        value = self.string(key, default)
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and _is_loopback(parts.hostname):
            return value
        raise self.error(key, f"must be an https URL (http only on loopback), got {value!r}")

    def region(self, key: str) -> str:
        value = self.string(key, "ES").upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise self.error(key, f"must be a two-letter region like ES or GB, got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.read)
        if unknown:
            raise self.error(unknown[0], "is not a known key")


def parse_connectors(section: Mapping[str, Any]) -> dict[str, ConnectorConfig]:
    """Every connector of the ``[connectors]`` table, by name."""
    if not isinstance(section, Mapping):
        raise ConfigError("connectors: must be a table of connector sections")
    return {name: parse_connector(name, table) for name, table in section.items()}


def parse_connector(name: str, table: Mapping[str, Any]) -> ConnectorConfig:
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", name):
        raise ConfigError(f"connectors.{name}: a connector name is lower-case letters, digits, - and _")
    section = _Section(f"connectors.{name}", table)
    kind = section.string("type")
    if kind == "ldap":
        config: ConnectorConfig = _ldap(name, section)
    elif kind == "google":
        config = _google(name, section)
    else:
        raise section.error("type", f'must be "ldap" or "google", got {kind!r}')
    section.finish()
    return config


def _ldap(name: str, s: _Section) -> LdapConfig:
    urls = s.strings("urls", ())
    if not urls:
        raise s.error("urls", "is required")
    for url in urls:
        if not url.startswith(("ldap://", "ldaps://")):
            raise s.error("urls", f"must be ldap:// or ldaps:// URLs, got {url!r}")
    use_ssl = s.boolean("use_ssl", all(u.startswith("ldaps://") for u in urls))
    start_tls = s.boolean("start_tls", False)
    if use_ssl and start_tls:
        raise s.error("start_tls", "cannot be used with use_ssl (ldaps://)")
    ca_file = s.string("ca_file", "")
    if ca_file and not Path(ca_file).is_file():
        raise s.error("ca_file", f"no such file: {ca_file}")
    bind_dn = s.string("bind_dn", "")
    bind_password = s.secret("bind_password", required=bool(bind_dn))
    if bind_password and not bind_dn:
        raise s.error("bind_password", "needs bind_dn")
    change_attribute = s.string("change_attribute", "modifyTimestamp")
    if change_attribute not in CHANGE_ATTRIBUTES:
        raise s.error("change_attribute", f"must be one of {', '.join(CHANGE_ATTRIBUTES)}")
    search_filter = s.string("filter", "(objectClass=inetOrgPerson)")
    if not (search_filter.startswith("(") and search_filter.endswith(")")):
        raise s.error("filter", f"must be an LDAP filter in parentheses, got {search_filter!r}")
    return LdapConfig(
        name=name,
        urls=urls,
        base_dn=s.string("base_dn"),
        bind_dn=bind_dn,
        bind_password=bind_password,
        start_tls=start_tls,
        use_ssl=use_ssl,
        ca_file=ca_file,
        filter=search_filter,
        page_size=s.integer("page_size", 500, 1, 10_000),
        attributes=_attributes(s),
        change_attribute=change_attribute,
        default_region=s.region("default_region"),
        require_phone=s.boolean("require_phone", True),
        timeout=_positive(s, "timeout", 30.0),
        interval=_positive(s, "interval", 900.0),
        full_every=s.duration("full_every", DAY, never=True),
    )


def _attributes(s: _Section) -> AttributeMap:
    table = s.raw("attributes")
    if table is None:
        return AttributeMap()
    a = _Section(f"{s.path}.attributes", table)
    d = AttributeMap()
    mapping = AttributeMap(
        id=a.string("id", d.id),
        display=a.strings("display", d.display),
        given=a.string("given", d.given),
        family=a.string("family", d.family),
        phones=a.strings("phones", d.phones),
        email=a.strings("email", d.email),
        department=a.strings("department", d.department),
    )
    a.finish()
    return mapping


def _google(name: str, s: _Section) -> GoogleConfig:
    key_text = s.secret("token_key", required=True)
    try:
        token_key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        token_key = b""
    if len(token_key) != 32:
        raise s.error("token_key", "must be 32 random bytes in base64 (openssl rand -base64 32)")
    return GoogleConfig(
        name=name,
        client_id=s.string("client_id"),
        client_secret=s.secret("client_secret", required=True),
        redirect_uri=s.url("redirect_uri"),
        token_key=token_key,
        authorization_endpoint=s.url("authorization_endpoint", GOOGLE_AUTHORIZATION_ENDPOINT),
        token_endpoint=s.url("token_endpoint", GOOGLE_TOKEN_ENDPOINT),
        revoke_endpoint=s.url("revoke_endpoint", GOOGLE_REVOKE_ENDPOINT),
        people_endpoint=s.url("people_endpoint", GOOGLE_PEOPLE_ENDPOINT),
        scope=s.string("scope", GOOGLE_CONTACTS_SCOPE),
        page_size=s.integer("page_size", 1000, 1, 1000),
        default_region=s.region("default_region"),
        require_phone=s.boolean("require_phone", True),
        timeout=_positive(s, "timeout", 30.0),
        link_timeout=_positive(s, "link_timeout", 600.0),
        interval=_positive(s, "interval", 3600.0),
        full_every=s.duration("full_every", None, never=True),
    )


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _positive(s: _Section, key: str, default: float) -> float:
    value = s.duration(key, default)
    if not value:
        raise s.error(key, "must be more than zero")
    return value
