"""The media server, as conferences see it: rooms made and destroyed, each
participant admitted with a room token and kicked out, and the tokens that
let a browser reach the media server.

``ConferenceBridge`` is the interface; the Janus connector
(``connectors/janus.py``) implements it over the VideoRoom plugin's admin
API, and the composition root hands it in (core imports connectors only
there). ``NoBridge`` stands in when Janus is not running: conferences are
off, and every method says so.
"""

from __future__ import annotations

from typing import Protocol

from core import failures

OFF = "conferences are off: Janus is not running"


class ConferenceBridge(Protocol):
    """A media server's rooms. Its failures are the core's
    (``core/failures.py``): ``Unavailable`` when the server does not answer
    (the caller may retry), ``FailedPrecondition`` when there is none."""

    @property
    def janus_path(self) -> str:
        """The path of the media server's WebSocket API on the front door
        (e.g. "/janus"), which JoinConference hands the SDK."""
        ...

    async def create_room(self, conference_id: str, *, video: bool) -> int:
        """Make the conference's room (audio only unless ``video``) and
        answer its id: unguessable, and a JavaScript-safe integer (below
        2**53), since the SDK sends it to the media server as a JSON number.
        The room must let in only publishers ``admit`` let in, and hold
        ``[conferences] max_participants`` publishers (wac refuses a join
        past it)."""
        ...

    async def destroy_room(self, room: int) -> None:
        """End the room, and with it every participant's media. A room that
        is gone already is not an error."""
        ...

    async def admit(self, room: int) -> str:
        """A new room token the room lets one participant in with (its
        allow-list): a media-server token alone, which cannot be revoked,
        lets nobody in."""
        ...

    async def revoke(self, room: int, token: str) -> None:
        """Take a room token ``admit`` gave back: it lets nobody in any more.
        A room that is gone already is not an error."""
        ...

    async def kick(self, room: int, feed_id: int) -> None:
        """Take the publisher ``feed_id`` out of the room (after its room
        token was revoked, so that it cannot come back). A feed that is not
        (or no longer) in the room is not an error: a participant who left
        may have left the media server first."""
        ...

    async def join_token(self, expires_at: float) -> str:
        """A media-server token valid until ``expires_at`` (unix time),
        limited to the VideoRoom plugin."""
        ...


class NoBridge:
    """The bridge when Janus is not running: every method refuses.

    FAILED_PRECONDITION rather than UNAVAILABLE: UNAVAILABLE tells a client
    to retry (core/failures.py: a system that did not answer), and the
    Janus connector answers that when Janus is down for a moment. Here there
    is no media server in this deployment at all, and no retry helps until
    an operator installs or starts Janus: the system is not in the state the
    request needs."""

    @property
    def janus_path(self) -> str:
        raise failures.FailedPrecondition(OFF)

    async def create_room(self, conference_id: str, *, video: bool) -> int:
        raise failures.FailedPrecondition(OFF)

    async def destroy_room(self, room: int) -> None:
        raise failures.FailedPrecondition(OFF)

    async def admit(self, room: int) -> str:
        raise failures.FailedPrecondition(OFF)

    async def revoke(self, room: int, token: str) -> None:
        raise failures.FailedPrecondition(OFF)

    async def kick(self, room: int, feed_id: int) -> None:
        raise failures.FailedPrecondition(OFF)

    async def join_token(self, expires_at: float) -> str:
        raise failures.FailedPrecondition(OFF)
