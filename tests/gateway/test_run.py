"""`wac run` supervises the gateway: rtpengine and Kamailio start beside the
core, the edge and Envoy, Kamailio asks the SAPI with the key the core
provisioned, and everything stops with the supervisor."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import httpx

from tests.support.cli import stop
from tests.support.gateway import SipTcp, require_gateway
from tests.support.run import start_run
from tests.support.server import free_port
from tests.support.timing import seconds
from wac.v1 import calls_pb2, calls_pb2_grpc, identity_pb2, identity_pb2_grpc


def test_wac_run_starts_the_gateway_which_asks_the_sapi_with_the_provisioned_key(tmp_path: Path) -> None:
    require_gateway()
    data = tmp_path / "data"
    front, core, sip = free_port(), free_port(), free_port()
    rtp = 20000 + random.randrange(0, 99) * 100
    env = {
        **os.environ,
        "WAC_DATA_DIR": str(data),
        "WAC_ENVOY_LISTEN": f"127.0.0.1:{front}",
        "WAC_ENVOY_ADMIN_PORT": str(free_port()),
        "WAC_CORE_LISTEN": f"127.0.0.1:{core}",
        "WAC_EDGE_LISTEN": f"127.0.0.1:{free_port()}",
        "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core}",
        "WAC_GATEWAY_ENABLED": "true",
        "WAC_GATEWAY_SIP_LISTEN": f"127.0.0.1:{sip}",
        "WAC_GATEWAY_WS_LISTEN": f"127.0.0.1:{free_port()}",
        "WAC_GATEWAY_JSONRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "WAC_GATEWAY_EVENTS_LISTEN": f"127.0.0.1:{free_port()}",
        "WAC_GATEWAY_RTPENGINE": f"udp:127.0.0.1:{free_port()}",
        "WAC_GATEWAY_RTP_PORT_MIN": str(rtp),
        "WAC_GATEWAY_RTP_PORT_MAX": str(rtp + 99),
        "WAC_GATEWAY_SHM_MB": "64",
        "WAC_GATEWAY_WORKERS": "2",
        # Janus would take its fixed default ports; tests/janus runs it on free ones.
        "WAC_CONFERENCES_ENABLED": "false",
    }
    env.pop("WAC_CONFIG", None)
    log = tmp_path / "run.log"
    process = start_run(env, log, "--demo")
    try:
        # Up once Kamailio answers a REGISTER without a token (no callout).
        deadline = time.monotonic() + seconds(6)
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with SipTcp(sip) as client:
                    status = client.register("alice").status
                break
            except OSError:
                time.sleep(0.1)
        output = log.read_text(errors="replace")
        assert status == 401, output
        assert "wac: started rtpengine" in output and "wac: started gateway" in output

        password = dict(line.split("\t") for line in (data / "demo-credentials.txt").read_text().splitlines() if line)[
            "alice"
        ]
        with grpc.insecure_channel(f"127.0.0.1:{front}") as channel:
            session = identity_pb2_grpc.IdentityServiceStub(channel).Login(
                identity_pb2.LoginRequest(username="alice", password=password, device_name="test"),
                timeout=seconds(4),
                # Kamailio may answer before Envoy listens: wait for the front door.
                wait_for_ready=True,
            )
        # The gateway wac run started is the one announced at login.
        assert session.sip_gateway == identity_pb2.SipGateway(path="/sip", domain="127.0.0.1")
        with SipTcp(sip) as client:
            registered = client.register("alice", token=session.access_token)
        assert registered.status == 200, registered.text + log.read_text(errors="replace")[-3000:]
        # The core wac run started reads the reports of the Kamailio it
        # started (once connected: reports made before are dropped, and an
        # unanswered call leaves no dialog to reconcile): a call to bob, who
        # has no registration, is in alice's history.
        deadline = time.monotonic() + seconds()
        while "reading the gateway's call events" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.05)
        with SipTcp(sip) as client:
            assert client.invite("alice", "sip:bob@127.0.0.1", token=session.access_token).status == 404
        metadata = (("authorization", f"Bearer {session.access_token}"),)
        with grpc.insecure_channel(f"127.0.0.1:{front}") as channel:
            calls = calls_pb2_grpc.CallsServiceStub(channel)
            deadline = time.monotonic() + seconds()
            while True:
                listed = calls.ListCalls(calls_pb2.ListCallsRequest(), metadata=metadata, timeout=seconds()).calls
                if (listed and listed[0].state == calls_pb2.Call.ENDED) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert [(c.callee, c.via, c.end_reason) for c in listed] == [
            ("bob", calls_pb2.Call.SIP, calls_pb2.Call.UNAVAILABLE)
        ], log.read_text(errors="replace")[-3000:]
        key = (data / "gateway.key").read_text().strip()
        assert key and key not in log.read_text(errors="replace"), "the gateway key is never logged"
        assert_readiness_follows_the_gateway(front, log)
    finally:
        stop(process)
    assert process.returncode == 0, log.read_text(errors="replace")[-3000:]
    left = subprocess.run(["pgrep", "-f", str(data)], check=False, capture_output=True, text=True)
    assert left.stdout == "", "no Kamailio or rtpengine outlives wac run"


def readyz(front: int) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"http://127.0.0.1:{front}/readyz", timeout=seconds())
    return answer.status_code, answer.json()


def assert_readiness_follows_the_gateway(front: int, log: Path) -> None:
    """The gateway is one of the node's readiness checks: Kamailio stopped
    (all its processes: SIGSTOP) makes /readyz 503 naming it."""
    deadline = time.monotonic() + seconds()
    # The checks of the very answer that said ready, not of a second request.
    while (answer := readyz(front))[0] != 200:
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)
    assert answer[1]["checks"]["gateway"] == {"status": "pass"}, answer
    kamailio = int(re.findall(r"wac: started gateway \(pid (\d+)\)", log.read_text(errors="replace"))[-1])
    children = Path(f"/proc/{kamailio}/task/{kamailio}/children").read_text().split()
    processes = [kamailio, *map(int, children)]
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + seconds()
        while readyz(front)[0] != 503:
            assert time.monotonic() < deadline, readyz(front)
            time.sleep(0.1)
        failed = {name: check for name, check in readyz(front)[1]["checks"].items() if check["status"] == "fail"}
        assert list(failed) == ["gateway"], failed
    finally:
        for pid in processes:
            os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + seconds()
    while readyz(front)[0] != 200:
        assert time.monotonic() < deadline, readyz(front)
        time.sleep(0.1)
