"""The vendor connector to Janus, the conferences' media server: its HTTP
API (``http://<[conferences] janus_api_listen>/janus``, loopback only) and
its signed tokens.

Janus runs in signed-token mode (cli/janus.py): it admits a request only
with a token wac signed, "<expiry>,janus,janus.plugin.videoroom" and its
HMAC-SHA1 under the token secret, valid until the expiry and for the
VideoRoom plugin alone. A browser gets one per JoinConference, expiring
with its wac session at the latest; the core signs its own, short ones.

Each room is created private, with a secret of its own (derived from the
room admin key, so no state is kept for it) without which it can be
neither changed nor destroyed, and with an allow-list of room tokens: a
participant publishes with the room token wac admitted it with (and
subscribes with its publisher's private id), and a kick removes that token
before it ends the participant's presence in the room, so that a Janus
token, which cannot be revoked, lets no one back in.

``JanusRooms`` raises ``JanusError``; ``JanusBridge`` is the core's
ConferenceBridge over it, with the core's failures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from core import failures

log = logging.getLogger("wac.conferences")

PLUGIN = "janus.plugin.videoroom"
# Where a browser reaches Janus's WebSocket API: the front door's route (envoy.yaml.tmpl).
PATH = "/janus"
# Janus answers within milliseconds on loopback; longer is a Janus that is down or stuck.
TIMEOUT = 3.0
# The lifetime of the tokens the core signs for its own requests.
OWN_TOKEN_SECONDS = 60
# Room ids below 2**53, so that JavaScript reads them exactly.
_ROOM_IDS = 1 << 53
# The VideoRoom's answers: no such room, no such participant.
NO_SUCH_ROOM = 426
NO_SUCH_FEED = 428
ROOM_EXISTS = 427


class JanusError(Exception):
    """A request to Janus failed: unreachable, too slow, or refused.
    ``code`` is Janus's (or its plugin's) error code, None without an answer."""

    def __init__(self, request: str, message: str, code: int | None = None) -> None:
        super().__init__(f"Janus {request}: {message}")
        self.request = request
        self.code = code
        self.detail = message


def sign_token(secret: str, expires_at: float, plugins: tuple[str, ...] = (PLUGIN,)) -> str:
    """A Janus signed token (token_auth_secret mode) valid until ``expires_at``
    (seconds since the epoch) for ``plugins``."""
    data = ",".join((str(int(expires_at)), "janus", *plugins))
    signature = hmac.new(secret.encode(), data.encode(), hashlib.sha1).digest()
    return f"{data}:{base64.b64encode(signature).decode()}"


@dataclass(frozen=True)
class RoomSettings:
    """What every conference room is created with."""

    max_participants: int = 16
    # Bits per second each publisher may send (Janus's "bitrate"); 0: no cap.
    bitrate: int = 512_000


class JanusRooms:
    """VideoRoom rooms over Janus's HTTP API, and the tokens browsers join with.

    ``token_secret`` and ``room_admin_key`` come from settings/januskey.py.
    Each operation opens a Janus session of its own and ends it: rooms are
    made and ended rarely, and a session kept open would need keepalives.
    """

    def __init__(
        self,
        api_url: str,
        *,
        token_secret: str,
        room_admin_key: str,
        settings: RoomSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = api_url.rstrip("/")
        self._token_secret = token_secret
        self._room_admin = room_admin_key
        self._settings = settings or RoomSettings()
        self._clock = clock
        self._client = httpx.AsyncClient(timeout=TIMEOUT)
        self._transactions = itertools.count(1)

    @property
    def janus_path(self) -> str:
        return PATH

    async def join_token(self, expires_at: float) -> str:
        """The token a browser reaches Janus with, until ``expires_at``."""
        return sign_token(self._token_secret, expires_at)

    def room_secret(self, room: int) -> str:
        """The secret of ``room``, without which it is neither changed nor destroyed."""
        return hmac.new(self._room_admin.encode(), f"room {room}".encode(), hashlib.sha256).hexdigest()

    async def create_room(self, conference_id: str, *, video: bool) -> int:
        """A private room for the conference; its id, drawn at random (a
        second draw if Janus already holds the first: one chance in 2**53)."""
        room = secrets.randbelow(_ROOM_IDS - 1) + 1
        try:
            await self._request(self._room_body(room, conference_id, video), "create")
        except JanusError as exc:
            if exc.code != ROOM_EXISTS:
                raise
            room = secrets.randbelow(_ROOM_IDS - 1) + 1
            await self._request(self._room_body(room, conference_id, video), "create")
        return room

    def _room_body(self, room: int, conference_id: str, video: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "request": "create",
            "admin_key": self._room_admin,
            "room": room,
            "description": conference_id[:64],
            "secret": self.room_secret(room),
            "is_private": True,
            "permanent": False,
            "publishers": self._settings.max_participants,
            "bitrate": self._settings.bitrate,
            "audiocodec": "opus",
            "videocodec": "vp8",
            "notify_joining": True,
            # Only who wac admitted joins: a publisher with an allowed room
            # token, a subscriber with a publisher's private id in the room.
            "allowed": [],
            "require_pvtid": True,
        }
        if not video:
            # An audio-only conference: the SDK publishes audio alone, and
            # a client that sends video anyway gets audio's bitrate.
            body["bitrate"] = 64_000
        return body

    async def destroy_room(self, room: int) -> None:
        """End the room: every participant is told and dropped. A room
        already gone is not an error."""
        try:
            await self._request({"request": "destroy", "room": room, "secret": self.room_secret(room)}, "destroy")
        except JanusError as exc:
            if exc.code != NO_SUCH_ROOM:
                raise

    async def admit(self, room: int) -> str:
        """A room token, added to the room's allow-list: the participant joins with it."""
        token = secrets.token_urlsafe(24)
        await self._allowed(room, "add", token)
        return token

    async def revoke(self, room: int, token: str) -> None:
        """Take a room token off the allow-list: it admits no one any more."""
        try:
            await self._allowed(room, "remove", token)
        except JanusError as exc:
            if exc.code != NO_SUCH_ROOM:
                raise

    async def kick(self, room: int, feed_id: int) -> None:
        """End one participant's presence in the room (its publisher and
        subscriptions). One already gone is not an error."""
        try:
            await self._request(
                {"request": "kick", "room": room, "id": feed_id, "secret": self.room_secret(room)}, "kick"
            )
        except JanusError as exc:
            if exc.code not in (NO_SUCH_ROOM, NO_SUCH_FEED):
                raise

    async def participants(self, room: int) -> list[dict[str, Any]]:
        """The room's participants as Janus lists them (id, display, publisher)."""
        answer = await self._request({"request": "listparticipants", "room": room}, "listparticipants")
        found: list[dict[str, Any]] = answer.get("participants", [])
        return found

    async def close(self) -> None:
        await self._client.aclose()

    # -- the HTTP API ----------------------------------------------------
    async def _allowed(self, room: int, action: str, token: str) -> None:
        secret = self.room_secret(room)
        body = {"request": "allowed", "room": room, "secret": secret, "action": action, "allowed": [token]}
        await self._request(body, f"allowed {action}")

    async def _request(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        """One synchronous VideoRoom request; its plugin data, or JanusError."""
        async with self._handle(name) as post:
            answer = await post({"janus": "message", "body": body})
        data: dict[str, Any] = answer.get("plugindata", {}).get("data", {})
        if "error_code" in data:
            raise JanusError(name, str(data.get("error", "refused")), int(data["error_code"]))
        return data

    @asynccontextmanager
    async def _handle(self, name: str) -> AsyncIterator[Callable[[dict[str, Any]], Any]]:
        """A session attached to the VideoRoom for one operation, then ended."""
        token = sign_token(self._token_secret, self._clock() + OWN_TOKEN_SECONDS)
        session = (await self._post(self._url, {"janus": "create"}, token, name))["data"]["id"]
        try:
            attached = await self._post(f"{self._url}/{session}", {"janus": "attach", "plugin": PLUGIN}, token, name)
            handle = attached["data"]["id"]

            async def post(message: dict[str, Any]) -> dict[str, Any]:
                return await self._post(f"{self._url}/{session}/{handle}", message, token, name)

            yield post
        finally:
            try:
                await self._post(f"{self._url}/{session}", {"janus": "destroy"}, token, name)
            except JanusError as exc:  # it times out on its own within a minute
                log.debug("Janus session not ended: %s", exc)

    async def _post(self, url: str, message: dict[str, Any], token: str, name: str) -> dict[str, Any]:
        payload = {**message, "transaction": f"wac-{next(self._transactions)}", "token": token}
        try:
            response = await self._client.post(url, json=payload)
            answer: dict[str, Any] = response.json()
        except httpx.TimeoutException:
            raise JanusError(name, f"no answer within {TIMEOUT:g} s") from None
        except httpx.HTTPError as exc:
            raise JanusError(name, f"unreachable ({type(exc).__name__})") from None
        except ValueError:
            raise JanusError(name, "answered with something other than JSON") from None
        if answer.get("janus") == "error":
            error = answer.get("error", {})
            raise JanusError(name, str(error.get("reason", "refused")), error.get("code"))
        return answer


class JanusBridge:
    """core/conferences/bridge.py's ConferenceBridge over ``JanusRooms``:
    a Janus that does not answer, or refuses, is the core's UNAVAILABLE
    (the caller may retry), never a trace."""

    def __init__(self, rooms: JanusRooms) -> None:
        self._rooms = rooms

    @property
    def janus_path(self) -> str:
        return self._rooms.janus_path

    async def create_room(self, conference_id: str, *, video: bool) -> int:
        async with _unavailable():
            return await self._rooms.create_room(conference_id, video=video)

    async def destroy_room(self, room: int) -> None:
        async with _unavailable():
            await self._rooms.destroy_room(room)

    async def admit(self, room: int) -> str:
        async with _unavailable():
            return await self._rooms.admit(room)

    async def revoke(self, room: int, token: str) -> None:
        async with _unavailable():
            await self._rooms.revoke(room, token)

    async def kick(self, room: int, feed_id: int) -> None:
        async with _unavailable():
            await self._rooms.kick(room, feed_id)

    async def join_token(self, expires_at: float) -> str:
        return await self._rooms.join_token(expires_at)

    async def close(self) -> None:
        await self._rooms.close()


@asynccontextmanager
async def _unavailable() -> AsyncIterator[None]:
    try:
        yield
    except JanusError as exc:
        log.warning("Janus: %s", exc)
        raise failures.Unavailable("the conferences' media server did not answer; try again shortly") from None
