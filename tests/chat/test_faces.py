"""Chat through the front door: WAPI clients over the edge (JSON in both
directions, text kept as sent), and the operator's SAPI through Envoy's
transcoder, with its HTTP statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.sapi.support import sapi_client, sapi_stack
from tests.support.core import add_subscriber, api_key
from tests.support.stack import Stack
from tests.wapi.support import PASSWORD, wapi

HTML = '<img src=x onerror="alert(1)"> & <b>bold</b>'


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with sapi_stack(tmp_path) as running:
        for username in ("alice", "bob"):
            await add_subscriber(running.core, username, PASSWORD)
        yield running


async def test_messages_over_the_wapi(stack: Stack) -> None:
    async with wapi(stack.edge) as alice, wapi(stack.edge) as bob:
        for client, name in ((alice, "alice"), (bob, "bob")):
            await client.login(name)
            assert await client.result("EventsService.Subscribe", {}) == {}
        sent = await alice.result("MessagesService.SendMessage", {"recipient": "bob", "text": HTML, "requestId": "r-1"})
        assert (sent["text"], sent["seq"], sent["requestId"]) == (HTML, "1", "r-1")
        events = await bob.events_until("messageReceived")
        received = events[-1]["messageReceived"]
        assert received["message"]["text"] == HTML and "requestId" not in received["message"]
        assert received["conversation"]["type"] == "DIRECT"

        listed = await bob.result("MessagesService.ListConversations", {})
        [conversation] = listed["conversations"]
        assert (conversation["peer"], conversation["unreadCount"]) == ("alice", 1)
        read = await bob.result(
            "MessagesService.MarkRead",
            {"conversationId": sent["conversationId"], "messageId": sent["messageId"]},
        )
        assert read.get("unreadCount", 0) == 0
        receipt = (await alice.events_until("messageRead"))[-1]["messageRead"]
        assert (receipt["username"], receipt["seq"]) == ("bob", "1")
        assert (
            await bob.result("MessagesService.SetTyping", {"conversationId": sent["conversationId"], "typing": True})
            == {}
        )
        typing = (await alice.events_until("typing"))[-1]["typing"]
        assert (typing["username"], typing["typing"], typing["conversationId"]) == ("bob", True, sent["conversationId"])

        too_long = await alice.error(
            "MessagesService.SendMessage", {"recipient": "bob", "text": "x" * 4097, "requestId": "r-2"}
        )
        assert too_long["data"]["status"] == "INVALID_ARGUMENT" and "text" in too_long["message"]
        stranger = await bob.error("MessagesService.ListMessages", {"conversationId": "not-mine"})
        assert (stranger["data"]["status"], stranger["message"]) == (
            "PERMISSION_DENIED",
            "not a member of this conversation",
        )


async def test_the_operators_sapi(stack: Stack) -> None:
    writer = await api_key(stack.core, "ops-write", "messages.write")
    reader = await api_key(stack.core, "ops-read", "messages.read")
    async with (
        sapi_client(stack, writer) as ops,
        sapi_client(stack, reader) as auditor,
        wapi(stack.edge) as bob,
    ):
        await bob.login("bob")
        await bob.result("EventsService.Subscribe", {})
        answer = await ops.post("/sapi/v1/subscribers/bob/messages", json={"text": "welcome", "requestId": "w-1"})
        assert answer.status_code == 200, answer.text
        message = answer.json()
        assert (message["text"], message["system"], message.get("sender", "")) == ("welcome", True, "")
        events = await bob.events_until("messageReceived")
        assert events[-1]["messageReceived"]["message"]["messageId"] == message["messageId"]

        listed = await auditor.get("/sapi/v1/subscribers/bob/conversations")
        assert listed.status_code == 200, listed.text
        [conversation] = listed.json()["conversations"]
        assert (conversation["type"], conversation["lastMessage"]["text"]) == ("SYSTEM", "welcome")

        path = f"/sapi/v1/conversations/{message['conversationId']}/messages/{message['messageId']}"
        assert (await auditor.delete(path)).status_code == 403
        deleted = await ops.delete(path)
        assert deleted.status_code == 200, deleted.text
        assert (await bob.events_until("messageDeleted"))[-1]["messageDeleted"]["messageId"] == message["messageId"]
        again = await ops.delete(path)
        assert again.status_code == 404 and "does not exist" in again.json()["message"]

        nobody = await ops.post("/sapi/v1/subscribers/nobody/messages", json={"text": "x", "requestId": "w-2"})
        assert nobody.status_code == 404
        empty = await ops.post("/sapi/v1/subscribers/bob/messages", json={"text": "", "requestId": "w-3"})
        assert empty.status_code == 400 and "text" in empty.json()["message"]
        assert (
            await auditor.post("/sapi/v1/subscribers/bob/messages", json={"text": "x", "requestId": "w-4"})
        ).status_code == 403
