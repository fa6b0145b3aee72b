"""Google contacts: a subscriber links their Google account over OAuth2 and
a connector per link imports their contacts, source "google:<username>".

The link is the authorization-code flow with PKCE (S256) and a one-time
state bound to the subscriber who started it. The grant is offline: the
refresh token is kept sealed (``core.cipher``) and authlib refreshes
the access token when it runs out, handing us the new one to keep.

Contacts come from the People API's connections listing: a full listing
ends with a sync token, and the next run asks only for changes since it,
deletions included. An expired sync token (HTTP 410, EXPIRED_SYNC_TOKEN)
means a full listing again. A grant the subscriber revoked shows as
``invalid_grant`` when refreshing: the link is marked broken and the fetch
raises ``GrantRevoked`` for the core to tell them.

Every endpoint is configuration (the real Google ones by default); nothing
here knows whether it talks to Google or to a stand-in.
"""

from __future__ import annotations

import logging
import secrets
import time
import warnings
from collections.abc import Callable
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning

from connectors.errors import GoogleUnreachable, LinkFailed, LinkStateMismatch
from connectors.google_people import PERSON_FIELDS, map_person
from core.directory.connector import FetchError, FetchResult, GrantRevoked, Schedule
from core.directory.google import Authorization, connector_name
from core.directory.link_store import BROKEN, GoogleLink, GoogleLinkStore, PendingLink
from core.directory.records import DirectoryRecord
from core.directory.store import DirectoryStore
from settings.connectors import GoogleConfig

with warnings.catch_warnings():
    # Authlib 1.9 warns on import, always, that its httpx integration is to
    # use the "httpx2" package: nothing a wac operator can act on, and the
    # integration's API is the same.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

log = logging.getLogger("wac.connectors.google")

TYPE = "google"


def _client(config: GoogleConfig, **kwargs: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=config.client_id,
        client_secret=config.client_secret,
        scope=config.scope,
        redirect_uri=config.redirect_uri,
        token_endpoint=config.token_endpoint,
        code_challenge_method="S256",
        timeout=config.timeout,
        **kwargs,
    )


def _oauth_reason(exc: OAuthError) -> str:
    return f"{exc.error}: {exc.description}" if exc.description else str(exc.error)


