"""SAPI test helpers: a whole stack (real core, real Envoy) with a roles file,
HTTP clients that each hold an API key, and the one error shape."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx

from core.clock import SYSTEM_CLOCK, Clock
from tests.calls.support import Call, Device, description
from tests.support.core import login
from tests.support.stack import Stack, running_stack
from tests.support.timing import seconds
from wac.v1 import calls_pb2

D = TypeVar("D", bound=Device)

# A gateway's subscribers may call any number starting with +34, and make
# audio calls only. Loaded through WAC_CONFIG, as an operator would.
ROLES_TOML = """\
[roles.spain]
permissions = ["call.audio", "call.pstn:+34"]
"""
SPAIN = ["call.audio", "call.pstn:+34"]
USER = ["call.audio", "call.video", "contacts.directory", "presence.publish"]
PASSWORD = "correct horse"


@asynccontextmanager
async def sapi_stack(
    tmp_path: Path, env: Mapping[str, str] | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> AsyncIterator[Stack]:
    """running_stack with the roles file as WAC_CONFIG, plus any overrides."""
    config = tmp_path / "wac.toml"
    config.write_text(ROLES_TOML)
    async with running_stack(tmp_path / "data", {"WAC_CONFIG": str(config), **(env or {})}, clock=clock) as stack:
        yield stack


def sapi_client(stack: Stack, key: str | None = None) -> httpx.AsyncClient:
    """An HTTP client on Envoy's front door, with the API key if one is given."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=stack.url, headers=headers, timeout=seconds())


def assert_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    """SAPI's one error shape, whoever answered (core or Envoy): a google.rpc.Status in JSON."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["details"], list), body
    return body


def bad_request_fields(body: dict[str, Any]) -> list[str]:
    """The fields named by the google.rpc.BadRequest details of an error body."""
    return [
        violation["field"]
        for detail in body["details"]
        if detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        for violation in detail["fieldViolations"]
    ]


def rfc3339(text: str) -> datetime.datetime:
    """Parse a proto3 JSON Timestamp (UTC, "Z", up to nine fractional digits)."""
    assert text.endswith("Z"), text
    whole, _, fraction = text[:-1].partition(".")
    moment = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return moment + datetime.timedelta(microseconds=int((fraction or "0").ljust(9, "0")[:6]))


# The plausible offer a browser would make, reduced to one audio section.
OFFER_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
ANSWER_SDP = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


async def online(stack: Stack, channel: grpc.aio.Channel, username: str, kind: type[D] = Device) -> D:
    """A subscriber's device (a ``kind`` of Device: which events it
    collects), logged in over gRPC with its event stream open."""
    session = await login(channel, username, device="web")
    device = kind(username, session.session_id, session.access_token, channel, stack.core)
    await device.connect()
    return device


async def active_call(caller: Device, callee: Device) -> calls_pb2.Call:
    """The caller calls, the callee answers: the call is ACTIVE and both have seen it so."""
    request = calls_pb2.CreateCallRequest(
        callee=callee.username,
        offer=description(calls_pb2.SessionDescription.OFFER, OFFER_SDP),
        media=calls_pb2.Media(audio=True),
    )
    call = await caller.calls.CreateCall(request, metadata=caller.metadata)
    await callee.expect("call_invited")
    await caller.expect("call_ringing")
    answered = await callee.answer(call.call_id, ANSWER_SDP)
    assert answered.state == Call.ACTIVE
    await caller.expect("call_answered")
    return answered
