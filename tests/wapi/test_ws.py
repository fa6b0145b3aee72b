"""The WAPI over a real WebSocket, against a real core: calls, errors, binding."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from core.server import Core
from edges.wapi.methods import MethodTable
from edges.wapi.server import Edge
from tests.support.core import api_key
from tests.support.server import free_port
from tests.support.timing import seconds
from tests.wapi.conftest import EdgeFactory
from tests.wapi.support import PASSWORD, close_code, wapi

pytestmark = pytest.mark.usefixtures("alice")

ME = {"username": "alice"}


# -- login and calls ---------------------------------------------------------
async def test_login_binds_the_socket(edge: Edge) -> None:
    async with wapi(edge) as client:
        session = await client.login("alice")
        assert session["subscriber"]["username"] == "alice"
        assert session["accessToken"] and session["refreshToken"] and session["sessionId"]
        # lowerCamelCase out, and the bound token is used without being sent again
        me = await client.result("IdentityService.GetSubscriber", {"username": "alice"})
        assert me["username"] == "alice" and "createTime" in me


async def test_params_accept_both_spellings(edge: Edge) -> None:
    async with wapi(edge) as client:
        session = await client.result(
            "IdentityService.Login", {"username": "alice", "password": PASSWORD, "device_name": "snake"}
        )
        assert session["deviceName"] == "snake"


async def test_access_token_in_the_url_binds_the_socket(edge: Edge) -> None:
    async with wapi(edge) as first:
        session = await first.login("alice")
    async with wapi(edge, session["accessToken"]) as client:
        me = await client.result("IdentityService.GetSubscriber", {"username": "alice"})
        assert me["username"] == "alice"


async def test_refresh_session_binds_a_fresh_socket(edge: Edge) -> None:
    async with wapi(edge) as first:
        session = await first.login("alice")
    async with wapi(edge) as client:
        refreshed = await client.result("IdentityService.RefreshSession", {"refreshToken": session["refreshToken"]})
        assert refreshed["sessionId"] == session["sessionId"]
        assert refreshed["accessToken"] != session["accessToken"]
        assert (await client.result("IdentityService.GetSubscriber", {"username": "alice"}))["username"] == "alice"


async def test_every_service_answers_cleanly(edge: Edge) -> None:
    """A call to each service: a result, or the core's own gRPC error (12 while not yet served)."""
    probes = {
        "IdentityService": ("GetJwks", {}),
        "PresenceService": ("GetPresence", {"username": "alice"}),
        "ContactsService": ("ListContacts", {}),
        "DirectoryService": ("SearchDirectory", {"query": "alice"}),
        "CallsService": ("GetIceServers", {}),
        "ConferencesService": ("ListConferences", {}),
        "MessagesService": ("ListConversations", {}),
    }
    services = {method.name.split(".")[0] for method in MethodTable.for_package()}
    assert set(probes) | {"EventsService"} == services
    async with wapi(edge) as client:
        await client.login("alice")
        for service, (method, params) in probes.items():
            response = await client.request(f"{service}.{method}", params)
            if "error" in response:
                error = response["error"]
                assert 0 < error["code"] <= 16, response  # a gRPC status, never an edge failure
                assert (
                    error["data"]["status"]
                    == grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == error["code"])).name
                )
            else:
                assert isinstance(response["result"], dict)


