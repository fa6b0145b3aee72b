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
from typing import Any

from connectors.google import GoogleLinker
from connectors.ldap import LdapConnector
from core.cipher import TokenCipher
from core.directory.link_store import GoogleLinkStore
from core.directory.store import DirectoryStore
from settings.connectors import GoogleConfig, LdapConfig, parse_connectors


@dataclass(frozen=True, slots=True)
class Configured:
    """What the ``[connectors]`` table holds, checked."""

    ldap: tuple[LdapConnector, ...]
    google: GoogleConfig | None


def configured(tables: Mapping[str, Any]) -> Configured:
    """Parse and check every connector section; ``ConfigError`` names the key at fault."""
    configs = parse_connectors(tables)  # at most one google section: settings/connectors.py
    google = [c for c in configs.values() if isinstance(c, GoogleConfig)]
    ldap = tuple(LdapConnector(c) for c in configs.values() if isinstance(c, LdapConfig))
    return Configured(ldap=ldap, google=google[0] if google else None)


def google_linker(config: GoogleConfig, directory: DirectoryStore) -> GoogleLinker:
    """The linker for the Google section, its tokens sealed under its key."""
    links = GoogleLinkStore(directory.engine, TokenCipher(config.token_key), clock=directory.clock)
    return GoogleLinker(config, links, directory, clock=directory.clock)
