"""The scenarios that matter, each run on the embedded node and on a cluster
(tests/support/cluster.py), with the two parties on different sides: on
the cluster, different cores and edges. Each asserts what the users' WAPI
clients see."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.calls.support import SDP, VIDEO_SDP
from tests.calls.test_wapi import CALL_EVENTS, call_event
from tests.presence.test_wapi import presence_until
from tests.support.cluster import Deployment, Side, deployment
from tests.support.timing import seconds
from tests.wapi.support import WapiClient, close_code

__all__ = ["deployment"]


def presences(events: list[dict[str, Any]], username: str) -> list[str]:
    """The statuses of ``username`` that these events announce, in order."""
    return [e["presenceChanged"]["status"] for e in events if e.get("presenceChanged", {}).get("username") == username]


async def events_until_presence(client: WapiClient, username: str, status: str) -> list[dict[str, Any]]:
    """Every event up to and including ``username``'s presence ``status``."""
    seen: list[dict[str, Any]] = []
    while presences(seen[-1:], username) != [status]:
        seen.append(await client.event())
    return seen


async def online(deployment: Deployment, client: WapiClient, username: str, device: str = "test") -> dict[str, Any]:
    """Log in and subscribe; the session once every core counts the device online."""
    session = await client.login(username, device=device)
    assert await client.result("EventsService.Subscribe", {}) == {}
    await deployment.online(username, session["sessionId"])
    return session


async def refused(deployment: Deployment, side: Side, token: str) -> dict[str, Any]:
    """The error a call with ``token`` gets on ``side`` once it is refused
    there, the socket then closed with 4401. A core other than the one that
    revoked a session learns of it from its revocation poll: "within a
    second on every core" (SECURITY.md), so a few tries may pass first."""
    deadline = asyncio.get_running_loop().time() + seconds(0.4)
    while True:
        async with deployment.client(side, token) as client:
            response = await client.request("IdentityService.GetSubscriber", {"username": "alice"})
            if "error" in response:
                assert close_code(await client.closed()) == 4401
                return dict(response["error"])
        assert asyncio.get_running_loop().time() < deadline, f"side {side} still accepts the token: {response}"
        await asyncio.sleep(0.05)


def description(kind: str, sdp: str = SDP) -> dict[str, str]:
    return {"type": kind, "sdp": sdp}


async def test_login_and_revocation(deployment: Deployment) -> None:
    await deployment.subscriber("alice")
    key = await deployment.api_key("operator", "subscribers.write")
    async with deployment.client(1) as alice, deployment.client(2, key) as operator:
        session = await alice.login("alice")
        await alice.result("EventsService.Subscribe", {})

        assert await operator.result("IdentityService.RevokeSessions", {"username": "alice"}) == {"revokedCount": 1}
        events = await alice.events_until("sessionRevoked")
        assert events[-1]["sessionRevoked"] == {"sessionId": session["sessionId"], "reason": "revoked"}
        assert close_code(await alice.closed()) == 4401

    for side in (1, 2):
        error = await refused(deployment, side, session["accessToken"])
        assert (error["code"], error["data"]["reason"]) == (16, "REVOKED"), f"side {side}: {error}"


async def test_presence_with_watchers(deployment: Deployment) -> None:
    await deployment.subscriber("alice", display_name="Alice Liddell")
    await deployment.subscriber("bob")
    async with deployment.client(2) as bob:
        await bob.login("bob")
        await bob.result("EventsService.Subscribe", {})
        async with deployment.client(1) as alice:
            await alice.login("alice")
            # alice adds bob: her consent that bob sees her presence.
            await alice.result(
                "ContactsService.CreateContact", {"contact": {"displayName": "Bob", "subscriber": "bob"}}
            )
            await alice.result("EventsService.Subscribe", {})
            await presence_until(bob, "alice", "AVAILABLE")

            await alice.result("PresenceService.SetPresence", {"status": "AWAY", "note": "lunch"})
            events = await events_until_presence(bob, "alice", "AWAY")
            assert presences(events, "alice") == ["AWAY"]
            seen = events[-1]["presenceChanged"]
            assert (seen["note"], seen["displayName"]) == ("lunch", "Alice Liddell")
            # A later change closes the window: the first change came once.
            await alice.result("PresenceService.SetPresence", {"status": "BUSY"})
            assert presences(await events_until_presence(bob, "alice", "BUSY"), "alice") == ["BUSY"]
            assert (await bob.result("PresenceService.GetPresence", {"username": "alice"}))["status"] == "BUSY"

        # alice's socket is closed: her device goes offline once its grace period is over.
        offline = await presence_until(bob, "alice", "OFFLINE")
        assert "lastSeenTime" in offline
        assert (await bob.result("PresenceService.GetPresence", {"username": "alice"}))["status"] == "OFFLINE"


