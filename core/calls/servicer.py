"""CallsService: translates the protobuf API to the calls handler.

Access and signalling rules live in ``handler.py`` and ``machine.py``;
this module reads the caller, converts messages and, in a cluster, sends an
input for a call another core owns to that core (``forward.py``). GetCall
and ListCalls are answered here: every transition is committed to the store
before it is answered, so any core reads a call as its owner left it.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message

from core.auth.principal import current, subscriber
from core.calls import messages
from core.calls.forward import Forwarder, forwarded
from core.calls.handler import CallHandler
from core.convert import duration
from wac.v1 import calls_pb2, calls_pb2_grpc

_SERVICE = "/" + calls_pb2.DESCRIPTOR.services_by_name["CallsService"].full_name + "/"
R = TypeVar("R", bound=Message)


class CallsServicer(calls_pb2_grpc.CallsServiceServicer):
    def __init__(self, handler: CallHandler, forwarder: Forwarder | None = None) -> None:
        """``forwarder``: in a cluster, how inputs reach their call's owner."""
        self._calls = handler
        self._forwarder = forwarder

    async def _owner(self, call_id: str, context: grpc.aio.ServicerContext) -> str | None:
        """The other core the input must go to, if any."""
        if self._forwarder is None:
            return None
        return await self._calls.locate(call_id, forwarded=forwarded(context))

    async def _forward(
        self, owner: str, method: str, request: Message, response_type: type[R], context: grpc.aio.ServicerContext
    ) -> R:
        assert self._forwarder is not None
        return await self._forwarder.unary(owner, _SERVICE + method, request, response_type, context)

    async def CreateCall(
        self, request: calls_pb2.CreateCallRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.Call:
        who = subscriber()
        call = await self._calls.create(
            who,
            callee=request.callee,
            media=messages.media(request),
            offer=messages.description("offer", request.offer),
        )
        return messages.call_pb(call)

    async def AnswerCall(
        self, request: calls_pb2.AnswerCallRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.Call:
        who = subscriber()
        answer = messages.description("answer", request.answer)
        if owner := await self._owner(request.call_id, context):
            return await self._forward(owner, "AnswerCall", request, calls_pb2.Call, context)
        return messages.call_pb(await self._calls.answer(who, request.call_id, answer))

    async def RejectCall(
        self, request: calls_pb2.RejectCallRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.Call:
        who = subscriber()
        busy = request.reason == calls_pb2.RejectCallRequest.BUSY
        if owner := await self._owner(request.call_id, context):
            return await self._forward(owner, "RejectCall", request, calls_pb2.Call, context)
        return messages.call_pb(await self._calls.reject(who, request.call_id, busy=busy))

    async def HangupCall(
        self, request: calls_pb2.HangupCallRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.Call:
        who = current()
        assert who is not None  # the policy admits no anonymous caller
        if owner := await self._owner(request.call_id, context):
            return await self._forward(owner, "HangupCall", request, calls_pb2.Call, context)
        return messages.call_pb(await self._calls.hangup(who, request.call_id))

    async def SendIceCandidate(
        self, request: calls_pb2.SendIceCandidateRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.SendIceCandidateResponse:
        who = subscriber()
        candidate = messages.candidate(request)
        if owner := await self._owner(request.call_id, context):
            return await self._forward(owner, "SendIceCandidate", request, calls_pb2.SendIceCandidateResponse, context)
        await self._calls.ice_candidate(who, request.call_id, candidate, request.end_of_candidates)
        return calls_pb2.SendIceCandidateResponse()

    async def Renegotiate(
        self, request: calls_pb2.RenegotiateRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.Call:
        who = subscriber()
        description = messages.description("description", request.description)
        if owner := await self._owner(request.call_id, context):
            return await self._forward(owner, "Renegotiate", request, calls_pb2.Call, context)
        return messages.call_pb(await self._calls.renegotiate(who, request.call_id, description))

    async def GetCall(self, request: calls_pb2.GetCallRequest, context: grpc.aio.ServicerContext) -> calls_pb2.Call:
        who = current()
        assert who is not None
        return messages.call_pb(await self._calls.get(who, request.call_id))

    async def ListCalls(
        self, request: calls_pb2.ListCallsRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.ListCallsResponse:
        who = current()
        assert who is not None
        calls, next_token = await self._calls.list_calls(
            who,
            state=messages.state(request.state),
            subscriber=request.subscriber,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return calls_pb2.ListCallsResponse(calls=[messages.call_pb(c) for c in calls], next_page_token=next_token)

    async def GetIceServers(
        self, request: calls_pb2.GetIceServersRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.GetIceServersResponse:
        servers, ttl = self._calls.ice_servers(subscriber())
        response = calls_pb2.GetIceServersResponse(
            ice_servers=[
                calls_pb2.IceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers
            ]
        )
        if ttl:
            response.ttl.CopyFrom(duration(ttl))
        return response
