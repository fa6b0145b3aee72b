"""Calls tables: one row per call, kept after the end as the call's history."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, String, Table, Text, text

from core.db.metadata import metadata

calls = Table(
    "calls",
    metadata,
    Column("call_id", String(32), primary_key=True),
    Column("caller", String(64), nullable=False),
    # A username, or a tel:/sip: URI for the gateway.
    Column("callee", String(256), nullable=False),
    Column("caller_device", String(64), nullable=False),
    # The callee device that answered, once answered.
    Column("callee_device", String(64), nullable=True),
    Column("media_audio", Boolean, nullable=False),
    Column("media_video", Boolean, nullable=False),
    # RINGING, ACTIVE or ENDED (the machine's CallState values).
    Column("state", String(16), nullable=False),
    Column("create_time", Float, nullable=False),
    Column("answer_time", Float, nullable=True),
    Column("end_time", Float, nullable=True),
    Column("end_reason", String(32), nullable=True),
    Column("ended_by", String(64), nullable=True),
    # A human-readable explanation of the end, for operators reading history.
    Column("end_detail", Text, nullable=False, default=""),
    Column("offered_devices", Text, nullable=False, default="[]"),  # JSON list of session ids
    # The machine's snapshot (JSON) while the call is live; NULL once ended,
    # when the columns above say all there is to say. For a call through the
    # gateway, what wac needs to end it there (its dialog's From tag, CSeq).
    Column("snapshot", Text, nullable=True),
    # WAPI (wac's call machine) or SIP (through the gateway): the Via values.
    Column("via", String(8), nullable=False, server_default=text("'WAPI'")),
    # The SIP Call-ID of a call through the gateway, for operators matching
    # it with the gateway's logs.
    Column("sip_call_id", String(256), nullable=True),
)
# A subscriber's calls newest first: one index per role, merged by the query;
# call_id breaks ties in create_time so that paging is a pure index walk.
Index("ix_calls_caller_create_time", calls.c.caller, calls.c.create_time, calls.c.call_id)
Index("ix_calls_callee_create_time", calls.c.callee, calls.c.create_time, calls.c.call_id)
# Every call newest first, for operators.
Index("ix_calls_create_time", calls.c.create_time, calls.c.call_id)
# The live calls a restarted core loads.
Index("ix_calls_state", calls.c.state)