async def test_contacts(deployment: Deployment) -> None:
    await deployment.subscriber("alice")
    await deployment.subscriber("bob", display_name="Bob Dylan")
    async with deployment.client(1) as laptop, deployment.client(2) as phone, deployment.client(1) as bob:
        await bob.login("bob")
        # bob's consent that alice sees his presence.
        await bob.result("ContactsService.CreateContact", {"contact": {"displayName": "Alice", "subscriber": "alice"}})
        await laptop.login("alice", device="laptop")
        await online(deployment, phone, "alice", device="phone")
        await bob.result("EventsService.Subscribe", {})
        await presence_until(phone, "bob", "AVAILABLE")

        made = await laptop.result(
            "ContactsService.CreateContact", {"contact": {"displayName": "Bob", "subscriber": "bob"}}
        )
        changed = (await phone.events_until("contactChanged"))[-1]["contactChanged"]
        assert changed["contact"]["contactId"] == made["contactId"]
        listed = await phone.result("ContactsService.ListContacts", {})
        assert [(c["contactId"], c["displayName"], c["subscriber"]) for c in listed["contacts"]] == [
            (made["contactId"], "Bob", "bob")
        ]

        assert (await phone.result("PresenceService.GetPresence", {"username": "bob"}))["status"] == "AVAILABLE"
        await bob.result("PresenceService.SetPresence", {"status": "DO_NOT_DISTURB"})
        seen = await presence_until(phone, "bob", "DO_NOT_DISTURB")
        assert seen["displayName"] == "Bob Dylan"


async def test_call_with_forking_and_answered_elsewhere(deployment: Deployment) -> None:
    await deployment.subscriber("alice", display_name="Alice Liddell")
    await deployment.subscriber("bob")
    async with deployment.client(1) as alice, deployment.client(1) as phone, deployment.client(2) as laptop:
        await online(deployment, alice, "alice")
        phone_id = (await online(deployment, phone, "bob", device="phone"))["sessionId"]
        laptop_id = (await online(deployment, laptop, "bob", device="laptop"))["sessionId"]

        call = await alice.result("CallsService.CreateCall", {"callee": "bob", "offer": description("OFFER")})
        assert call["state"] == "RINGING" and sorted(call["offeredDevices"]) == sorted([phone_id, laptop_id])
        for device in (phone, laptop):
            kind, invited = await call_event(device)
            assert kind == "callInvited" and invited["call"]["callId"] == call["callId"]
            assert invited["offer"] == description("OFFER") and invited["callerDisplayName"] == "Alice Liddell"
        assert (await call_event(alice))[0] == "callRinging"

        answer = {"callId": call["callId"], "answer": description("ANSWER")}
        assert (await laptop.result("CallsService.AnswerCall", answer))["state"] == "ACTIVE"
        kind, answered = await call_event(alice)
        assert kind == "callAnswered" and answered["answer"] == description("ANSWER")
        assert answered["call"]["calleeDevice"] == laptop_id
        kind, elsewhere = await call_event(phone)
        assert (kind, elsewhere["reason"], elsewhere["call"]["state"]) == ("callEnded", "ANSWERED_ELSEWHERE", "ACTIVE")
        error = await phone.error("CallsService.AnswerCall", answer)
        assert error["data"]["status"] == "FAILED_PRECONDITION" and "already answered" in error["message"]

        ended = await alice.result("CallsService.HangupCall", {"callId": call["callId"]})
        assert (ended["state"], ended["endReason"], ended["endedBy"]) == ("ENDED", "COMPLETED", "alice")
        kind, event = await call_event(laptop)
        assert (kind, event["reason"]) == ("callEnded", "COMPLETED")
        # The phone's part ended once: a contact bob adds on the laptop now
        # reaches the phone behind no other call event.
        await laptop.result("ContactsService.CreateContact", {"contact": {"displayName": "Carol"}})
        assert [list(e) for e in await phone.events_until("contactChanged") if set(e) & set(CALL_EVENTS)] == []
        for client in (alice, phone, laptop):
            got = await client.result("CallsService.GetCall", {"callId": call["callId"]})
            assert (got["state"], got["endReason"]) == ("ENDED", "COMPLETED")


