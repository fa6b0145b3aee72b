"""A stand-in for Google's OAuth 2.0 and People API, on 127.0.0.1.

It speaks the parts of Google's protocol the connector uses, strictly
enough that a connector that works here works against Google:

- ``/o/oauth2/v2/auth``: checks the client, redirect URI, scope, offline
  access and the PKCE S256 challenge, then redirects to the redirect URI
  with a code and the state, as if the user had consented;
- ``/token``: the authorization_code grant (verifying the PKCE verifier
  against the challenge) and the refresh_token grant, with client
  authentication by HTTP Basic or form fields; ``invalid_grant`` for a
  revoked, unknown or reused grant; refresh responses carry no new refresh
  token, as Google's do not;
- ``/revoke``: revokes a refresh token (and its access tokens) or an
  access token;
- ``/v1/people/me/connections``: bearer-authenticated, paged with
  pageSize/pageToken, a nextSyncToken on the last page when asked, changes
  since a syncToken (deleted persons with ``metadata.deleted``), and 410
  with EXPIRED_SYNC_TOKEN for a sync token it has expired.

Tests change its people and its clock-free knobs (token lifetime, expired
sync tokens, revocations) and read what it was asked (``requests``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

CONTACTS_SCOPE = "https://www.googleapis.com/auth/contacts.readonly"


@dataclass
class _Grant:
    refresh_token: str
    scope: str
    revoked: bool = False
    access_tokens: set[str] = field(default_factory=set)


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    used: bool = False


class GoogleStandIn:
    """Start with ``await standin.start()``; stop with ``await standin.stop()``."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_token_lifetime = 3600
        self.base_url = ""
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, query or form)
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}  # by refresh token
        self._access: dict[str, tuple[_Grant, float]] = {}  # token -> (grant, expiry)
        # People: resourceName -> (version changed at, person or None if deleted)
        self._people: dict[str, tuple[int, dict[str, Any] | None]] = {}
        self._version = 0
        self._expired_sync_tokens: set[str] = set()
        self._issued_sync_tokens: set[str] = set()
        self._runner: web.AppRunner | None = None

    # -- endpoints ------------------------------------------------------------

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.base_url}/o/oauth2/v2/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/token"

    @property
    def revoke_endpoint(self) -> str:
        return f"{self.base_url}/revoke"

    @property
    def people_endpoint(self) -> str:
        return f"{self.base_url}/v1/people/me/connections"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/o/oauth2/v2/auth", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_post("/revoke", self._revoke)
        app.router.add_get("/v1/people/me/connections", self._connections)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what tests change ------------------------------------------------------

    def put_person(
        self,
        resource: str,
        name: str,
        phones: list[str] | None = None,
        emails: list[str] | None = None,
        *,
        canonical: bool = True,
    ) -> None:
        """Add or change a contact; phones as the user typed them."""
        self._version += 1
        person: dict[str, Any] = {
            "resourceName": resource,
            "etag": f"%{self._version}",
            "names": [{"metadata": {"primary": True}, "displayName": name}],
        }
        if phones:
            person["phoneNumbers"] = [
                {"value": p, **({"canonicalForm": _canonical(p)} if canonical and p.startswith("+") else {})}
                for p in phones
            ]
        if emails:
            person["emailAddresses"] = [{"value": e} for e in emails]
        self._people[resource] = (self._version, person)

    def delete_person(self, resource: str) -> None:
        self._version += 1
        self._people[resource] = (self._version, None)

    def expire_sync_tokens(self) -> None:
        """Every sync token issued so far answers 410 from now on."""
        self._expired_sync_tokens |= self._issued_sync_tokens

    def expire_access_tokens(self) -> None:
        """Access tokens stop working early, as a revoked session would."""
        self._access.clear()

    def revoke_all(self) -> None:
        """The user removes the app's access in their Google account."""
        for grant in self._grants.values():
            grant.revoked = True
        self._access.clear()

    def is_revoked(self, refresh_token: str) -> bool:
        grant = self._grants.get(refresh_token)
        return grant is None or grant.revoked

    def count(self, path: str, **match: str) -> int:
        return sum(1 for p, params in self.requests if p == path and all(params.get(k) == v for k, v in match.items()))

    # -- handlers ---------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        self.requests.append((request.path, q))
        problems = [
            name
            for name, ok in (
                ("client_id", q.get("client_id") == self.client_id),
                ("response_type", q.get("response_type") == "code"),
                ("redirect_uri", bool(q.get("redirect_uri"))),
                ("scope", CONTACTS_SCOPE in q.get("scope", "").split()),
                ("code_challenge", len(q.get("code_challenge", "")) == 43),
                ("code_challenge_method", q.get("code_challenge_method") == "S256"),
                ("access_type", q.get("access_type") == "offline"),
            )
            if not ok
        ]
        if problems:
            return web.Response(status=400, text=f"Error 400: invalid_request ({', '.join(problems)})")
        code = "4/" + secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            client_id=q["client_id"],
            redirect_uri=q["redirect_uri"],
            challenge=q["code_challenge"],
            scope=q["scope"],
        )
        back = {"code": code, "scope": q["scope"]}
        if "state" in q:
            back["state"] = q["state"]
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(back)}")

    def _client_ok(self, request: web.Request, form: dict[str, str]) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user == self.client_id and password == self.client_secret
        return form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((request.path, {k: v for k, v in form.items() if k == "grant_type"}))
        if not self._client_ok(request, form):
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            code = self._codes.get(form.get("code", ""))
            if code is None or code.used:
                return _oauth_error(400, "invalid_grant", "Malformed auth code.")
            code.used = True
            if form.get("redirect_uri") != code.redirect_uri:
                return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
            if challenge.decode() != code.challenge:
                return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
            new = _Grant(refresh_token="1//" + secrets.token_urlsafe(32), scope=code.scope)
            self._grants[new.refresh_token] = new
            body = self._issue(new)
            body["refresh_token"] = new.refresh_token
            return web.json_response(body)
        if grant_type == "refresh_token":
            known = self._grants.get(form.get("refresh_token", ""))
            if known is None or known.revoked:
                return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
            return web.json_response(self._issue(known))
        return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type")

    def _issue(self, grant: _Grant) -> dict[str, Any]:
        token = "ya29." + secrets.token_urlsafe(32)
        grant.access_tokens.add(token)
        self._access[token] = (grant, time.time() + self.access_token_lifetime)
        return {
            "access_token": token,
            "expires_in": self.access_token_lifetime,
            "scope": grant.scope,
            "token_type": "Bearer",
        }

    async def _revoke(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        token = form.get("token") or request.query.get("token", "")
        self.requests.append((request.path, {}))
        grant = self._grants.get(token)
        if grant is None and token in self._access:
            grant = self._access[token][0]
        if grant is None or grant.revoked:
            return _oauth_error(400, "invalid_token", "Token expired or revoked")
        grant.revoked = True
        for access in grant.access_tokens:
            self._access.pop(access, None)
        return web.json_response({})

    async def _connections(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.requests.append((request.path, q))
        header = request.headers.get("Authorization", "")
        access = self._access.get(header[7:]) if header.startswith("Bearer ") else None
        if access is None or access[1] < time.time() or access[0].revoked:
            return _api_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        if not q.get("personFields"):
            return _api_error(
                400, "INVALID_ARGUMENT", "personMask is required. Please specify one or more valid paths."
            )
        page_size = int(q.get("pageSize", "100"))
        if not 1 <= page_size <= 1000:
            return _api_error(400, "INVALID_ARGUMENT", "pageSize must be from 1 to 1000.")

        sync_token = q.get("syncToken")
        if sync_token:
            if sync_token in self._expired_sync_tokens or sync_token not in self._issued_sync_tokens:
                return _api_error(
                    410,
                    "FAILED_PRECONDITION",
                    "Sync token is expired. Clear local cache and retry call without the sync token.",
                    reason="EXPIRED_SYNC_TOKEN",
                )
            since = int(sync_token.split("-")[1])
            listing = [
                person if person is not None else {"resourceName": r, "metadata": {"deleted": True}}
                for r, (version, person) in sorted(self._people.items())
                if version > since
            ]
        else:
            listing = [person for _, (_, person) in sorted(self._people.items()) if person is not None]

        start = 0
        if q.get("pageToken"):
            start = int(q["pageToken"].split("-")[1])
        page = listing[start : start + page_size]
        body: dict[str, Any] = {"connections": page, "totalPeople": len(listing), "totalItems": len(listing)}
        if start + page_size < len(listing):
            body["nextPageToken"] = f"page-{start + page_size}"
        elif q.get("requestSyncToken") == "true":
            token = f"sync-{self._version}-{secrets.token_hex(4)}"
            self._issued_sync_tokens.add(token)
            body["nextSyncToken"] = token
        if not page:
            body.pop("connections")  # Google leaves the field out when empty
        return web.json_response(body)


def _canonical(raw: str) -> str:
    return "+" + "".join(c for c in raw if c.isdigit())


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _api_error(status: int, state: str, message: str, *, reason: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": state}
    if reason:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
        ]
    return web.json_response({"error": error}, status=status)
