"""Conferences in the call history: each one an entry of ListCalls
(``core/calls/history.py``), read from the conferences' own rows.

An entry is ACTIVE while the conference is, then ENDED: OPERATOR when an
operator ended it, else COMPLETED when somebody entered its room and
NO_ANSWER when nobody did. Its answer time is the first entrance, so its
duration is how long the room was in use, from then to the end.
"""

from __future__ import annotations

from core.calls.machine import CallInfo, CallState, ConferenceSummary, EndReason, Media, Via
from core.conferences.rules import Conference, State
from core.conferences.rules import EndReason as ConferenceEndReason
from core.conferences.store import ConferenceStore

_STATES = {CallState.ACTIVE: State.ACTIVE, CallState.ENDED: State.ENDED}


class ConferenceHistory:
    """The conferences' HistorySource."""

    def __init__(self, store: ConferenceStore) -> None:
        self._store = store

    async def entries(
        self, *, party: str | None, state: CallState | None, before: tuple[float, str] | None, limit: int
    ) -> list[CallInfo]:
        if state is CallState.RINGING:
            return []  # a conference never rings
        wanted = None if state is None else _STATES[state]
        found = await self._store.history(party, state=wanted, before=before, limit=limit)
        return [entry(c) for c in found]


def entry(conference: Conference) -> CallInfo:
    """The conference as the call history shows it."""
    ended = conference.state is State.ENDED
    reason: EndReason | None = None
    if ended:
        if conference.end_reason is ConferenceEndReason.OPERATOR:
            reason = EndReason.OPERATOR
        else:
            reason = EndReason.COMPLETED if conference.attendees else EndReason.NO_ANSWER
    return CallInfo(
        call_id=conference.conference_id,
        caller=conference.creator,
        caller_device="",
        callee="",
        state=CallState.ENDED if ended else CallState.ACTIVE,
        media=Media(audio=True, video=conference.media.video),
        offered_devices=(),
        callee_device=None,
        create_time=conference.create_time,
        answer_time=conference.first_join_time,
        end_time=conference.end_time,
        end_reason=reason,
        ended_by=conference.ended_by or None,
        end_detail="",
        via=Via.CONFERENCE,
        conference=ConferenceSummary(conference.title, conference.invitees, conference.attendees),
    )
