"""Call setup as a user sees it: two real browsers (headless Chromium, fake
camera and microphone) with the demo softphone, through the whole stack
(Envoy, the WAPI edge, the core), on loopback.

alice's page runs ``wac.call("bob", {audio, video})``; bob's demo answers
by itself (its "Auto-answer" box, the same code path as the Answer button).
Measured: from just before ``wac.call()`` to both RTCPeerConnections
``connected`` (each page stamps its own with performance.timeOrigin + now(),
one clock for both), --calls times after --warmup, for each transport.
Broken down: to ``wac.call()`` resolving (getUserMedia, GetIceServers,
CreateCall), to the caller connected, to the callee connected.

The baseline, measured in the same run and the same browser: the floor of
WebRTC itself, two RTCPeerConnections in one page, each with its own
getUserMedia (the callee's once it has the offer, as in a call),
signalled by direct function calls (no server). The difference is what
wac's signalling costs: the round trips through Envoy, the edge and the
core, and the trickled candidates.

    .venv/bin/python bench/bench_browser_calls.py [--calls 10] [--warmup 2]
        [--transport websocket,http] [--audio-only]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import percentile  # noqa: E402
from playwright.async_api import Page, async_playwright  # noqa: E402

from tests.browser.support import PASSWORDS, Phone, ensure_sdk_bundle, launch  # noqa: E402
from tests.support.core import add_subscriber  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402

# Stamps every peer connection's first "connected" (the SDK's and the floor's).
STAMP_CONNECTED = """
(() => {
  const Native = window.RTCPeerConnection;
  window.connectedAt = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      const stamp = () => {
        if (this.connectionState !== "connected" || this.stamped) return;
        this.stamped = true;
        window.connectedAt.push(performance.timeOrigin + performance.now());
      };
      this.addEventListener("connectionstatechange", stamp);
    }
  };
})();
"""

PLACE_CALL = """async (video) => {
  const now = () => performance.timeOrigin + performance.now();
  const start = now();
  const call = await window.wacDemo.wac.call("bob", { audio: true, video });
  window.benchCall = call;
  return { start, placed: now(), state: call.state };
}"""

# Two peer connections in one page, signalled directly: WebRTC's own floor,
# in the same order as a call (the callee opens its camera once offered).
FLOOR = """async (video) => {
  const now = () => performance.timeOrigin + performance.now();
  const start = now();
  const [a, b] = [new RTCPeerConnection(), new RTCPeerConnection()];
  const connected = (pc) => new Promise((resolve) => {
    pc.addEventListener("connectionstatechange", () => pc.connectionState === "connected" && resolve(now()));
  });
  const done = Promise.all([connected(a), connected(b)]);
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  const media = { audio: true, video };
  const sa = await navigator.mediaDevices.getUserMedia(media);
  for (const t of sa.getTracks()) a.addTrack(t, sa);
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  const sb = await navigator.mediaDevices.getUserMedia(media); // the callee's, once offered the call
  for (const t of sb.getTracks()) b.addTrack(t, sb);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const [ta, tb] = await done;
  for (const pc of [a, b]) pc.close();
  for (const t of [...sa.getTracks(), ...sb.getTracks()]) t.stop();
  return Math.max(ta, tb) - start;
}"""

TIMEOUT_MS = 20_000


async def open_phone(browser: Any, url: str, username: str, transport: str) -> Phone:
    context = await browser.new_context()
    await context.add_init_script(STAMP_CONNECTED)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{url}/?transport={transport}")
    phone = Phone(username=username, context=context, page=page)
    await phone.login()
    await phone.wait_connected(transport=transport)
    return phone


async def stamps(page: Page, count: int) -> list[float]:
    await page.wait_for_function("(n) => window.connectedAt.length >= n", arg=count, timeout=TIMEOUT_MS, polling=10)
    return list(await page.evaluate("window.connectedAt"))


async def measure(alice: Phone, bob: Phone, calls: int, warmup: int, video: bool) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"placed": [], "caller": [], "callee": [], "both": []}
    for index in range(warmup + calls):
        placed = await alice.page.evaluate(PLACE_CALL, video)
        if placed["state"] == "ended":
            raise RuntimeError("the call ended at once: is bob online?")
        caller = (await stamps(alice.page, index + 1))[index]
        callee = (await stamps(bob.page, index + 1))[index]
        if index >= warmup:
            start = placed["start"]
            samples["placed"].append(placed["placed"] - start)
            samples["caller"].append(caller - start)
            samples["callee"].append(callee - start)
            samples["both"].append(max(caller, callee) - start)
        await alice.page.evaluate("() => window.benchCall.hangup()")
        await bob.page.wait_for_function(
            "(n) => window.wacDemo.ended.length >= n", arg=index + 1, timeout=TIMEOUT_MS, polling=10
        )
        await asyncio.sleep(0.2)  # let both sides release their media before the next call
    return samples


async def run(args: argparse.Namespace) -> int:
    ensure_sdk_bundle()
    video = not args.audio_only
    rows: list[tuple[str, list[float]]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wac-bench-browser-") as tmp:
        async with running_stack(Path(tmp)) as stack, async_playwright() as playwright:
            for username, password in PASSWORDS.items():
                await add_subscriber(stack.core, username, password)
            browser = await launch(playwright)
            try:
                for transport in args.transport.split(","):
                    alice = await open_phone(browser, stack.url, "alice", transport)
                    bob = await open_phone(browser, stack.url, "bob", transport)
                    await bob.testid("auto-answer").check()
                    samples = await measure(alice, bob, args.calls, args.warmup, video)
                    rows += [
                        (f"{transport}: wac.call() -> both connected", samples["both"]),
                        (f"{transport}:   wac.call() resolved", samples["placed"]),
                        (f"{transport}:   caller connected", samples["caller"]),
                        (f"{transport}:   callee connected", samples["callee"]),
                    ]
                    for phone in (alice, bob):
                        await phone.context.close()
                floor_page = await (await browser.new_context()).new_page()
                await floor_page.goto(f"{stack.url}/")  # a secure context, for getUserMedia
                floor = [await floor_page.evaluate(FLOOR, video) for _ in range(args.warmup + args.calls)]
                rows.append(("floor: two peer connections in one page", floor[args.warmup :]))
            finally:
                await browser.close()

    media = "audio+video" if video else "audio"
    print(f"call setup in headless Chromium ({media}, loopback), {args.calls} calls after {args.warmup} warm-up, ms")
    print(f"{'':<46}{'p50':>9}{'p90':>9}{'max':>9}")
    for name, values in rows:
        print(f"{name:<46}{percentile(values, 0.5):>9.1f}{percentile(values, 0.9):>9.1f}{max(values):>9.1f}")
    floor_p50 = percentile(rows[-1][1], 0.5)
    for name, values in rows:
        if name.endswith("both connected"):
            share = percentile(values, 0.5) - floor_p50
            print(f"{name.split(':')[0]}: wac's share of the p50, over the floor: {share:.1f} ms")
    print(f"({time.monotonic() - began:.0f} s in all)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--transport", default="websocket,http", help="comma-separated: websocket, http")
    parser.add_argument("--audio-only", action="store_true")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