async def test_unimplemented_method_passes_through_as_12(start: EdgeFactory, core: Core) -> None:
    """A core that serves none of the wac.v1 services: every method is UNIMPLEMENTED, cleanly."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        edge = await start(core_address=f"127.0.0.1:{port}")
        async with wapi(edge) as client:
            error = await client.error("IdentityService.Login", {"username": "alice", "password": PASSWORD})
            assert error == {
                "code": 12,
                "message": "IdentityService.Login is not implemented by this core",
                "data": {"status": "UNIMPLEMENTED"},
            }
    finally:
        await server.stop(None)


async def test_the_edges_own_event_stream_is_not_callable_over_wapi(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        # Neither where it was in the contract nor under its internal name.
        for name in ("EventsService.StreamEvents", "EdgeStreamService.StreamEvents"):
            error = await client.error(name, {"attach": {"subscription": "1"}})
            assert error["code"] == -32601
            assert error["message"].startswith(f'unknown method "{name}"')


async def test_notification_is_executed_but_not_answered(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        await client.send({"jsonrpc": "2.0", "method": "PresenceService.SetPresence", "params": {"status": "AWAY"}})
        await client.send({"jsonrpc": "2.0", "method": "No.Such"})
        # The next answer is to the next request: nothing came for the notifications.
        me = await client.result("IdentityService.GetSubscriber", {"username": "alice"})
        assert me["username"] == "alice"


async def test_batch_is_answered_in_one_frame(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        await client.send(
            [
                {"jsonrpc": "2.0", "id": "a", "method": "IdentityService.GetSubscriber", "params": ME},
                {"jsonrpc": "2.0", "method": "IdentityService.GetSubscriber", "params": ME},
                {"jsonrpc": "2.0", "id": "b", "method": "No.Such"},
                {"jsonrpc": "1.0", "id": "c", "method": "IdentityService.GetJwks"},
            ]
        )
        replies = await client.recv()
        assert [reply["id"] for reply in replies] == ["a", "b", "c"]
        assert replies[0]["result"]["username"] == "alice"
        assert replies[1]["error"]["code"] == -32601
        assert replies[2]["error"]["code"] == -32600


async def test_batch_of_notifications_gets_no_answer(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.send([{"jsonrpc": "2.0", "method": "No.Such"}, {"jsonrpc": "2.0", "method": "Other.One"}])
        assert (await client.error("No.Such"))["code"] == -32601


# -- JSON-RPC errors: each precise, the socket stays usable ---------------
BAD_FRAMES = [
    ("{not json", None, -32700, "parse error"),
    ('{"jsonrpc": "2.0", "id": 1, "method": "X.Y", "params": NaN}', None, -32700, "NaN"),
    ("[" * 5000 + "]" * 5000, None, -32700, "parse error"),
    ("[]", None, -32600, "empty batch"),
    ("[" + ",".join(['{"jsonrpc":"2.0","method":"X.Y"}'] * 21) + "]", None, -32600, "at most 20"),
    ('"hello"', None, -32600, "expected an object"),
    ('{"id": 1, "method": "IdentityService.GetJwks"}', 1, -32600, '"jsonrpc"'),
    ('{"jsonrpc": "2.1", "id": 2, "method": "IdentityService.GetJwks"}', 2, -32600, '"jsonrpc" must be "2.0"'),
    ('{"jsonrpc": "2.0", "id": 3}', 3, -32600, 'missing "method"'),
    ('{"jsonrpc": "2.0", "id": 4, "method": 7}', 4, -32600, '"method" must be'),
    ('{"jsonrpc": "2.0", "id": 5, "method": "IdentityService.GetJwks", "params": "x"}', 5, -32600, '"params"'),
    ('{"jsonrpc": "2.0", "id": true, "method": "IdentityService.GetJwks"}', None, -32600, "id must be"),
    ('{"jsonrpc": "2.0", "id": 6, "method": "X.Y", "extra": 1}', 6, -32600, 'unknown member "extra"'),
    ('{"jsonrpc": "2.0", "id": 7, "method": "IdentityService.Nope"}', 7, -32601, '"IdentityService.Nope"'),
    ('{"jsonrpc": "2.0", "id": 8, "method": "IdentityService.Login", "params": [1]}', 8, -32602, "not an array"),
    ('{"jsonrpc": "2.0", "id": 9, "method": "IdentityService.Login", "params": {"user": "a"}}', 9, -32602, '"user"'),
    (
        '{"jsonrpc": "2.0", "id": 10, "method": "IdentityService.Login", "params": {"username": 5}}',
        10,
        -32602,
        "username",
    ),
    (
        '{"jsonrpc": "2.0", "id": 11, "method": "IdentityService.UpdateSubscriber",'
        ' "params": {"subscriber": {"phoneNumbers": "x"}}}',
        11,
        -32602,
        "phoneNumbers",
    ),
]


@pytest.mark.parametrize(("frame", "request_id", "code", "words"), BAD_FRAMES)
async def test_bad_frame_gets_its_error_and_the_socket_stays_open(
    edge: Edge, frame: str, request_id: int | None, code: int, words: str
) -> None:
    async with wapi(edge) as client:
        await client.send(frame)
        reply = await client.recv()
        assert reply["jsonrpc"] == "2.0"
        assert reply["id"] == request_id
        assert reply["error"]["code"] == code
        assert words in reply["error"]["message"]
        assert "Traceback" not in json.dumps(reply)
        session = await client.login("alice")
        assert session["subscriber"]["username"] == "alice"


async def test_binary_frame_is_refused_and_the_socket_stays_open(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.send(b'{"jsonrpc": "2.0", "id": 1, "method": "IdentityService.GetJwks"}')
        reply = await client.recv()
        assert reply == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32600, "message": "invalid request: binary frames are not supported; send JSON as text"},
        }
        await client.login("alice")


async def test_client_responses_are_ignored(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.send({"jsonrpc": "2.0", "id": 1, "result": {}})
        assert (await client.error("No.Such"))["code"] == -32601


# -- gRPC errors -------------------------------------------------------------
async def test_call_before_login_is_16_and_the_socket_stays_open(edge: Edge) -> None:
    async with wapi(edge) as client:
        error = await client.error("IdentityService.GetSubscriber", {"username": "alice"})
        assert error["code"] == 16
        assert error["data"] == {"status": "UNAUTHENTICATED", "reason": "NOT_LOGGED_IN"}
        assert "IdentityService.Login" in error["message"]
        await client.login("alice")


async def test_wrong_password_is_16_with_its_reason_and_the_socket_stays_open(edge: Edge) -> None:
    async with wapi(edge) as client:
        error = await client.error("IdentityService.Login", {"username": "alice", "password": "wrong"})
        assert error == {
            "code": 16,
            "message": "wrong username or password",
            "data": {"status": "UNAUTHENTICATED", "reason": "BAD_CREDENTIALS", "domain": "wac"},
        }
        await client.login("alice")


async def test_throttled_login_carries_retry_delay(edge: Edge) -> None:
    async with wapi(edge) as client:
        # Past three failures each attempt must wait a growing delay; the
        # password check itself may outlast the first delays, hence a few tries.
        for _ in range(8):
            error = await client.error("IdentityService.Login", {"username": "alice", "password": "wrong"})
            if error["code"] != 16:
                break
        assert error["code"] == 8
        assert error["data"]["status"] == "RESOURCE_EXHAUSTED"
        assert error["data"]["retryDelay"].endswith("s")


async def test_field_violations_and_not_found(core: Core, edge: Edge) -> None:
    key = await api_key(core, "provisioning", "subscribers.write", "subscribers.read")
    async with wapi(edge, key) as client:
        error = await client.error(
            "IdentityService.CreateSubscriber", {"subscriber": {"username": "carol", "password": "x"}}
        )
        assert error["code"] == 3
        assert error["data"]["status"] == "INVALID_ARGUMENT"
        assert error["data"]["fieldViolations"][0]["field"].endswith("password")
        missing = await client.error("IdentityService.GetSubscriber", {"username": "nobody"})
        assert missing["code"] == 5 and missing["data"]["status"] == "NOT_FOUND"
        assert "nobody" in missing["message"]


async def test_permission_denied_keeps_the_socket(edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        error = await client.error("IdentityService.ListSubscribers", {})
        assert error["code"] == 7 and error["data"]["status"] == "PERMISSION_DENIED"
        assert (await client.result("IdentityService.GetSubscriber", {"username": "alice"}))["username"] == "alice"


async def test_core_down_is_14_at_once(start: EdgeFactory) -> None:
    edge = await start(core_address=f"127.0.0.1:{free_port()}")
    async with wapi(edge) as client:
        started = asyncio.get_running_loop().time()
        error = await client.error("IdentityService.Login", {"username": "alice", "password": PASSWORD})
        assert asyncio.get_running_loop().time() - started < seconds(0.5)
        assert error == {
            "code": 14,
            "message": "the wac core is unavailable; try again shortly",
            "data": {"status": "UNAVAILABLE"},
        }


# -- revocation ----------------------------------------------------------------
async def test_revoked_session_gets_16_then_close_4401(core: Core, edge: Edge) -> None:
    async with wapi(edge) as client:
        await client.login("alice")
        await core.identity.revoke_sessions("alice")
        error = await client.error("IdentityService.GetSubscriber", {"username": "alice"})
        assert error["code"] == 16 and error["data"]["reason"] == "REVOKED"
        closed = await client.closed()
        assert close_code(closed) == 4401


async def test_login_with_a_dead_token_in_the_url_still_works(core: Core, edge: Edge) -> None:
    async with wapi(edge) as first:
        session = await first.login("alice")
    await core.identity.revoke_sessions("alice")
    async with wapi(edge, session["accessToken"]) as client:
        fresh = await client.login("alice")
        assert fresh["sessionId"] != session["sessionId"]
        assert (await client.result("IdentityService.GetSubscriber", {"username": "alice"}))["username"] == "alice"
