"""The connection under trouble: WebSockets blocked (the SDK falls back to
HTTP) and the socket dropped in mid-call (the call's media does not depend
on it, and its events resume with the next connection)."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.support import Demo, ms


async def test_websocket_blocked_falls_back_to_http(demo: Demo) -> None:
    # alice's network refuses every WebSocket upgrade to /wapi; bob's does not.
    alice = await demo.phone("alice", block_websocket=True)
    bob = await demo.phone("bob")
    await alice.wait_connected(transport="http")
    await bob.wait_connected(transport="websocket")
    await expect(alice.testid("connection-state")).to_contain_text("Connected · HTTP")

    # Calls work both ways over the long poll.
    await demo.call(alice, bob)
    await bob.testid("hangup").click()
    await alice.expect_ended("COMPLETED")
    await demo.call(bob, alice, video=False)
    await alice.testid("hangup").click()
    await bob.expect_ended("COMPLETED")
    assert await alice.page.evaluate("window.wacDemo.wac.transport") == "http"


async def test_socket_dropped_mid_call(demo: Demo) -> None:
    alice = await demo.phone("alice")
    bob = await demo.phone("bob")
    await demo.call(alice, bob)
    for phone in (alice, bob):
        await phone.record_states()

    # The edge loses every WebSocket at once, as on a network cut (no close frame).
    connections = list(demo.stack.edge.ws_server.connections)
    assert len(connections) == 2, connections
    for connection in connections:
        connection.transport.abort()

    # The media does not care: it keeps flowing while the SDK notices and reconnects.
    await alice.page.wait_for_function("() => window.wacStates.includes('suspended')", timeout=ms(), polling=50)
    for phone in (alice, bob):
        await phone.wait_bytes_grow()
    for phone in (alice, bob):
        await phone.wait_reconnected()
        await phone.expect_state("active")
        media = await phone.media()
        assert media["state"] == "connected", media
    assert len(demo.stack.edge.ws_server.connections) == 2

    # Events flow again on the new sockets: bob's hangup reaches alice.
    await bob.testid("hangup").click()
    await alice.expect_ended("COMPLETED")
    [alice_end] = await alice.wait_ended()
    assert alice_end["endedBy"] == "bob", alice_end


async def test_hangup_while_the_other_side_is_away(demo: Demo) -> None:
    alice = await demo.phone("alice")
    bob = await demo.phone("bob")
    await demo.call(alice, bob)
    await alice.record_states()

    # alice's network goes away (the browser's "offline" event drops the
    # link) and refuses new connections until it is back.
    await alice.go_offline()

    # bob hangs up meanwhile; the server has it once bob's history shows it.
    await bob.testid("hangup").click()
    await expect(bob.testid("history-row").first).to_have_attribute("data-reason", "COMPLETED", timeout=ms())
    await alice.expect_state("active")

    # Back online: alice's new link subscribes after her last seq and gets the end.
    await alice.go_online()
    await alice.wait_reconnected()
    await alice.expect_ended("COMPLETED")
    [alice_end] = await alice.wait_ended()
    assert alice_end["endedBy"] == "bob", alice_end
