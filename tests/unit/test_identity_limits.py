"""The in-process bounds of identity work, without a server."""

from __future__ import annotations

import asyncio

import pytest

from core.identity.limits import Busy, KeyedLocks, PasswordChecks


async def test_an_address_holds_its_places_and_its_queue_then_is_refused() -> None:
    checks = PasswordChecks(total=4, per_address=2, queue=10, queue_per_address=1)
    release = asyncio.Event()
    inside = 0

    async def login(username: str, address: str) -> None:
        nonlocal inside
        async with checks.admit(username, address):
            inside += 1
            await release.wait()

    # Three names from one address: two run, one waits, the fourth is refused
    # at once whatever its name.
    tasks = [asyncio.create_task(login(f"user{i}", "192.0.2.1")) for i in range(3)]
    await asyncio.sleep(0)
    assert inside == 2
    with pytest.raises(Busy, match="from this client address"):
        async with checks.admit("user9", "192.0.2.1"):
            pass
    # Another address is not affected.
    async with checks.admit("user0", "192.0.2.2"):
        pass
    release.set()
    await asyncio.gather(*tasks)
    assert inside == 3
    # Nothing is left behind for the keys that were used.
    async with checks.admit("user0", "192.0.2.1"), checks.admit("user1", "192.0.2.1"):
        pass


async def test_one_pair_runs_one_login_at_a_time_without_taking_its_address_places() -> None:
    checks = PasswordChecks(total=4, per_address=2, queue=10, queue_per_address=4)
    release = asyncio.Event()
    running: list[str] = []

    async def login(username: str) -> None:
        async with checks.admit(username, "192.0.2.1"):
            running.append(username)
            await release.wait()

    tasks = [asyncio.create_task(login("alice")) for _ in range(3)]
    await asyncio.sleep(0)
    assert running == ["alice"]
    # Alice's waiting logins leave the address's second place to bob.
    bob = asyncio.create_task(login("bob"))
    await asyncio.sleep(0)
    assert running == ["alice", "bob"]
    release.set()
    await asyncio.gather(*tasks, bob)
    assert running.count("alice") == 3


async def test_check_slots_are_capped_with_a_bounded_queue() -> None:
    checks = PasswordChecks(total=2, per_address=2, queue=1, queue_per_address=0)
    release = asyncio.Event()

    async def check() -> None:
        async with checks.slot():
            await release.wait()

    tasks = [asyncio.create_task(check()) for _ in range(3)]  # two run, one waits
    await asyncio.sleep(0)
    assert checks.running == 2
    with pytest.raises(Busy, match="too many logins in progress"):
        async with checks.slot():
            pass
    release.set()
    await asyncio.gather(*tasks)
    assert (checks.running, checks.peak) == (0, 2)


async def test_keyed_locks_serialise_one_key_and_forget_it_after() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with locks.hold("s1"):
            first_in.set()
            await release.wait()
            order.append("first")

    async def second() -> None:
        async with locks.hold("s1"):
            order.append("second")

    a = asyncio.create_task(first())
    await first_in.wait()
    b = asyncio.create_task(second())
    async with locks.hold("s2"):  # another key does not wait
        order.append("other")
    release.set()
    await asyncio.gather(a, b)
    assert order == ["other", "first", "second"]
    assert locks._locks == {}
