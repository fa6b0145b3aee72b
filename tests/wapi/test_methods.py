"""edges.wapi.methods: the table comes from the descriptors, for any service."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import Message

from edges.wapi.core_client import CoreClient
from edges.wapi.dispatch import Dispatcher
from edges.wapi.methods import MethodTable, wac_services
from edges.wapi.rpc import Request, RpcError

TABLE = MethodTable.for_package()


def test_every_method_of_every_service() -> None:
    expected = {f"{s.name}.{m.name}" for s in wac_services() for m in s.methods}
    assert {method.name for method in TABLE} == expected
    assert {"IdentityService.Login", "PresenceService.SetPresence", "CallsService.CreateCall"} <= expected
    subscribe = TABLE.get("EventsService.Subscribe")
    assert subscribe is not None and subscribe.path == "/wac.v1.EventsService/Subscribe"
    assert {m.name for m in TABLE if m.server_streaming and not m.client_streaming} == {"EventsService.Subscribe"}
    # No method of the contract streams from the client: the edge's own stream
    # to the core is in wac.internal.v1, which the table is never built from.
    assert {m.name for m in TABLE if m.client_streaming} == set()
    assert TABLE.get("EventsService.StreamEvents") is None and TABLE.get("EdgeStreamService.StreamEvents") is None
    assert {m.name for m in TABLE if m.opens_session} == {"IdentityService.Login", "IdentityService.RefreshSession"}


def test_params_errors_name_the_field() -> None:
    update = TABLE.get("IdentityService.UpdateSubscriber")
    assert update is not None
    cases = {
        '"nope"': {"nope": 1},
        "subscriber.displayNam": {"subscriber": {"displayNam": "x"}},
        "phoneNumbers": {"subscriber": {"phoneNumbers": "x"}},
        "updateMask": {"updateMask": 3},
    }
    for words, params in cases.items():
        with pytest.raises(RpcError) as raised:
            update.parse_params(params)
        assert raised.value.code == -32602
        assert words.strip('"').split(".")[-1] in raised.value.message
        assert "\n" not in raised.value.message


def new_service_pool() -> descriptor_pool.DescriptorPool:
    """A service no edge code has heard of, as a .proto file would add it."""
    pool = descriptor_pool.DescriptorPool()
    proto = descriptor_pb2.FileDescriptorProto(name="test/v1/echo.proto", package="test.v1", syntax="proto3")
    message = proto.message_type.add(name="Shout")
    message.field.add(name="loud_text", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)  # fmt: skip
    service = proto.service.add(name="EchoService")
    service.method.add(name="Echo", input_type=".test.v1.Shout", output_type=".test.v1.Shout")
    service.method.add(name="Many", input_type=".test.v1.Shout", output_type=".test.v1.Shout", server_streaming=True)
    service.method.add(name="Gather", input_type=".test.v1.Shout", output_type=".test.v1.Shout", client_streaming=True)
    pool.Add(proto)
    return pool


async def test_a_new_method_is_reachable_with_no_edge_change() -> None:
    service = new_service_pool().FindServiceByName("test.v1.EchoService")
    table = MethodTable([service])
    echo = table.get("EchoService.Echo")
    assert echo is not None and echo.path == "/test.v1.EchoService/Echo" and not echo.server_streaming
    assert table.get("EchoService.Many").server_streaming  # type: ignore[union-attr]

    async def shout(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        message: Message = echo.request_type.FromString(request)
        message.loud_text = message.loud_text.upper()  # type: ignore[attr-defined]
        return message.SerializeToString()

    server = grpc.aio.server()
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(shout)}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.v1.EchoService", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = CoreClient(f"127.0.0.1:{port}", deadline=5)
    try:
        dispatcher = Dispatcher(table, client)
        method, message = dispatcher.resolve(Request("EchoService.Echo", {"loud_text": "hi"}, 1))
        assert await dispatcher.call(method, message, None, "") == {"loudText": "HI"}
    finally:
        await client.close()
        await server.stop(None)


async def test_a_method_streaming_from_the_client_is_in_the_table_but_never_callable() -> None:
    table = MethodTable([new_service_pool().FindServiceByName("test.v1.EchoService")])
    gather = table.get("EchoService.Gather")
    assert gather is not None and gather.client_streaming
    client = CoreClient("127.0.0.1:1", deadline=5)
    try:
        with pytest.raises(RpcError) as refused:
            Dispatcher(table, client).resolve(Request("EchoService.Gather", {}, 1))
        assert refused.value.code == -32601
        assert refused.value.message == "EchoService.Gather streams from the client, which the WAPI does not carry"
    finally:
        await client.close()


def test_stream_json_equals_the_plain_conversion() -> None:
    from edges.wapi.methods import StreamJson, to_json
    from edges.wapi.rpc import encode
    from wac.v1 import events_pb2, identity_pb2, presence_pb2

    presence = presence_pb2.Presence(username="bob", status=presence_pb2.Presence.AWAY, note='é "quoted"')
    shared = events_pb2.Event(presence_changed=presence)
    shared.time.FromSeconds(1_800_000_000)
    messages = [
        *(events_pb2.Event(seq=n, time=shared.time, presence_changed=presence) for n in (1, 2, 9_007_199_254_740_993)),
        events_pb2.Event(seq=0, presence_changed=presence),  # seq 0 is omitted
        events_pb2.Event(seq=5),  # nothing but seq
        events_pb2.Event(),
        events_pb2.Event(seq=7, session_revoked=events_pb2.SessionRevoked(session_id="s", reason="logout")),
        identity_pb2.Subscriber(username="no-seq-field"),
    ]
    converter = StreamJson(size=2)
    for _ in range(2):  # cold, then from the cache
        for message in messages:
            before = message.SerializeToString()
            assert converter.text(message) == encode(to_json(message))
            assert message.SerializeToString() == before  # seq restored
