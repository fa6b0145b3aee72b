"""What call set-up reads of subscribers (the caller's display name, an
offline callee's existence) comes from identity's subscriber read-cache:
no SQL for a subscriber seen within its staleness bound, and a rename made
through identity in the very next invite."""

from __future__ import annotations

from tests.calls.support import Call, World
from tests.support.sql import statements
from wac.v1 import identity_pb2


def subscriber_reads(sql: list[str]) -> list[str]:
    return [s for s in sql if "subscribers" in s]


async def test_call_set_up_reads_no_subscriber_seen_within_the_bound(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    await world.subscriber("carol")  # never online: her existence is looked up
    await alice.create("bob")  # warm: alice (her token's check, her name)
    await bob.expect("call_invited")
    assert (await alice.create("carol")).end_reason == Call.UNAVAILABLE  # warm: carol exists
    with statements() as sql:
        assert (await alice.create("bob")).state == Call.RINGING
        assert (await alice.create("carol")).end_reason == Call.UNAVAILABLE
    assert subscriber_reads(sql) == [], sql
    (invited,) = await bob.expect("call_invited")
    assert invited.caller_display_name == "Alice Liddell"


async def test_a_renamed_caller_has_the_new_name_in_the_next_invite(world: World) -> None:
    alice, bob = await world.device("alice"), await world.device("bob")
    await alice.create("bob")
    (invited,) = await bob.expect("call_invited")
    assert invited.caller_display_name == "Alice Liddell"
    await world.core.identity.update(
        identity_pb2.Subscriber(username="alice", display_name="Alice Pleasance"), ["display_name"]
    )
    await alice.create("bob")  # no time has passed on the core's clock
    (invited,) = await bob.expect("call_invited")
    assert invited.caller_display_name == "Alice Pleasance"