async def test_renegotiation(deployment: Deployment) -> None:
    await deployment.subscriber("alice")
    await deployment.subscriber("bob")
    async with deployment.client(1) as alice, deployment.client(2) as bob:
        await online(deployment, alice, "alice")
        await online(deployment, bob, "bob")
        call = await alice.result("CallsService.CreateCall", {"callee": "bob", "offer": description("OFFER")})
        call_id = call["callId"]
        assert (await call_event(bob))[0] == "callInvited"
        await bob.result("CallsService.AnswerCall", {"callId": call_id, "answer": description("ANSWER")})
        assert [(await call_event(alice))[0] for _ in range(2)] == ["callRinging", "callAnswered"]

        # The caller adds video; the callee answers it.
        updated = await alice.result(
            "CallsService.Renegotiate", {"callId": call_id, "description": description("OFFER", VIDEO_SDP)}
        )
        assert updated["state"] == "ACTIVE"
        assert await call_event(bob) == (
            "callUpdated",
            {"call": updated, "description": description("OFFER", VIDEO_SDP)},
        )
        answered = await bob.result(
            "CallsService.Renegotiate", {"callId": call_id, "description": description("ANSWER", VIDEO_SDP)}
        )
        assert await call_event(alice) == (
            "callUpdated",
            {"call": answered, "description": description("ANSWER", VIDEO_SDP)},
        )

        # The callee puts the call on hold; the caller answers.
        await bob.result("CallsService.Renegotiate", {"callId": call_id, "description": description("OFFER")})
        kind, offer = await call_event(alice)
        assert (kind, offer["description"]) == ("callUpdated", description("OFFER"))
        await alice.result("CallsService.Renegotiate", {"callId": call_id, "description": description("ANSWER")})
        kind, event = await call_event(bob)
        assert (kind, event["description"]) == ("callUpdated", description("ANSWER"))

        await bob.result("CallsService.HangupCall", {"callId": call_id})
        kind, ended = await call_event(alice)
        assert (kind, ended["reason"]) == ("callEnded", "COMPLETED")


async def test_event_resume_after_a_dropped_socket(deployment: Deployment) -> None:
    await deployment.subscriber("alice")
    await deployment.subscriber("bob")
    async with deployment.client(1) as alice, deployment.client(1) as laptop:
        await alice.login("alice")
        await alice.result("ContactsService.CreateContact", {"contact": {"displayName": "Bob", "subscriber": "bob"}})
        await alice.result("EventsService.Subscribe", {})
        # bob's laptop stays connected: what it sees says when alice's changes are out.
        await online(deployment, laptop, "bob", device="laptop")
        async with deployment.client(2) as phone:
            session = await online(deployment, phone, "bob", device="phone")
            await alice.result("PresenceService.SetPresence", {"status": "AWAY"})
            before = await events_until_presence(phone, "alice", "AWAY")
            # The socket drops without a close handshake.
            phone.ws.transport.abort()

        for status in ("BUSY", "DO_NOT_DISTURB"):
            await alice.result("PresenceService.SetPresence", {"status": status})
            await presence_until(laptop, "alice", status)

        # bob's phone comes back through the other side, from the last event it saw.
        async with deployment.client(1, session["accessToken"]) as phone:
            last = int(before[-1]["seq"])
            await phone.result("EventsService.Subscribe", {"afterSeq": str(last)})
            after = await events_until_presence(phone, "alice", "DO_NOT_DISTURB")
            # Whatever else was on its way comes before a last change.
            await alice.result("PresenceService.SetPresence", {"status": "AVAILABLE"})
            after += await events_until_presence(phone, "alice", "AVAILABLE")

    # Each event of the session once, in order: seqs increase by one (from
    # wherever the session's log starts).
    seqs = [int(e["seq"]) for e in before + after]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert presences(after, "alice") == ["BUSY", "DO_NOT_DISTURB", "AVAILABLE"]


async def test_chat_across_the_sides(deployment: Deployment) -> None:
    for username in ("alice", "bob", "carol"):
        await deployment.subscriber(username)
    async with deployment.client(1) as alice, deployment.client(2) as bob, deployment.client(2) as carol:
        session = await online(deployment, alice, "alice")
        await online(deployment, bob, "bob")
        await online(deployment, carol, "carol")
        sent = await alice.result(
            "MessagesService.SendMessage", {"recipient": "bob", "text": "hi bob", "requestId": "r-1"}
        )
        received = (await bob.events_until("messageReceived"))[-1]["messageReceived"]["message"]
        assert (received["messageId"], received["text"]) == (sent["messageId"], "hi bob")
        # A retry through the other side's core is the same message.
        async with deployment.client(2, session["accessToken"]) as again:
            retried = await again.result(
                "MessagesService.SendMessage", {"recipient": "bob", "text": "hi bob", "requestId": "r-1"}
            )
        assert retried["messageId"] == sent["messageId"]
        await bob.result(
            "MessagesService.MarkRead", {"conversationId": sent["conversationId"], "messageId": sent["messageId"]}
        )
        receipt = (await alice.events_until("messageRead"))[-1]["messageRead"]
        assert (receipt["username"], receipt["seq"]) == ("bob", "1")

        group = await carol.result("MessagesService.CreateConversation", {"title": "Team", "members": ["alice", "bob"]})
        await alice.events_until("conversationChanged")
        await alice.result(
            "MessagesService.SendMessage",
            {"conversationId": group["conversationId"], "text": "to all", "requestId": "g-1"},
        )
        for member in (bob, carol):
            message = (await member.events_until("messageReceived"))[-1]["messageReceived"]["message"]
            assert (message["sender"], message["text"]) == ("alice", "to all")
        listed = await bob.result("MessagesService.ListConversations", {})
        assert [c.get("unreadCount", 0) for c in listed["conversations"]] == [1, 0]
