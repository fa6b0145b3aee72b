"""An outbox of a session's events (core/events/handler.Outbox) that keeps
what it is given, for tests of EventsHandler.follow."""

from __future__ import annotations

from wac.v1 import events_pb2


class Collected:
    """Room for ``room`` events: an offer beyond is refused (the follower
    then reads and puts); a put always takes it."""

    def __init__(self, room: int = 1000) -> None:
        self.room = room
        self.events: list[tuple[int, events_pb2.Event]] = []
        self.offered = 0

    def offer(self, seq: int, event: events_pb2.Event) -> bool:
        if len(self.events) >= self.room:
            return False
        self.offered += 1
        self.events.append((seq, event))
        return True

    async def put(self, seq: int, event: events_pb2.Event) -> None:
        self.events.append((seq, event))

    @property
    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.events]
