"""The connectors a configuration asks for, built the same way for the core
and for ``wac connectors``.

Every ``[connectors.NAME]`` section is checked here, before anything runs:
a bad one is a ``ConfigError`` naming its key. LDAP sections become
connectors at once; the Google section (at most one) becomes a linker, and
each subscriber who links an account gets a connector of their own
("google:<username>").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.cipher import TokenCipher
from core.directory.link_store import GoogleLinkStore
from core.directory.store import DirectoryStore
from settings.connectors import GoogleConfig, LdapConfig, parse_connectors

if TYPE_CHECKING:
    from connectors.google import GoogleLinker
    from connectors.ldap import LdapConnector


@dataclass(frozen=True, slots=True)
class Configured:
    """What the ``[connectors]`` table holds, checked."""

    ldap: tuple[LdapConnector, ...]
    google: GoogleConfig | None


def configured(tables: Mapping[str, Any]) -> Configured:
    """Parse and check every connector section; ``ConfigError`` names the key at fault."""
    configs = parse_connectors(tables)  # at most one google section: settings/connectors.py
    google = [c for c in configs.values() if isinstance(c, GoogleConfig)]
    ldap_configs = [c for c in configs.values() if isinstance(c, LdapConfig)]
    ldap: tuple[LdapConnector, ...] = ()
    if ldap_configs:
        # ldap3 loads only for a configuration with an LDAP section.
        from connectors.ldap import LdapConnector

        ldap = tuple(LdapConnector(c) for c in ldap_configs)
    return Configured(ldap=ldap, google=google[0] if google else None)


def google_linker(config: GoogleConfig, directory: DirectoryStore) -> GoogleLinker:
    """The linker for the Google section, its tokens sealed under its key."""
    # httpx and authlib load only for a configuration with a Google section.
    from connectors.google import GoogleLinker

    links = GoogleLinkStore(directory.engine, TokenCipher(config.token_key), clock=directory.clock)
    return GoogleLinker(config, links, directory, clock=directory.clock)