class GoogleLinker:
    """Links and unlinks subscribers' Google accounts: the core's ``Linker``
    (``core.directory.google``) over Google's OAuth2 endpoints."""

    def __init__(
        self,
        config: GoogleConfig,
        links: GoogleLinkStore,
        directory: DirectoryStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._links = links
        self._directory = directory
        self._clock = clock

    @property
    def links(self) -> GoogleLinkStore:
        return self._links

    async def authorization_url(self, username: str) -> str:
        """The Google consent page to send the subscriber to. Its callback
        brings back a code and the state, which ``complete`` checks."""
        return (await self.authorize(username)).url

    async def authorize(self, username: str) -> Authorization:
        """Start a link for ``username``: the consent page with its state."""
        state = secrets.token_urlsafe(32)
        verifier = generate_token(64)  # RFC 7636: 43 to 128 unreserved characters
        expire_time = self._clock() + self._config.link_timeout
        await self._links.add_pending(
            PendingLink(state=state, username=username, code_verifier=verifier, expire_time=expire_time)
        )
        async with _client(self._config) as client:
            url, _ = client.create_authorization_url(
                self._config.authorization_endpoint,
                state=state,
                code_verifier=verifier,
                # Offline access with a consent prompt: Google sends a refresh
                # token only then, and only on consent.
                access_type="offline",
                prompt="consent",
            )
        return Authorization(url=str(url), state=state, expire_time=expire_time)

    async def complete(self, username: str, state: str, code: str) -> GoogleLink:
        """Finish a link from the callback's ``state`` and ``code``.

        ``username`` is the authenticated subscriber completing it: a state
        started by anyone else is refused (LinkStateMismatch), as is one
        already used or expired. Google refusing the code is LinkFailed, Google
        out of reach GoogleUnreachable.
        """
        pending = await self._links.take_pending(state)
        if pending is None or pending.username != username or pending.expire_time < self._clock():
            raise LinkStateMismatch()
        async with _client(self._config) as client:
            try:
                token = await client.fetch_token(
                    self._config.token_endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending.code_verifier,
                )
            except OAuthError as exc:
                raise LinkFailed(f"Google refused the authorization: {_oauth_reason(exc)}") from None
            except httpx.HTTPError as exc:
                raise GoogleUnreachable(f"Google's token endpoint is unreachable: {type(exc).__name__}") from None
        if not token.get("refresh_token"):
            raise LinkFailed("Google granted no offline access (no refresh token)")
        await self._links.save(username, dict(token))
        # A new grant may be another Google account: start from a full listing.
        await self._directory.forget_connector(connector_name(username))
        link = await self._links.get(username)
        assert link is not None
        log.info("%s linked a Google account", username)
        return link

    async def unlink(self, username: str) -> bool:
        """Revoke the grant at Google, forget the link and remove the
        imported contacts. Whether there was a link."""
        link = await self._links.get(username)
        if link is None:
            return False
        refresh_token = link.token.get("refresh_token") or link.token.get("access_token")
        if link.state != BROKEN and refresh_token:
            try:
                async with _client(self._config) as client:
                    response = await client.revoke_token(
                        self._config.revoke_endpoint,
                        token=refresh_token,
                        token_type_hint="refresh_token",
                    )
                if response.status_code != 200:
                    # Already revoked at Google's end; the link goes all the same.
                    log.warning("revoking the Google grant of %s: HTTP %d", username, response.status_code)
            except httpx.HTTPError as exc:
                log.warning("revoking the Google grant of %s failed: %s", username, type(exc).__name__)
        await self._links.delete(username)
        name = connector_name(username)
        await self._directory.delete_source(name)
        await self._directory.forget_connector(name)
        log.info("%s unlinked their Google account", username)
        return True

    def connector(self, username: str) -> GoogleConnector:
        return GoogleConnector(self._config, username, self._links)


class _SyncTokenExpired(Exception):
    pass


class GoogleConnector:
    """One subscriber's Google contacts."""

    type = TYPE

    def __init__(self, config: GoogleConfig, username: str, links: GoogleLinkStore) -> None:
        self.config = config
        self.username = username
        self.name = self.source = connector_name(username)
        self.schedule = Schedule(interval=config.interval, full_every=config.full_every)
        self._links = links

    async def fetch(self, cursor: dict[str, Any] | None, full: bool) -> FetchResult:
        link = await self._links.get(self.username)
        if link is None:
            raise GrantRevoked(self.username, "the account is not linked")
        if link.state == BROKEN:
            raise GrantRevoked(self.username, link.reason)
        sync_token = None if full else (cursor or {}).get("sync_token")

        async def keep(token: dict[str, Any], **_: Any) -> None:
            await self._links.update_token(self.username, dict(token))

        async with _client(self.config, token=dict(link.token), update_token=keep) as client:
            try:
                if sync_token:
                    try:
                        return await self._list(client, sync_token)
                    except _SyncTokenExpired:
                        log.info("%s: the sync token expired; listing everything", self.name)
                return await self._list(client, None)
            except OAuthError as exc:
                if exc.error == "invalid_grant":
                    reason = _oauth_reason(exc)
                    await self._links.mark_broken(self.username, reason)
                    raise GrantRevoked(self.username, reason) from None
                raise FetchError(f"Google token refresh failed: {_oauth_reason(exc)}") from None
            except httpx.HTTPError as exc:
                raise FetchError(f"Google is unreachable: {type(exc).__name__}") from None

    async def _list(self, client: AsyncOAuth2Client, sync_token: str | None) -> FetchResult:
        """Every page of the connections listing, mapped to records."""
        params: dict[str, str] = {
            "personFields": PERSON_FIELDS,
            "pageSize": str(self.config.page_size),
            "requestSyncToken": "true",
        }
        if sync_token:
            params["syncToken"] = sync_token
        people: list[dict[str, Any]] = []
        next_sync = None
        while True:
            body = await self._page(client, params)
            people.extend(body.get("connections") or [])
            page_token = body.get("nextPageToken")
            if not page_token:
                next_sync = body.get("nextSyncToken")
                break
            params["pageToken"] = page_token

        full = sync_token is None
        records: list[DirectoryRecord] = []
        deleted: list[str] = []
        skipped = 0
        for person in people:
            mapped = map_person(person, region=self.config.default_region, require_phone=self.config.require_phone)
            if mapped.record is not None:
                records.append(mapped.record)
                continue
            if mapped.deleted:
                deleted.append(mapped.entry_id)
                continue
            skipped += 1
            # A contact edited into something unusable leaves the directory now.
            if not full and mapped.entry_id:
                deleted.append(mapped.entry_id)
        return FetchResult(
            full=full,
            records=tuple(records),
            deleted_ids=() if full else tuple(deleted),
            skipped=skipped,
            cursor={"sync_token": next_sync} if next_sync else None,
        )

    async def _page(self, client: AsyncOAuth2Client, params: dict[str, str]) -> dict[str, Any]:
        response = await client.get(self.config.people_endpoint, params=params)
        if response.status_code == 401 and client.token.get("refresh_token"):
            # The access token died before its time (revoked, or clocks
            # disagree): refresh once and ask again. A revoked grant shows
            # here as invalid_grant.
            await client.refresh_token(self.config.token_endpoint, refresh_token=client.token["refresh_token"])
            response = await client.get(self.config.people_endpoint, params=params)
        if _sync_token_expired(response):
            raise _SyncTokenExpired()
        if response.status_code != 200:
            raise FetchError(f"Google People API answered {_describe(response)}")
        body = response.json()
        if not isinstance(body, dict):
            raise FetchError("Google People API answered with something that is not an object")
        return body


def _error_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _sync_token_expired(response: httpx.Response) -> bool:
    if response.status_code == 410:
        return True
    if response.status_code != 400:
        return False
    # Google has also answered 400 FAILED_PRECONDITION with this reason.
    details = _error_of(response).get("details") or []
    return any(isinstance(d, dict) and d.get("reason") == "EXPIRED_SYNC_TOKEN" for d in details)


def _describe(response: httpx.Response) -> str:
    error = _error_of(response)
    status = error.get("status") or response.reason_phrase
    message = error.get("message")
    return f"HTTP {response.status_code} {status}" + (f": {message}" if message else "")
