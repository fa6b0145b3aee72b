"""Conferences as users see them: real browsers (headless Chromium, fake
camera and microphone) with the demo softphone, a real Janus behind the
whole stack (Envoy, the WAPI edge, the core), on loopback.

1. Join. alice and bob are in a room; carol's page runs
   ``wacDemo.joinConference(id)``. Measured: from just before it to the
   first remote video frame decoded on carol's page (getStats
   framesDecoded of either other participant above 0), --runs times.
   The baseline, measured in the same run and the same browser: a plain
   two-party wac call, alice calling bob (who answers by himself), from
   just before ``wac.call()`` to the first remote video frame on alice's
   page.
2. The largest room. Rooms of 3, 4, ... --max-room pages, each joined with
   a small camera (320x240): a size holds when every page decodes video
   from every other within --settle seconds and keeps decoding over a
   --window second sample. Reported per size: Janus's CPU (share of one
   CPU) and resident memory over the window, and the slowest page's
   decoded frames per second of its slowest participant. The same for
   audio-only rooms (bytes received instead of frames).

    .venv/bin/python bench/bench_conference.py [--runs 10] [--max-room 6] [--audio-max-room 8]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import cpu_seconds, percentile, rss_kib, table  # noqa: E402
from playwright.async_api import Browser, async_playwright  # noqa: E402

from tests.browser.support import VIEWPORT, Phone, ensure_sdk_bundle, launch  # noqa: E402
from tests.support.core import add_subscriber  # noqa: E402
from tests.support.janus import running_janus  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402

PASSWORD = "bench-secret"

# Until a remote participant's first decoded video frame (or audio bytes):
# the page's clock (performance.timeOrigin + now()) when it happened.
FIRST_REMOTE = """async ({kind, since}) => {
  const now = () => performance.timeOrigin + performance.now();
  const got = async () => {
    const c = window.wacDemo.conference;
    if (!c) return false;
    for (const [, p] of c.participants) {
      if (!p.peerConnection) continue;
      let seen = false;
      (await p.peerConnection.getStats()).forEach((s) => {
        if (s.type !== 'inbound-rtp' || s.kind !== kind) return;
        if ((kind === 'video' ? s.framesDecoded : s.bytesReceived) > 0) seen = true;
      });
      if (seen) return true;
    }
    return false;
  };
  while (!(await got())) await new Promise((r) => setTimeout(r, 10));
  return now() - since;
}"""

CALL_FIRST_FRAME = """async () => {
  const now = () => performance.timeOrigin + performance.now();
  const start = now();
  const call = await window.wacDemo.wac.call("bob", { audio: true, video: true });
  window.benchCall = call;
  for (;;) {
    const pc = call.peerConnection;
    let seen = false;
    if (pc) (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0) seen = true;
    });
    if (seen) return now() - start;
    await new Promise((r) => setTimeout(r, 10));
  }
}"""

JOIN = """async ({id, video}) => {
  const since = performance.timeOrigin + performance.now();
  const stream = await navigator.mediaDevices.getUserMedia(
    {audio: true, video: video ? {width: 320, height: 240, frameRate: 15} : false});
  window.wacDemo.conference = await window.wacDemo.wac.conferences.join(id, {audio: true, video, stream});
  return since;
}"""

# Per remote participant: (decoded frames, audio bytes received).
COUNTERS = """async () => {
  const c = window.wacDemo.conference;
  const out = {};
  if (!c) return out;
  for (const [name, p] of c.participants) {
    let frames = 0, bytes = 0;
    if (p.peerConnection) (await p.peerConnection.getStats()).forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') frames += s.framesDecoded || 0;
      if (s.kind === 'audio') bytes += s.bytesReceived || 0;
    });
    out[name] = [frames, bytes];
  }
  return out;
}"""


async def open_phone(browser: Browser, url: str, username: str) -> Phone:
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = await context.new_page()
    page.set_default_timeout(60_000)
    phone = Phone(username=username, context=context, page=page)
    await page.goto(url)
    await phone.login(PASSWORD)
    return phone


async def create(creator: Phone, invitees: list[str], video: bool) -> str:
    media = "AUDIO_VIDEO" if video else "AUDIO"
    created = await creator.page.evaluate(
        "async ([invitees, media]) => (await window.wacDemo.wac.conferences.create("
        "{title: 'bench', invitees, media})).conferenceId",
        [invitees, media],
    )
    return str(created)


async def join(phone: Phone, conference_id: str, video: bool) -> float:
    since: float = await phone.page.evaluate(JOIN, {"id": conference_id, "video": video})
    return since


async def leave(phones: list[Phone]) -> None:
    for phone in phones:
        await phone.page.evaluate("async () => { const c = window.wacDemo.conference; if (c) await c.leave(); }")


async def measure_join(phones: list[Phone], runs: int) -> tuple[list[float], list[float]]:
    alice, bob, carol = phones
    joins: list[float] = []
    calls: list[float] = []
    for _ in range(runs):
        conference_id = await create(alice, ["bob", "carol"], True)
        for phone in (alice, bob):
            await join(phone, conference_id, True)
        for phone in (alice, bob):
            await phone.page.evaluate(FIRST_REMOTE, {"kind": "video", "since": 0})
        since = await join(carol, conference_id, True)
        joins.append(await carol.page.evaluate(FIRST_REMOTE, {"kind": "video", "since": since}))
        await leave([carol, bob, alice])
        await alice.page.evaluate(f"async () => window.wacDemo.wac.conferences.end({conference_id!r})")
        # The baseline: a two-party call, alice to bob, to alice's first remote frame.
        calls.append(await alice.page.evaluate(CALL_FIRST_FRAME))
        await alice.page.evaluate("async () => { await window.benchCall.hangup(); }")
        await asyncio.sleep(0.5)
    return joins, calls


async def room(phones: list[Phone], video: bool, settle: float, window: float, janus_pid: int) -> dict[str, Any]:
    """One room of every phone; whether it holds, Janus's cost, the slowest flow."""
    conference_id = await create(phones[0], [p.username for p in phones[1:]], video)
    await asyncio.gather(*(join(phone, conference_id, video) for phone in phones))
    others = {p.username: {q.username for q in phones} - {p.username} for p in phones}
    index = 0 if video else 1
    deadline = time.monotonic() + settle
    held = False
    while time.monotonic() < deadline:
        counters = await asyncio.gather(*(p.page.evaluate(COUNTERS) for p in phones))
        if all(
            set(c) >= others[p.username] and all(c[o][index] > 0 for o in others[p.username])
            for p, c in zip(phones, counters, strict=True)
        ):
            held = True
            break
        await asyncio.sleep(0.5)
    result: dict[str, Any] = {"held": held}
    if held:
        before = await asyncio.gather(*(p.page.evaluate(COUNTERS) for p in phones))
        cpu_before, began = cpu_seconds(janus_pid), time.monotonic()
        await asyncio.sleep(window)
        after = await asyncio.gather(*(p.page.evaluate(COUNTERS) for p in phones))
        elapsed = time.monotonic() - began
        result["janus_cpu"] = (cpu_seconds(janus_pid) - cpu_before) / elapsed
        result["janus_rss"] = rss_kib(janus_pid) / 1024
        rates = [
            (a[o][index] - b[o][index]) / elapsed
            for p, b, a in zip(phones, before, after, strict=True)
            for o in others[p.username]
        ]
        result["slowest"] = min(rates)
        result["held"] = result["slowest"] > 0
    await leave(phones)
    await phones[0].page.evaluate(f"async () => window.wacDemo.wac.conferences.end({conference_id!r})")
    await asyncio.sleep(1)
    return result


