"""Stand-ins for the core and the WAPI edge: just enough to see what Envoy does."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from wac.v1 import identity_pb2, identity_pb2_grpc


def status_trailer(code: int, message: str, *details: Message) -> tuple[tuple[str, bytes], ...]:
    """grpc-status-details-bin, as grpcio-status would write it."""
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)
        packed.append(item)
    status = status_pb2.Status(code=code, message=message, details=packed)
    return (("grpc-status-details-bin", status.SerializeToString()),)


class StubIdentity(identity_pb2_grpc.IdentityServiceServicer):
    """Answers the few identity calls the tests make, including errors with details."""

    def __init__(self) -> None:
        # The metadata of each GetJwks call, to see what Envoy forwards.
        self.seen: list[dict[str, str]] = []

    async def GetJwks(
        self, request: identity_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Jwks:
        metadata = context.invocation_metadata() or ()
        self.seen.append({key: value for key, value in metadata if isinstance(value, str)})
        key = identity_pb2.Jwk(kty="OKP", crv="Ed25519", x="11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", kid="k1")
        return identity_pb2.Jwks(keys=[key])

    async def GetSubscriber(
        self, request: identity_pb2.GetSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Subscriber:
        if request.username == "alice":
            return identity_pb2.Subscriber(username="alice", display_name="Alice")
        message = f"no subscriber {request.username!r}"
        resource = error_details_pb2.ResourceInfo(resource_type="wac.v1.Subscriber", resource_name=request.username)
        await context.abort(
            grpc.StatusCode.NOT_FOUND,
            message,
            trailing_metadata=status_trailer(code_pb2.NOT_FOUND, message, resource),
        )
        raise AssertionError("context.abort raises")  # for the type checker

    async def CreateSubscriber(
        self, request: identity_pb2.CreateSubscriberRequest, context: grpc.aio.ServicerContext
    ) -> identity_pb2.Subscriber:
        if not request.subscriber.username:
            message = "subscriber.username is required"
            violation = error_details_pb2.BadRequest.FieldViolation(field="subscriber.username", description="required")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                message,
                trailing_metadata=status_trailer(
                    code_pb2.INVALID_ARGUMENT,
                    message,
                    error_details_pb2.BadRequest(field_violations=[violation]),
                ),
            )
        return request.subscriber


async def echo(connection: ServerConnection) -> None:
    """The edge's WebSocket side: answers each message with "echo <message>"."""
    async for received in connection:
        text = received if isinstance(received, str) else received.decode()
        await connection.send(f"echo {text}")


def name_the_path(connection: ServerConnection, request: Request) -> Response | None:
    """The edge's plain HTTP side: answers "edge <path>"; WebSocket upgrades go on to echo."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    return connection.respond(200, f"edge {request.path}\n")
