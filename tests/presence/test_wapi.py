"""Presence and contacts as a browser meets them: JSON-RPC over real WAPI
WebSockets, through the edge, to a real core."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.server import Core
from edges.wapi.server import Edge, start_edge
from tests.support import core as support
from tests.wapi.support import WapiClient, wapi


@pytest.fixture
async def edge(core: Core, tmp_path: Path) -> AsyncIterator[Edge]:
    config = support.test_config(
        tmp_path / "data",
        {
            "WAC_EDGE_LISTEN": "127.0.0.1:0",
            "WAC_EDGE_HTTP_LISTEN": "127.0.0.1:0",
            "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core.port}",
        },
    )
    started = await start_edge(config)
    try:
        yield started
    finally:
        await started.stop()


async def presence_until(client: WapiClient, username: str, status: str) -> dict[str, Any]:
    while True:
        event = await client.event()
        presence = event.get("presenceChanged", {})
        if presence.get("username") == username and presence.get("status") == status:
            return presence


async def test_a_watcher_sees_presence_through_the_wapi(core: Core, edge: Edge) -> None:
    await support.add_subscriber(core, "alice", display_name="Alice Liddell")
    await support.add_subscriber(core, "bob")
    async with wapi(edge) as bob, wapi(edge) as alice:
        await bob.login("bob")
        error = await bob.error("PresenceService.GetPresence", {"username": "alice"})
        assert error["data"]["status"] == "PERMISSION_DENIED"

        contact = await bob.result(
            "ContactsService.CreateContact",
            {"contact": {"displayName": "Alice", "subscriber": "alice", "phoneNumbers": ["600 111 222"]}},
        )
        assert contact["phoneNumbers"] == ["+34600111222"]
        error = await bob.error("PresenceService.GetPresence", {"username": "alice"})
        assert error["data"]["status"] == "PERMISSION_DENIED", "adding alice grants bob nothing"
        await bob.result("EventsService.Subscribe", {})

        await alice.login("alice")
        # alice adds bob: her consent that bob sees her presence.
        await alice.result("ContactsService.CreateContact", {"contact": {"displayName": "Bob", "subscriber": "bob"}})
        await alice.result("EventsService.Subscribe", {})
        await presence_until(bob, "alice", "AVAILABLE")
        mine = await alice.result("PresenceService.SetPresence", {"status": "AWAY", "note": "lunch"})
        assert (mine["status"], mine["note"]) == ("AWAY", "lunch")
        seen = await presence_until(bob, "alice", "AWAY")
        assert (seen["note"], seen["displayName"]) == ("lunch", "Alice Liddell")

        assert (await bob.result("PresenceService.GetPresence", {"username": "alice"}))["status"] == "AWAY"
        batch = await bob.result("PresenceService.BatchGetPresence", {"usernames": ["alice", "nobody"]})
        assert [p["username"] for p in batch["presences"]] == ["alice"]


async def test_contacts_through_the_wapi(core: Core, edge: Edge) -> None:
    await support.add_subscriber(core, "alice", display_name="Alice Liddell", phone_numbers=["611 222 333"])
    async with wapi(edge) as laptop, wapi(edge) as phone:
        await laptop.login("alice", device="laptop")
        await phone.login("alice", device="phone")
        await phone.result("EventsService.Subscribe", {})

        error = await laptop.error(
            "ContactsService.CreateContact",
            {"contact": {"displayName": "Bob", "phoneNumbers": ["600111222", "12"]}},
        )
        assert error["data"]["status"] == "INVALID_ARGUMENT"
        assert [v["field"] for v in error["data"]["fieldViolations"]] == ["contact.phone_numbers[1]"]

        made = await laptop.result("ContactsService.CreateContact", {"contact": {"displayName": "Bob"}})
        event = (await phone.events_until("contactChanged"))[-1]
        assert event["contactChanged"]["contact"]["contactId"] == made["contactId"]
        listed = await laptop.result("ContactsService.ListContacts", {})
        assert [c["displayName"] for c in listed["contacts"]] == ["Bob"]

        found = await laptop.result("DirectoryService.SearchDirectory", {"query": "+34 611 22"})
        assert [(e["source"], e["entryId"]) for e in found["entries"]] == [("wac", "alice")]
