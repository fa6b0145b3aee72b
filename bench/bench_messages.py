"""Chat through the WAPI: a message's latency from sender to receiver beside
the WAPI round trip, sustained messages per second on one core, and one
message to a group of 500 members each on a socket. ``wac core`` and ``wac
edge`` run in their own processes (bench_wapi.py's Stack), on SQLite.

1. Latency. A sender's socket sends --calls messages one after the other
   to a receiver subscribed on another socket; each is timed from the send
   to its messageReceived at the receiver. In the same run, the same sender
   times --calls WAPI round trips of a cheap call (PresenceService.
   GetPresence of itself): the floor. Reported: p50 and p99 of both, and
   the ratio of the p99s (target <= 3x).
2. Throughput. --concurrency senders, each on its own socket and to its own
   receiver, send back to back for --seconds. Reported: messages per second
   the core took (answered SendMessage) and the core's CPU per message.
3. Group. --members members (the sender among them) each log in on a socket
   and subscribe; the sender sends --group-messages messages to their group,
   each at least 0.5 s after the one before. Reported: for every member,
   the time from the send to its messageReceived, p50, p99 and max (target:
   every member within 1 s, p99).

The per-connection and per-address call rates are lifted (the sockets stand
for users on as many addresses), and subscribers are written directly
through the identity store with a cheap argon2 hash, as bench_wapi.py does.

    .venv/bin/python bench/bench_messages.py [--calls 500] [--concurrency 8]
        [--seconds 5] [--members 500] [--group-messages 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from bench_wapi import PASSWORD, WS_OPTIONS, Client, Stack, retried, watcher  # noqa: E402
from common import cpu_seconds, percentile, table  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

TARGET_RATIO = 3.0
TARGET_GROUP_P99 = 1.0
SENDER, RECEIVER = "bench", "subject"  # bench_wapi's ME and SUBJECT


class Member:
    """A logged-in, subscribed socket that notes when each message arrives."""

    def __init__(self, port: int, username: str) -> None:
        self.port = port
        self.username = username
        self.client: Client | None = None
        self.arrivals: dict[str, float] = {}  # message text -> arrival (monotonic)
        self.waiting: dict[str, asyncio.Future[float]] = {}

    def on_event(self, event: dict[str, Any], arrived: float) -> None:
        received = event.get("messageReceived")
        if not received:
            return
        text = received["message"]["text"]
        self.arrivals[text] = arrived
        future = self.waiting.pop(text, None)
        if future is not None and not future.done():
            future.set_result(arrived)

    def arrival(self, text: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if text in self.arrivals:
            future.set_result(self.arrivals[text])
        else:
            self.waiting[text] = future
        return future

    async def open(self, retries: list[int]) -> Client:
        ws = await connect(f"ws://127.0.0.1:{self.port}/wapi", **WS_OPTIONS)
        self.client = client = Client(ws, self.on_event)
        params = {"username": self.username, "password": PASSWORD, "deviceName": "bench"}
        await retried(lambda: client.call("IdentityService.Login", params), retries)
        await retried(lambda: client.call("EventsService.Subscribe", {}), retries)
        return client

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()


async def send(client: Client, text: str, **target: str) -> dict[str, Any]:
    params = {**target, "text": text, "requestId": str(uuid.uuid4())}
    return dict(await client.call("MessagesService.SendMessage", params))


async def latency(stack: Stack, calls: int) -> tuple[list[list[object]], bool]:
    retries = [0]
    sender, receiver = Member(stack.ws_port, SENDER), Member(stack.ws_port, RECEIVER)
    client = await sender.open(retries)
    await receiver.open(retries)
    try:
        await send(client, "warm-up", recipient=RECEIVER)
        await receiver.arrival("warm-up")
        for _ in range(50):  # warm the floor's path too
            await client.call("PresenceService.GetPresence", {"username": SENDER})
        floor: list[float] = []
        delivered: list[float] = []
        for n in range(calls):
            start = time.monotonic()
            await client.call("PresenceService.GetPresence", {"username": SENDER})
            floor.append(time.monotonic() - start)
            text = f"m{n}"
            arrived = receiver.arrival(text)
            start = time.monotonic()
            await send(client, text, recipient=RECEIVER)
            delivered.append(await asyncio.wait_for(arrived, 10) - start)
    finally:
        await sender.close()
        await receiver.close()
    ratio = percentile(delivered, 0.99) / percentile(floor, 0.99)
    rows = [
        ["WAPI round trip (GetPresence), the floor", len(floor), *_ms(floor), "-"],
        ["message, sender to receiver", len(delivered), *_ms(delivered), f"{ratio:.2f}x"],
    ]
    return rows, ratio <= TARGET_RATIO


async def throughput(stack: Stack, concurrency: int, seconds: float) -> list[list[object]]:
    retries = [0]
    senders = [Member(stack.ws_port, watcher(2 * n)) for n in range(concurrency)]
    receivers = [Member(stack.ws_port, watcher(2 * n + 1)) for n in range(concurrency)]
    clients = [await m.open(retries) for m in senders]
    for member in receivers:
        await member.open(retries)
    counts = [0] * concurrency
    try:
        for n, client in enumerate(clients):  # each pair's conversation made before the clock starts
            await send(client, "hello", recipient=receivers[n].username)
        assert stack.core is not None
        cpu_before = cpu_seconds(stack.core.pid)
        deadline = time.monotonic() + seconds

        async def loop(n: int) -> None:
            for i in itertools.count():
                if time.monotonic() >= deadline:
                    return
                await send(clients[n], f"t{n}-{i}", recipient=receivers[n].username)
                counts[n] += 1

        started = time.monotonic()
        await asyncio.gather(*(loop(n) for n in range(concurrency)))
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(stack.core.pid) - cpu_before
    finally:
        for member in (*senders, *receivers):
            await member.close()
    total = sum(counts)
    return [[concurrency, total, total / elapsed, 1000 * cpu / max(total, 1)]]


async def group(stack: Stack, members: int, messages: int) -> tuple[list[list[object]], bool, int]:
    retries = [0]
    sender = Member(stack.ws_port, SENDER)
    others = [Member(stack.ws_port, watcher(n)) for n in range(members - 1)]
    client = await sender.open(retries)
    failed = 0
    for batch in range(0, len(others), 50):
        results = await asyncio.gather(*(m.open(retries) for m in others[batch : batch + 50]), return_exceptions=True)
        failed += sum(isinstance(r, BaseException) for r in results)
    try:
        made = await client.call(
            "MessagesService.CreateConversation", {"title": "all hands", "members": [m.username for m in others]}
        )
        conversation_id = made["conversationId"]
        delays: list[float] = []
        worst: list[float] = []
        for n in range(messages):
            text = f"g{n}"
            arrivals = [m.arrival(text) for m in others]
            start = time.monotonic()
            await send(client, text, conversationId=conversation_id)
            done = await asyncio.wait_for(asyncio.gather(*arrivals), 30)
            each = [t - start for t in done]
            delays += each
            worst.append(max(each))
            await asyncio.sleep(0.5)
    finally:
        await sender.close()
        for member in others:
            await member.close()
    rows = [[members, messages, len(delays), *_ms(delays), 1000 * max(worst)]]
    return rows, percentile(delays, 0.99) <= TARGET_GROUP_P99, failed + retries[0]


def _ms(samples: list[float]) -> list[float]:
    return [1000 * percentile(samples, 0.5), 1000 * percentile(samples, 0.99)]


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-messages-") as tmp:
        stack = Stack(
            Path(tmp) / "data",
            WAC_EDGE_RATE_PER_SECOND="1000000",
            WAC_EDGE_RATE_BURST="1000000",
            WAC_CORE_RATE_PER_SECOND="1000000",
            WAC_CORE_RATE_BURST="1000000",
            WAC_EDGE_MAX_CONNECTIONS_PER_ADDRESS=str(args.members + 100),
        )
        await stack.populate(max(args.members, 2 * args.concurrency))
        await stack.start()
        try:
            rows, latency_ok = await latency(stack, args.calls)
            print(
                table(["path", "n", "p50 ms", "p99 ms", "p99 / floor p99"], rows, "Latency (one sender, one receiver)")
            )
            print()
            rows_t = await throughput(stack, args.concurrency, args.seconds)
            print(table(["senders", "messages", "messages/s", "core CPU ms/message"], rows_t, "Throughput (one core)"))
            print()
            rows_g, group_ok, trouble = await group(stack, args.members, args.group_messages)
            headers = ["members", "messages", "deliveries", "p50 ms", "p99 ms", "slowest message's last member ms"]
            print(table(headers, rows_g, "One message to a group, every member on a socket"))
            if trouble:
                print(f"({trouble} log-ins or subscriptions were retried or failed)")
        finally:
            stack.stop()
    print()
    print(f"target: message p99 <= {TARGET_RATIO}x the WAPI round trip's p99: {'met' if latency_ok else 'NOT met'}")
    print(f"target: every group member within {TARGET_GROUP_P99} s (p99): {'met' if group_ok else 'NOT met'}")
    return 0 if latency_ok and group_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--group-messages", type=int, default=5)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
