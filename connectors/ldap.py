"""The LDAP connector: a paged search of a directory server (OpenLDAP, 389,
Active Directory) into the shared directory, source "ldap:<name>".

ldap3 is synchronous, so each fetch runs in a worker thread and the core's
event loop never waits on a socket. A full run reads every entry under the
filter; an incremental one only those changed since the cursor (see
``ldap_entries``). LDAP does not report deletions to a plain search, so the
periodic full run (``full_every``) is what removes departed entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Iterator
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from connectors.ldap_entries import (
    ChangeCursor,
    attributes_digest,
    change_mark,
    lower_keys,
    map_entry,
)
from core.directory.connector import FetchError, FetchResult, Schedule
from core.directory.records import DirectoryRecord
from settings.connectors import LdapConfig

log = logging.getLogger("wac.connectors.ldap")

_PAGED_RESULTS = "1.2.840.113556.1.4.319"  # RFC 2696 simple paged results control


class LdapConnector:
    """One ``[connectors.NAME]`` section of type "ldap"."""

    type = "ldap"

    def __init__(self, config: LdapConfig) -> None:
        self.config = config
        self.name = config.name
        self.source = f"ldap:{config.name}"
        self.schedule = Schedule(interval=config.interval, full_every=config.full_every)

    async def fetch(self, cursor: dict[str, Any] | None, full: bool) -> FetchResult:
        return await asyncio.to_thread(self._fetch, cursor, full)

    def _fetch(self, stored: dict[str, Any] | None, full: bool) -> FetchResult:
        config = self.config
        previous = ChangeCursor.load(stored, config.change_attribute)
        if previous is None:
            full = True
        search_filter = config.filter
        if not full:
            assert previous is not None
            search_filter = previous.search_filter(config.filter)
        cursor = ChangeCursor(config.change_attribute)
        if previous is not None:
            cursor.mark, cursor.seen = previous.mark, dict(previous.seen)

        records: list[DirectoryRecord] = []
        deleted: list[str] = []
        skipped = 0
        for attributes in self._search(search_filter):
            mapped = map_entry(
                attributes,
                config.attributes,
                region=config.default_region,
                require_phone=config.require_phone,
            )
            marks = lower_keys(attributes).get(config.change_attribute.lower(), ())
            mark = change_mark(marks[0], config.change_attribute) if marks else None
            digest = attributes_digest(attributes)
            if not full and previous is not None and previous.is_repeat(mapped.entry_id, mark, digest):
                continue
            cursor.observe(mapped.entry_id, mark, digest)
            if mapped.record is None:
                skipped += 1
                log.debug("%s: skipped %s: %s", self.name, mapped.entry_id or "an entry", mapped.reason)
                # Changed into something unusable: it leaves the directory now,
                # not at the next full run.
                if not full and mapped.entry_id:
                    deleted.append(mapped.entry_id)
                continue
            records.append(mapped.record)
        return FetchResult(
            full=full,
            records=tuple(records),
            deleted_ids=tuple(deleted),
            skipped=skipped,
            cursor=cursor.dump() if cursor.mark is not None else None,
        )

    def _search(self, search_filter: str) -> Iterator[dict[str, list[bytes]]]:
        """Every entry's raw attributes, page by page; raises FetchError on
        any failure, so a partial read is never taken for the whole."""
        config = self.config
        conn = self._bind()
        try:
            cookie: bytes | None = None
            attributes = self._attributes()
            while True:
                try:
                    conn.search(
                        config.base_dn,
                        search_filter,
                        ldap3.SUBTREE,
                        attributes=attributes,
                        paged_size=config.page_size,
                        paged_cookie=cookie,
                    )
                except LDAPException as exc:
                    raise FetchError(f"LDAP search of {config.base_dn} failed: {_reason(exc)}") from None
                result = conn.result
                if result["result"] != 0:
                    detail = f"{result['description']}" + (f" ({result['message']})" if result["message"] else "")
                    raise FetchError(f"LDAP search of {config.base_dn} failed: {detail}")
                for item in conn.response or ():
                    if item.get("type") == "searchResEntry":
                        yield item["raw_attributes"]
                control = (result.get("controls") or {}).get(_PAGED_RESULTS) or {}
                cookie = (control.get("value") or {}).get("cookie")
                if not cookie:
                    return
        finally:
            _close(conn)

    def _attributes(self) -> list[str]:
        m = self.config.attributes
        names = [m.id, *m.display, m.given, m.family, *m.phones, *m.email, *m.department]
        names.append(self.config.change_attribute)
        return list(dict.fromkeys(names))

    def _bind(self) -> ldap3.Connection:
        """A bound connection to the first server in ``urls`` that answers."""
        config = self.config
        unreachable: list[str] = []
        for url in config.urls:
            conn = self._connection(url)
            try:
                conn.open()
            except LDAPException as exc:
                _close(conn)
                unreachable.append(f"{url}: {_reason(exc)}")
                continue
            # Servers of one directory share their accounts: a refused bind
            # or StartTLS is an answer, not a reason to try the next one.
            try:
                if config.start_tls and not conn.start_tls():
                    raise FetchError(f"LDAP StartTLS failed at {url}: {conn.result['description']}")
                if not conn.bind():
                    who = config.bind_dn or "anonymous"
                    # The result names the failure (invalidCredentials); the
                    # password is never part of it or of anything we log.
                    raise FetchError(f"LDAP bind failed for {who}: {conn.result['description']}")
            except LDAPException as exc:
                _close(conn)
                raise FetchError(f"LDAP bind at {url} failed: {_reason(exc)}") from None
            except FetchError:
                _close(conn)
                raise
            return conn
        raise FetchError(f"LDAP server unreachable at {'; '.join(unreachable)}")

    def _connection(self, url: str) -> ldap3.Connection:
        config = self.config
        tls = None
        if config.use_ssl or config.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=config.ca_file or None,
                version=ssl.PROTOCOL_TLS_CLIENT,
            )
        try:
            server = ldap3.Server(
                url.rstrip("/"),  # ldap3 takes scheme://host:port, without a path
                use_ssl=config.use_ssl,
                tls=tls,
                connect_timeout=config.timeout,
                get_info=ldap3.NONE,  # the schema is not needed and costs a round trip
            )
            # Not ldap3's ServerPool: it sleeps ten seconds between passes
            # over unreachable servers; _bind tries each once, in order.
            return ldap3.Connection(
                server,
                user=config.bind_dn or None,
                password=config.bind_password or None,
                authentication=ldap3.SIMPLE if config.bind_dn else ldap3.ANONYMOUS,
                auto_bind=ldap3.AUTO_BIND_NONE,
                read_only=True,
                # ldap3 packs this into SO_RCVTIMEO as whole seconds.
                receive_timeout=max(1, math.ceil(config.timeout)),
                raise_exceptions=False,
            )
        except LDAPException as exc:
            raise FetchError(f"LDAP URL {url} is unusable: {_reason(exc)}") from None


def _close(conn: ldap3.Connection) -> None:
    # If the server is gone already there is nothing to close politely.
    with contextlib.suppress(LDAPException):
        conn.unbind()


def _reason(exc: LDAPException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
