"""Connector configuration: the ``[connectors.NAME]`` sections of wac.toml.

Each section has ``type = "ldap"`` or ``type = "google"``. Its keys are read
like every section's (settings/fields.py): a bad one is a ``ConfigError``
naming it ("[connectors.corp] page_size: must be between 1 and 10000, got
0"); unknown keys are errors too, so a typo never passes for a default.
The sections are read by whoever runs connectors (the core, ``wac
connectors``), not by ``load_config``: secrets named by ``*_file`` keys are
read then.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from settings import checks
from settings.fields import DAY, ConfigError, Invalid, key, load_section

GOOGLE_AUTHORIZATION_ENDPOINT = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
GOOGLE_REVOKE_ENDPOINT = "https://oauth2.googleapis.com/revoke"
GOOGLE_PEOPLE_ENDPOINT = "https://people.googleapis.com/v1/people/me/connections"
GOOGLE_CONTACTS_SCOPE = "https://www.googleapis.com/auth/contacts.readonly"

CHANGE_ATTRIBUTES = ("modifyTimestamp", "entryUSN", "uSNChanged")


def _ldap_urls(urls: tuple[str, ...]) -> tuple[str, ...]:
    for url in urls:
        if not url.startswith(("ldap://", "ldaps://")):
            raise Invalid(f"must be ldap:// or ldaps:// URLs, got {url!r}")
    return urls


def _existing_file(path: str) -> str:
    if path and not Path(path).is_file():
        raise Invalid(f"no such file: {path}")
    return path


def _ldap_filter(text: str) -> str:
    if not (text.startswith("(") and text.endswith(")")):
        raise Invalid(f"must be an LDAP filter in parentheses, got {text!r}")
    return text


def _token_key(text: str) -> bytes:
    try:
        sealing_key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        sealing_key = b""
    if len(sealing_key) != 32:
        raise Invalid("must be 32 random bytes in base64 (openssl rand -base64 32)")
    return sealing_key


@dataclass(frozen=True, slots=True)
class AttributeMap:
    """Which LDAP attributes make a directory entry; the first present wins
    where there is a list (all of them, for phones and e-mails)."""

    id: str = "entryUUID"
    display: tuple[str, ...] = key(("displayName", "cn"), non_empty=True)
    given: str = "givenName"
    family: str = "sn"
    phones: tuple[str, ...] = key(("telephoneNumber", "mobile", "homePhone"), non_empty=True)
    email: tuple[str, ...] = key(("mail",), non_empty=True)
    department: tuple[str, ...] = key(("ou", "departmentNumber"), non_empty=True)


@dataclass(frozen=True, slots=True)
class LdapConfig:
    name: str
    urls: tuple[str, ...] = key(non_empty=True, check=_ldap_urls)
    base_dn: str = key()
    bind_dn: str = ""  # "" binds anonymously
    bind_password: str = key("", secret_file=True, secret=True)
    start_tls: bool = False
    # Read as true when every URL is ldaps:// and the key is not given.
    use_ssl: bool = False
    ca_file: str = key("", check=_existing_file)
    filter: str = key("(objectClass=inetOrgPerson)", check=_ldap_filter)
    page_size: int = key(500, between=(1, 10_000))
    attributes: AttributeMap = AttributeMap()
    change_attribute: str = key("modifyTimestamp", choices=CHANGE_ATTRIBUTES)
    default_region: str = key("ES", check=checks.region)
    require_phone: bool = True
    timeout: float = key(30.0, duration=True, positive=True)
    interval: float = key(900.0, duration=True, positive=True)
    full_every: float | None = key(DAY, duration=True, never=True)

    def __post_init__(self) -> None:
        if self.use_ssl and self.start_tls:
            raise Invalid("cannot be used with use_ssl (ldaps://)", "start_tls")
        if self.bind_dn and not self.bind_password:
            raise Invalid("is required (or bind_password_file)", "bind_password")
        if self.bind_password and not self.bind_dn:
            raise Invalid("needs bind_dn", "bind_password")


@dataclass(frozen=True, slots=True)
class GoogleConfig:
    name: str
    client_id: str = key()
    client_secret: str = key(secret_file=True, secret=True)
    redirect_uri: str = key(check=checks.https_url)
    # AES-256 key sealing tokens at rest, given in base64.
    token_key: bytes = key(secret_file=True, secret=True, check=_token_key)
    authorization_endpoint: str = key(GOOGLE_AUTHORIZATION_ENDPOINT, check=checks.https_url)
    token_endpoint: str = key(GOOGLE_TOKEN_ENDPOINT, check=checks.https_url)
    revoke_endpoint: str = key(GOOGLE_REVOKE_ENDPOINT, check=checks.https_url)
    people_endpoint: str = key(GOOGLE_PEOPLE_ENDPOINT, check=checks.https_url)
    scope: str = GOOGLE_CONTACTS_SCOPE
    page_size: int = key(1000, between=(1, 1000))
    default_region: str = key("ES", check=checks.region)
    require_phone: bool = True
    timeout: float = key(30.0, duration=True, positive=True)
    # How long a started link may wait for its callback.
    link_timeout: float = key(600.0, duration=True, positive=True)
    interval: float = key(3600.0, duration=True, positive=True)
    # Google reports deletions and expires sync tokens itself (after 7 days).
    full_every: float | None = key(None, duration=True, never=True)


ConnectorConfig = LdapConfig | GoogleConfig

_KINDS: dict[str, type[LdapConfig] | type[GoogleConfig]] = {"ldap": LdapConfig, "google": GoogleConfig}


def parse_connectors(section: Mapping[str, Any]) -> dict[str, ConnectorConfig]:
    """Every connector of the ``[connectors]`` table, by name."""
    if not isinstance(section, Mapping):
        raise ConfigError("[connectors] must be a table of connector sections")
    configs = {name: parse_connector(name, table) for name, table in section.items()}
    google = [c.name for c in configs.values() if isinstance(c, GoogleConfig)]
    if len(google) > 1:
        # One Google project serves every subscriber; two would make two
        # connectors for one link.
        raise ConfigError(
            f"[connectors.{google[1]}] type: only one google connector may be configured, "
            f"and [connectors.{google[0]}] is one"
        )
    return configs


def parse_connector(name: str, table: Mapping[str, Any]) -> ConnectorConfig:
    section = f"connectors.{name}"
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", name):
        raise ConfigError(f"[{section}] a connector name is lower-case letters, digits, - and _")
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table")
    kind = table.get("type")
    if kind is None:
        raise ConfigError(f"[{section}] type: is required")
    if kind not in _KINDS:
        raise ConfigError(f'[{section}] type: must be "ldap" or "google", got {kind!r}')
    keys = {k: v for k, v in table.items() if k != "type"}
    if kind == "ldap" and "use_ssl" not in keys:
        urls = keys.get("urls")
        urls = urls.split(",") if isinstance(urls, str) else urls
        if isinstance(urls, list) and urls:
            keys["use_ssl"] = all(isinstance(u, str) and u.strip().startswith("ldaps://") for u in urls)
    return load_section(_KINDS[kind], keys, section, fixed={"name": name})
