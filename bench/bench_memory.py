"""Memory at rest: ``wac run --demo`` (what ``make run`` starts) on a
throwaway data dir, measured once every child answers and --settle seconds
have passed with no traffic.

Reported for each process (the supervisor and each child it started, read
from its ``wac: started ROLE (pid N)`` lines): RSS and PSS from
/proc/PID/smaps_rollup, in MiB, beside the targets of issue 18. PSS counts
the pages the processes share (the interpreter, the same shared libraries)
once between them, so the PSS column adds up to what the processes cost
together; RSS counts them in each. The baseline, measured in the same run: a
bare ``python -c "import asyncio"`` of the same interpreter, the floor under
any Python process of wac. Envoy is C++ and has no target; it is listed, and
left out of the total the target speaks of (supervisor + core + edge).

The gateway is off (its fixed default ports would clash with other runs).
Last, which protobuf backend the interpreter uses (upb, the C one, expected).

    .venv/bin/python bench/bench_memory.py [--settle 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(Path(__file__).resolve().parent)]

from common import free_port, pss_kib, rss_kib, table  # noqa: E402

# MiB of RSS at rest, issue 18; the three together below TOGETHER_TARGET.
TARGETS = {"supervisor": 25.0, "core": 60.0, "edge": 35.0}
TOGETHER_TARGET = 120.0
STARTED = re.compile(r"wac: started (\w+) \(pid (\d+)\)")


def mib(kib: int) -> float:
    return kib / 1024


def started_children(log: Path, roles: int, process: subprocess.Popen[bytes], timeout: float) -> dict[str, int]:
    """Each child's pid, from the supervisor's log, once ``roles`` have started."""
    deadline = time.monotonic() + timeout
    while True:
        children = {role: int(pid) for role, pid in STARTED.findall(log.read_text(errors="replace"))}
        if len(children) >= roles:
            return children
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"wac run did not start its children:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def wait_port(port: int, timeout: float) -> None:
    """Until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f} s") from None
            time.sleep(0.1)


def measure(settle: float) -> None:
    with tempfile.TemporaryDirectory(prefix="wac-bench-memory-") as data:
        front, core, edge = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "WAC_DATA_DIR": data,
            "WAC_ENVOY_LISTEN": f"127.0.0.1:{front}",
            "WAC_ENVOY_ADMIN_PORT": "0",
            "WAC_CORE_LISTEN": f"127.0.0.1:{core}",
            "WAC_EDGE_LISTEN": f"127.0.0.1:{edge}",
            "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
            "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core}",
            "WAC_GATEWAY_ENABLED": "false",
            "WAC_CONFERENCES_ENABLED": "false",
            "WAC_LOG_LEVEL": "warning",
        }
        env.pop("WAC_CONFIG", None)
        log = Path(data) / "run.log"
        baseline = subprocess.Popen(
            [sys.executable, "-c", "import asyncio, time; time.sleep(3600)"], stdout=subprocess.DEVNULL
        )
        with log.open("wb") as out:
            run = subprocess.Popen(
                [sys.executable, "-m", "cli", "run", "--demo"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            children = started_children(log, 3, run, timeout=60)
            for port in (core, edge, front):
                wait_port(port, timeout=60)
            time.sleep(settle)
            processes = {"supervisor": run.pid, **children}
            sizes = {name: (rss_kib(pid), pss_kib(pid)) for name, pid in processes.items()}
            base = (rss_kib(baseline.pid), pss_kib(baseline.pid))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGTERM)
            baseline.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.wait(timeout=20)
            baseline.wait()

    rows: list[list[object]] = []
    for name, (rss, pss) in sizes.items():
        target = TARGETS.get(name)
        verdict = "-" if target is None else ("ok" if mib(rss) <= target else "over")
        rows.append([name, processes[name], mib(rss), mib(pss), target if target is not None else "-", verdict])
    wac_rss = sum(sizes[name][0] for name in TARGETS)
    wac_pss = sum(sizes[name][1] for name in TARGETS)
    rows.append(
        [
            "supervisor+core+edge",
            "-",
            mib(wac_rss),
            mib(wac_pss),
            TOGETHER_TARGET,
            "ok" if mib(wac_rss) < TOGETHER_TARGET else "over",
        ]
    )
    rows.append(["baseline: python -c 'import asyncio'", baseline.pid, mib(base[0]), mib(base[1]), "-", "-"])
    print(
        table(
            ["process", "pid", "RSS MiB", "PSS MiB", "target RSS MiB", ""],
            rows,
            title=f"wac run --demo at rest ({settle:.0f} s after every port answered)",
        )
    )
    # The C (upb) backend keeps messages and descriptors outside Python's heap;
    # the pure-Python one would cost the core and the edge several MiB more.
    print(f"protobuf backend: {protobuf_backend()} (expected: upb)")


def protobuf_backend() -> str:
    """Which implementation of protobuf this interpreter (the children's) uses."""
    out = subprocess.run(
        [sys.executable, "-c", "from google.protobuf.internal import api_implementation as a; print(a.Type())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds at rest before measuring (default 5)")
    args = parser.parse_args()
    measure(args.settle)


if __name__ == "__main__":
    main()
