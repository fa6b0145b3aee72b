"""Conferences tables: one row per conference, one per member (its creator
and each invitee), kept after the end as the conferences' history.

Every core reads and writes these alone: who is in which room lives here,
not in a core's memory, so any core of a cluster answers for any conference.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table

from core.db.metadata import metadata

conferences = Table(
    "conferences",
    metadata,
    Column("conference_id", String(32), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("creator", String(64), nullable=False),
    # AUDIO or AUDIO_VIDEO (rules.Media values).
    Column("media", String(16), nullable=False),
    # ACTIVE or ENDED (rules.State values).
    Column("state", String(16), nullable=False),
    # The room's id on the media server, as the bridge created it.
    Column("room", BigInteger, nullable=False),
    Column("create_time", Float, nullable=False),
    Column("end_time", Float, nullable=True),
    # The creator's username, the operator's API key name, or "wac".
    Column("ended_by", String(64), nullable=True),
    # CREATOR, OPERATOR or IDLE (rules.EndReason values) once ended.
    Column("end_reason", String(16), nullable=True),
    # Since when its room has been empty, while active; NULL while someone
    # is in it: the idle sweep's question.
    Column("idle_since", Float, nullable=True),
)
# An operator's list: the active conferences newest first, an index walk.
Index("ix_conferences_state_create_time", conferences.c.state, conferences.c.create_time, conferences.c.conference_id)
# Every conference newest first, for operators' call history.
Index("ix_conferences_create_time", conferences.c.create_time, conferences.c.conference_id)

conference_members = Table(
    "conference_members",
    metadata,
    Column("conference_id", String(32), primary_key=True),
    Column("username", String(64), primary_key=True),
    # 0 for the creator, then each invitee in the order invited.
    Column("position", Integer, nullable=False),
    # The conference's create time and whether it is active, copied here so
    # that a subscriber's list (active first, newest first) is a walk of one
    # index instead of a sort of all its conferences on every page.
    Column("create_time", Float, nullable=False),
    Column("active", Boolean, nullable=False),
    # While the member is in the room: the device (session) it joined from,
    # the publisher id wac gave it, since when, and the room token the media
    # server admitted it with (taken back when it leaves). NULL otherwise.
    Column("session_id", String(64), nullable=True),
    Column("feed_id", BigInteger, nullable=True),
    Column("join_time", Float, nullable=True),
    Column("room_token", String(64), nullable=True),
    # When the member first entered the room (kept after it left): the
    # attendees of the call history.
    Column("first_join_time", Float, nullable=True),
)
Index(
    "ix_conference_members_username_active",
    conference_members.c.username,
    conference_members.c.active,
    conference_members.c.create_time,
    conference_members.c.conference_id,
)
# A member's call history: its conferences newest first, both states.
Index(
    "ix_conference_members_username_create_time",
    conference_members.c.username,
    conference_members.c.create_time,
    conference_members.c.conference_id,
)
# The rooms a device is in, when it goes offline or its session ends.
Index(
    "ix_conference_members_session_id",
    conference_members.c.session_id,
    sqlite_where=conference_members.c.session_id.isnot(None),
)
