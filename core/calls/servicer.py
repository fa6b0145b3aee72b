"""CallsService: translates the protobuf API to the calls handler.

Access and signalling rules live in ``handler.py`` and ``machine.py``;
this module reads the caller, converts messages and nothing else.
"""

from __future__ import annotations

import grpc

from core.auth.principal import current, subscriber
from core.calls import messages
from core.calls.handler import CallHandler
from core.convert import duration
from wac.v1 import calls_pb2, calls_pb2_grpc


class CallsServicer(calls_pb2_grpc.CallsServiceServicer):
    def __init__(self, handler: CallHandler) -> None:
        self._calls = handler

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
        return messages.call_pb(await self._calls.answer(who, request.call_id, answer))

    async def RejectCall(
        self, request: calls_pb2.RejectCallRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.Call:
        who = subscriber()
        busy = request.reason == calls_pb2.RejectCallRequest.BUSY
        return messages.call_pb(await self._calls.reject(who, request.call_id, busy=busy))

    async def HangupCall(
        self, request: calls_pb2.HangupCallRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.Call:
        who = current()
        assert who is not None  # the policy admits no anonymous caller
        return messages.call_pb(await self._calls.hangup(who, request.call_id))

    async def SendIceCandidate(
        self, request: calls_pb2.SendIceCandidateRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.SendIceCandidateResponse:
        who = subscriber()
        candidate = messages.candidate(request)
        await self._calls.ice_candidate(who, request.call_id, candidate, request.end_of_candidates)
        return calls_pb2.SendIceCandidateResponse()

    async def Renegotiate(
        self, request: calls_pb2.RenegotiateRequest, context: grpc.aio.ServicerContext
    ) -> calls_pb2.Call:
        who = subscriber()
        description = messages.description("description", request.description)
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
