"""Google contacts against the local stand-in: linking, syncing, refreshing,
revocation. The connector only sees the stand-in's endpoints in its config."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connectors.errors import LinkFailed, LinkStateMismatch
from connectors.google import GoogleLinker
from core.cipher import TokenCipher
from core.directory import tables as t
from core.directory.connector import GrantRevoked
from core.directory.google import connector_name
from core.directory.link_store import BROKEN, LINKED, GoogleLinkStore
from core.directory.records import RunState
from core.directory.runner import SyncRunner
from core.directory.store import DirectoryStore
from settings.connectors import GoogleConfig, parse_connector
from tests.support.google_standin import CONTACTS_SCOPE, GoogleStandIn

CLIENT_ID = "1234-wac.apps.googleusercontent.com"
CLIENT_SECRET = "client-secret-xyz"
REDIRECT_URI = "https://wac.example.test/oauth2/google/callback"
KEY = os.urandom(32)


@pytest.fixture
async def google() -> AsyncIterator[GoogleStandIn]:
    standin = GoogleStandIn(CLIENT_ID, CLIENT_SECRET)
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


def google_config(standin: GoogleStandIn, **overrides: object) -> GoogleConfig:
    config = parse_connector(
        "google",
        {
            "type": "google",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": REDIRECT_URI,
            "token_key": base64.b64encode(KEY).decode(),
            "authorization_endpoint": standin.authorization_endpoint,
            "token_endpoint": standin.token_endpoint,
            "revoke_endpoint": standin.revoke_endpoint,
            "people_endpoint": standin.people_endpoint,
            **overrides,
        },
    )
    assert isinstance(config, GoogleConfig)
    return config


class Wac:
    """The pieces the core would compose for Google contacts."""

    def __init__(self, store: DirectoryStore, config: GoogleConfig) -> None:
        self.store = store
        self.links = GoogleLinkStore(store.engine, TokenCipher(config.token_key))
        self.linker = GoogleLinker(config, self.links, store)
        self.failures: list[Exception] = []

        async def on_failure(_connector: object, exc: Exception) -> None:
            self.failures.append(exc)

        self.runner = SyncRunner(store, on_failure=on_failure)

    async def link(self, username: str) -> None:
        url = await self.linker.authorization_url(username)
        code, state = await consent(url)
        await self.linker.complete(username, state, code)
        self.runner.add(self.linker.connector(username))

    async def names(self, query: str) -> list[str]:
        entries, _ = await self.store.search(query, page_size=100)
        return [e.record.display_name for e in entries]


async def consent(url: str) -> tuple[str, str]:
    """Follow the consent page's redirect as the browser would; the code and state."""
    async with httpx.AsyncClient() as http:
        response = await http.get(url, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    back = parse_qs(urlsplit(location).query)
    return back["code"][0], back["state"][0]


def fill(standin: GoogleStandIn, count: int) -> None:
    for i in range(count):
        standin.put_person(f"people/c{i:04d}", f"Friend {i:02d}", [f"+3461100{i:04d}"])


async def test_link_flow(google: GoogleStandIn, store: DirectoryStore) -> None:
    wac = Wac(store, google_config(google))
    url = await wac.linker.authorization_url("alice")
    assert url.startswith(google.authorization_endpoint + "?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == REDIRECT_URI
    assert q["scope"] == CONTACTS_SCOPE
    assert q["response_type"] == "code"
    assert (q["access_type"], q["prompt"]) == ("offline", "consent")
    assert q["code_challenge_method"] == "S256" and len(q["state"]) >= 32

    code, state = await consent(url)
    assert state == q["state"]
    link = await wac.linker.complete("alice", state, code)
    assert link.state == LINKED and link.token["refresh_token"].startswith("1//")
    # The stand-in checked the verifier against the challenge.
    assert google.count("/token", grant_type="authorization_code") == 1

    # At rest the token is sealed: neither token appears in the row.
    async with store.engine.connect() as conn:
        sealed = (await conn.execute(t.google_links.select())).one()._mapping["token"]
    assert sealed.startswith("v1.")
    assert link.token["refresh_token"] not in sealed and link.token["access_token"] not in sealed


async def test_state_mismatch_is_rejected(google: GoogleStandIn, store: DirectoryStore) -> None:
    wac = Wac(store, google_config(google))
    code, state = await consent(await wac.linker.authorization_url("alice"))
    with pytest.raises(LinkStateMismatch) as wrong:
        await wac.linker.complete("alice", "forged-state", code)
    assert wrong.value.field == "state"
    # Another subscriber cannot complete alice's authorization...
    with pytest.raises(LinkStateMismatch):
        await wac.linker.complete("mallory", state, code)
    # ...and the state is spent: it was good for one try only.
    with pytest.raises(LinkStateMismatch):
        await wac.linker.complete("alice", state, code)
    assert await wac.links.get("alice") is None


async def test_expired_state_is_rejected(google: GoogleStandIn, store: DirectoryStore) -> None:
    now = [1000.0]
    config = google_config(google, link_timeout="10m")
    links = GoogleLinkStore(store.engine, TokenCipher(config.token_key))
    linker = GoogleLinker(config, links, store, clock=lambda: now[0])
    code, state = await consent(await linker.authorization_url("alice"))
    now[0] += 601
    with pytest.raises(LinkStateMismatch):
        await linker.complete("alice", state, code)


async def test_pkce_verifier_is_checked(google: GoogleStandIn, store: DirectoryStore) -> None:
    # A code obtained with another challenge cannot be exchanged with ours.
    wac = Wac(store, google_config(google))
    url = await wac.linker.authorization_url("alice")
    forged = url.replace(
        parse_qs(urlsplit(url).query)["code_challenge"][0],
        base64.urlsafe_b64encode(hashlib.sha256(b"x" * 43).digest()).rstrip(b"=").decode(),
    )
    code, state = await consent(forged)
    with pytest.raises(LinkFailed, match="invalid_grant"):
        await wac.linker.complete("alice", state, code)


async def test_sync_with_paging(google: GoogleStandIn, store: DirectoryStore) -> None:
    fill(google, 23)
    google.put_person("people/nophone", "No Phone", emails=["np@example.org"])
    google.put_person("people/national", "Nacional", ["611 22 33 44"], canonical=False)
    wac = Wac(store, google_config(google, page_size=10))
    await wac.link("alice")
    run = await wac.runner.run(connector_name("alice"))
    assert run.state is RunState.SUCCEEDED, run.error
    assert (run.full, run.added, run.skipped) == (True, 24, 1)
    assert google.count("/v1/people/me/connections") == 3  # 25 people, pages of 10
    assert await wac.names("611 22") == ["Nacional"]
    entries, _ = await store.search("+34 611 000 001", page_size=5)
    assert [(e.source, e.record.entry_id) for e in entries] == [("google:alice", "people/c0001")]


async def test_incremental_sync(google: GoogleStandIn, store: DirectoryStore) -> None:
    fill(google, 5)
    wac = Wac(store, google_config(google))
    await wac.link("alice")
    name = connector_name("alice")
    await wac.runner.run(name)
    google.put_person("people/c0001", "Friend 01", ["+34622000001"])  # new number
    google.put_person("people/c0100", "Newcomer", ["+34622000100"])
    google.delete_person("people/c0002")
    run = await wac.runner.run(name)
    assert run.state is RunState.SUCCEEDED, run.error
    assert (run.full, run.added, run.updated, run.removed) == (False, 1, 1, 1)
    assert google.count("/v1/people/me/connections", requestSyncToken="true") == 2
    assert await wac.names("622000001") == ["Friend 01"]
    assert await wac.names("friend 02") == []
    assert await wac.names("newc") == ["Newcomer"]
    # Nothing changed: nothing to do.
    quiet = await wac.runner.run(name)
    assert (quiet.full, quiet.added, quiet.updated, quiet.removed) == (False, 0, 0, 0)


async def test_expired_sync_token_means_a_full_run(google: GoogleStandIn, store: DirectoryStore) -> None:
    fill(google, 4)
    wac = Wac(store, google_config(google))
    await wac.link("alice")
    name = connector_name("alice")
    await wac.runner.run(name)
    google.delete_person("people/c0003")
    google.expire_sync_tokens()
    run = await wac.runner.run(name)
    assert run.state is RunState.SUCCEEDED, run.error
    assert (run.full, run.removed) == (True, 1)
    assert await store.count("google:alice") == 3
    # The new sync token from the full listing works again.
    again = await wac.runner.run(name)
    assert (again.full, again.state) == (False, RunState.SUCCEEDED)


async def test_token_refresh(google: GoogleStandIn, store: DirectoryStore) -> None:
    fill(google, 2)
    google.access_token_lifetime = 30  # inside authlib's 60 s leeway: expired at once
    wac = Wac(store, google_config(google))
    await wac.link("alice")
    before = await wac.links.get("alice")
    assert before is not None
    run = await wac.runner.run(connector_name("alice"))
    assert run.state is RunState.SUCCEEDED, run.error
    assert google.count("/token", grant_type="refresh_token") >= 1
    after = await wac.links.get("alice")
    assert after is not None
    # The refreshed access token was kept; the refresh token survived
    # Google's answer leaving it out.
    assert after.token["access_token"] != before.token["access_token"]
    assert after.token["refresh_token"] == before.token["refresh_token"]


async def test_access_token_dying_early_is_refreshed(google: GoogleStandIn, store: DirectoryStore) -> None:
    fill(google, 2)
    wac = Wac(store, google_config(google))
    await wac.link("alice")
    google.expire_access_tokens()
    run = await wac.runner.run(connector_name("alice"))
    assert run.state is RunState.SUCCEEDED, run.error
    assert google.count("/token", grant_type="refresh_token") == 1


async def test_revoked_grant(google: GoogleStandIn, store: DirectoryStore) -> None:
    fill(google, 3)
    wac = Wac(store, google_config(google))
    await wac.link("alice")
    name = connector_name("alice")
    await wac.runner.run(name)
    google.revoke_all()
    run = await wac.runner.run(name)
    assert run.state is RunState.FAILED
    assert "revoked" in run.error and "invalid_grant" in run.error
    [failure] = wac.failures
    assert isinstance(failure, GrantRevoked) and failure.username == "alice"
    link = await wac.links.get("alice")
    assert link is not None and link.state == BROKEN
    assert await store.count("google:alice") == 3  # the directory is untouched
    # The connector raises GrantRevoked straight away while the link is broken.
    with pytest.raises(GrantRevoked):
        await wac.linker.connector("alice").fetch(None, True)
    # Linking again mends it.
    await wac.link("alice")
    assert (await wac.runner.run(name)).state is RunState.SUCCEEDED


async def test_unlink_revokes_the_grant(google: GoogleStandIn, store: DirectoryStore) -> None:
    fill(google, 3)
    wac = Wac(store, google_config(google))
    await wac.link("alice")
    await wac.runner.run(connector_name("alice"))
    link = await wac.links.get("alice")
    assert link is not None
    assert await wac.linker.unlink("alice") is True
    assert google.is_revoked(link.token["refresh_token"])
    assert await wac.links.get("alice") is None
    assert await store.count("google:alice") == 0
    assert await store.get_cursor(connector_name("alice")) is None
    assert await wac.linker.unlink("alice") is False


async def test_tokens_never_reach_the_logs(
    google: GoogleStandIn, store: DirectoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    fill(google, 2)
    google.access_token_lifetime = 30
    wac = Wac(store, google_config(google))
    await wac.link("alice")
    await wac.runner.run(connector_name("alice"))
    link = await wac.links.get("alice")
    assert link is not None
    for secret in (link.token["refresh_token"], link.token["access_token"], CLIENT_SECRET):
        assert secret not in caplog.text
