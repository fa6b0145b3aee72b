"""Chat through the SIP gateway, with real parts: a core, its edge and Envoy
(tests/support/stack.py), Kamailio rendered from gateway/kamailio.cfg.tmpl
and rtpengine (tests/gateway/conftest.py), and a UDP socket on trunk_uri
as the trunk, answering 200 to each MESSAGE.

1. Out. A subscriber sends --messages messages one after the other over
   gRPC (SendMessage) to a number: each is a SIP MESSAGE over a WebSocket
   of its own into Kamailio with the sender's token, which Kamailio
   verifies (identity:verify) and authorizes (identity:authorize
   message.pstn) through Envoy's SAPI before the trunk answers, then the
   message is kept and told. The baseline, in the same run: as many
   SendMessage to another subscriber (kept and told, no gateway).
2. In. The trunk sends --messages MESSAGEs, one after the other, to a
   subscriber's number: Kamailio hands each to
   phoneNumbers/{n}:receiveMessage through Envoy, the core keeps it and
   tells the holder, and Kamailio answers 200. Each is timed at the trunk
   from the send to the final answer. The baseline: as many OPTIONS from
   the trunk, which Kamailio answers itself (the SIP round trip alone).

Reported: p50 and p99 of each path and what the gateway adds at p50 (no
target in the issue: a message is no call set-up; this shows the cost).

    .venv/bin/python bench/bench_chat_gateway.py [--messages 300]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import grpc  # noqa: E402
from common import percentile, table  # noqa: E402

from cli import gateway  # noqa: E402
from tests.gateway.conftest import PASSWORD, start_gateway  # noqa: E402
from tests.support.core import add_subscriber, login  # noqa: E402
from tests.support.gateway import Trunk  # noqa: E402
from tests.support.server import free_port  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402
from wac.v1 import messages_pb2, messages_pb2_grpc  # noqa: E402

NUMBER = "+34911222333"
BOBS_NUMBER = "+34600111002"


def answering(trunk: Trunk, count: int) -> threading.Thread:
    """The trunk answers the next ``count`` requests with 200, in a thread."""

    def run() -> None:
        for _ in range(count):
            trunk.take("200 OK")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def options(trunk: Trunk) -> str:
    """An OPTIONS from the trunk to the gateway itself; its answer."""
    port = trunk.gateway.sip_port
    call = uuid.uuid4().hex
    trunk.sock.sendto(
        (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{trunk.gateway.trunk_port};branch=z9hG4bK{call}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{NUMBER}@127.0.0.1>;tag=t{call[:6]}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {call}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        ("127.0.0.1", port),
    )
    return trunk.sock.recv(65536).decode(errors="replace")


def timed_in_thread(step: object, count: int) -> list[float]:
    samples = []
    for n in range(count):
        start = time.perf_counter()
        answer = step(n)  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
        assert answer.startswith("SIP/2.0 200 "), answer
    return samples


async def run(messages: int) -> list[list[object]]:
    with tempfile.TemporaryDirectory(prefix="bench-chat-gateway-") as tmp:
        work = Path(tmp)
        ws_port = free_port()
        env = {
            "WAC_GATEWAY_WS_LISTEN": f"127.0.0.1:{ws_port}",
            "WAC_CORE_RATE_PER_SECOND": "1000000",
            "WAC_CORE_RATE_BURST": "1000000",
            "WAC_CORE_API_KEY_RATE_PER_SECOND": "0",
            "WAC_LOG_LEVEL": "warning",
        }
        async with running_stack(work / "data", env, gateway_ws=f"127.0.0.1:{ws_port}") as stack:
            core = stack.core
            await add_subscriber(core, "alice", PASSWORD, roles=["user", "pstn"])
            await add_subscriber(core, "bob", PASSWORD, phone_numbers=[BOBS_NUMBER])
            gateway = await start_gateway(work, stack, ws_port=ws_port)
            trunk = Trunk(gateway)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
                    session = await login(channel, "alice", PASSWORD)
                    metadata = (("authorization", f"Bearer {session.access_token}"),)
                    stub = messages_pb2_grpc.MessagesServiceStub(channel)

                    async def send(to: str) -> float:
                        request = messages_pb2.SendMessageRequest(
                            recipient=to, text="ping", request_id=uuid.uuid4().hex
                        )
                        start = time.perf_counter()
                        await stub.SendMessage(request, metadata=metadata)
                        return time.perf_counter() - start

                    for _ in range(20):  # warm both paths
                        await send("bob")
                    answerer = answering(trunk, 20 + messages)
                    for _ in range(20):
                        await send(NUMBER)
                    direct = [await send("bob") for _ in range(messages)]
                    out = [await send(NUMBER) for _ in range(messages)]
                    await asyncio.to_thread(answerer.join, 10)

                def inbound(n: int) -> str:
                    return trunk.message(BOBS_NUMBER, f"in {n}".encode(), call_id=uuid.uuid4().hex)

                floor = await asyncio.to_thread(timed_in_thread, lambda _n: options(trunk), messages)
                into = await asyncio.to_thread(timed_in_thread, inbound, messages)
            finally:
                trunk.close()
                await asyncio.to_thread(gateway.kamailio.stop)
                await asyncio.to_thread(gateway.rtpengine.stop)

    def row(name: str, samples: list[float], base: list[float] | None) -> list[object]:
        p50 = 1000 * percentile(samples, 0.5)
        added = "-" if base is None else f"{p50 - 1000 * percentile(base, 0.5):.1f}"
        return [name, len(samples), p50, 1000 * percentile(samples, 0.99), added]

    return [
        row("SendMessage to a subscriber (baseline)", direct, None),
        row("SendMessage to a number, out through the gateway", out, direct),
        row("OPTIONS from the trunk, answered by Kamailio (baseline)", floor, None),
        row("MESSAGE from the trunk, kept by wac, 200", into, floor),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    absent = gateway.missing_programs()
    if absent:
        print(f"needs kamailio and rtpengine (deps/debian.txt); missing: {', '.join(absent)}")
        return 1
    rows = asyncio.run(run(args.messages))
    print(table(["path", "n", "p50 ms", "p99 ms", "gateway adds at p50, ms"], rows, "Chat through the SIP gateway"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