async def run(args: argparse.Namespace) -> int:
    ensure_sdk_bundle()
    began = time.monotonic()
    size = max(3, args.max_room, args.audio_max_room)
    names = [f"user{i}" for i in range(size)]
    names[:3] = ["alice", "bob", "carol"]
    shared = {"WAC_CONFERENCES_JANUS_SECRET": secrets.token_urlsafe(24), "WAC_LOG_LEVEL": "warning"}
    with tempfile.TemporaryDirectory() as work:
        async with running_janus(Path(work) / "janus", shared) as janus:
            env = {**shared, "WAC_CONFERENCES_JANUS_API_LISTEN": janus.config.conferences.janus_api_listen}
            env["WAC_GATEWAY_ENABLED"] = "false"
            env["WAC_EDGE_RATE_PER_SECOND"] = "1000"
            async with (
                running_stack(Path(work) / "data", env, janus_ws=janus.ws_listen) as stack,
                async_playwright() as pw,
            ):
                for name in names:
                    await add_subscriber(stack.core, name, PASSWORD)
                browser = await launch(pw)
                try:
                    phones = [await open_phone(browser, stack.url, name) for name in names]
                    await phones[1].testid("auto-answer").check()
                    joins, calls = await measure_join(phones[:3], args.runs)
                    rows: list[list[object]] = []
                    for kind, video, largest in (("video", True, args.max_room), ("audio", False, args.audio_max_room)):
                        for n in range(3, largest + 1):
                            result = await room(phones[:n], video, args.settle, args.window, janus.process.pid)
                            rows.append(
                                [
                                    kind,
                                    n,
                                    "yes" if result["held"] else "NO",
                                    f"{100 * result.get('janus_cpu', 0):.0f}%",
                                    f"{result.get('janus_rss', 0):.1f}",
                                    f"{result.get('slowest', 0):.1f}",
                                ]
                            )
                            if not result["held"]:
                                break
                finally:
                    await browser.close()
    print(f"1. join to first remote video frame, {args.runs} runs (headless Chromium, loopback), ms")
    print(
        table(
            ["path", "p50", "p90", "max"],
            [
                [name, f"{percentile(v, 0.5):.0f}", f"{percentile(v, 0.9):.0f}", f"{max(v):.0f}"]
                for name, v in (
                    ("third participant joins a room of two (conference)", joins),
                    ("two-party wac call, caller's first remote frame (baseline)", calls),
                )
            ],
        )
    )
    print(f"conference join / call set-up, p50: {percentile(joins, 0.5) / percentile(calls, 0.5):.2f}x")
    print()
    print("2. rooms: every page receiving every other (video 320x240@15 from Chromium's fake camera)")
    print(
        table(
            [
                "media",
                "participants",
                "holds",
                "Janus CPU (one core)",
                "Janus RSS MiB",
                "slowest flow (frames/s or B/s)",
            ],
            rows,
        )
    )
    print(f"({time.monotonic() - began:.0f} s in all; all browsers share this machine's CPUs with Janus)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="joins (and baseline calls) measured")
    parser.add_argument("--max-room", type=int, default=6, help="the largest video room tried")
    parser.add_argument("--audio-max-room", type=int, default=8, help="the largest audio-only room tried")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds a room has to get every flow going")
    parser.add_argument("--window", type=float, default=5.0, help="seconds each room is sampled over")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
