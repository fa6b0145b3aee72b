"""No secret reaches the logs: one real `wac run --demo` (Envoy, core,
edge) at debug, so that every request is logged, driven through the front
door along every path that carries a secret, then its whole output (every
child's) searched for each one.

The secrets: passwords, right and wrong (Login over the WebSocket and the
HTTP fallback, subscribers created by `wac admin subscriber add` and over
SAPI); access and refresh tokens, whole and their secret part (the JWT's
signature, the refresh token's part after its last '.'), also refused
ones; API keys, right and wrong; the key files in the data dir; the
private signing key; and an SDP's ICE password and DTLS fingerprint, which
a call carries through both. The demo's passwords are printed once by
design (`wac run --demo`), and only there.

Envoy runs at its default log level: at debug it dumps every request's
headers, Authorization included, by its own design."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.support.cli import cli_env, stop, wac_async
from tests.support.run import start_run
from tests.support.server import free_port
from tests.support.stack import require_envoy
from tests.support.timing import seconds
from tests.wapi.support import WapiClient


def sdp(ice_pwd: str, fingerprint: str) -> str:
    return (
        "v=0\r\n"
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "t=0 0\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        f"a=ice-ufrag:{secrets.token_hex(4)}\r\n"
        f"a=ice-pwd:{ice_pwd}\r\n"
        "a=setup:actpass\r\n"
        "a=mid:0\r\n"
    )


def fingerprint() -> str:
    return ":".join(f"{byte:02X}" for byte in secrets.token_bytes(32))


@dataclass
class Secrets:
    """Each secret by the name a failure shows instead of it."""

    named: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        assert len(value) >= 12, f"{name} is too short to be searched for without chance matches"
        self.named[name] = value

    def token(self, name: str, token: str) -> None:
        """A token, and its secret part: a log line that cut a token at a
        dot would still leak that."""
        self.add(name, token)
        self.add(f"{name}'s secret part", token.rsplit(".", 1)[-1])

    def api_key(self, name: str, key: str) -> None:
        self.add(name, key)
        # wac_<key id>_<secret>: the id is no secret (`wac admin apikey list` shows it).
        self.add(f"{name}'s secret part", key.split("_", 2)[2])

    def redacted(self, line: str) -> str:
        for name, value in self.named.items():
            line = line.replace(value, f"<{name}>")
        return line


@dataclass
class Front:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/wapi"


def rpc(method: str, params: Mapping[str, Any], request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params)}


async def http_rpc(
    http: httpx.AsyncClient, method: str, params: Mapping[str, Any], token: str | None = None
) -> dict[str, Any]:
    """One JSON-RPC request over the HTTP fallback; its JSON-RPC response."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = await http.post("/wapi/http", json=rpc(method, params), headers=headers)
    assert answer.status_code in (200, 401), answer.text
    response: dict[str, Any] = answer.json()
    return response


async def call_event(client: WapiClient, kind: str) -> dict[str, Any]:
    """The next event of ``kind`` (others, presence among them, are skipped)."""
    while True:
        event = await client.event()
        if kind in event:
            found: dict[str, Any] = event[kind]
            return found


async def serving(front: Front, deadline: float) -> None:
    """Until the node is ready (the edge connected to the core, the database migrated)."""
    async with httpx.AsyncClient(timeout=1) as http:
        while True:
            try:
                if (await http.get(f"{front.url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "wac run did not get ready"
            await asyncio.sleep(0.1)


async def drive(front: Front, env: Mapping[str, str], found: Secrets) -> str:
    """Every path that carries a secret, through the front door; the
    output of the `wac admin` commands that must not echo one."""
    carol_password, dave_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    found.add("carol's password", carol_password)
    found.add("dave's password", dave_password)
    found.add("carol's wrong password", carol_wrong := secrets.token_urlsafe(12))
    found.add("dave's wrong password", dave_wrong := secrets.token_urlsafe(12))
    offer = sdp(offer_pwd := secrets.token_hex(12), offer_print := fingerprint())
    answer = sdp(answer_pwd := secrets.token_hex(12), answer_print := fingerprint())
    found.add("the offer's ice-pwd", offer_pwd)
    found.add("the offer's fingerprint", offer_print)
    found.add("the answer's ice-pwd", answer_pwd)
    found.add("the answer's fingerprint", answer_print)

    added = await wac_async("admin", "subscriber", "add", "carol", "--password", carol_password, env=env, timeout=10)
    assert added.returncode == 0, added.stdout + added.stderr
    created = await wac_async(
        "admin", "apikey", "create", "tester", "--scope", "identity.verify", "--scope", "subscribers.write",
        env=env, timeout=10,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    key = created.stdout.splitlines()[-1]
    found.api_key("the API key", key)
    wrong_key = f"wac_{key.split('_')[1]}_{secrets.token_urlsafe(32)}"
    found.api_key("the wrong API key", wrong_key)

    async with httpx.AsyncClient(base_url=front.url, timeout=seconds(2)) as http:
        sapi = {"Authorization": f"Bearer {key}"}
        made = await http.post(
            "/sapi/v1/subscribers", json={"username": "dave", "password": dave_password}, headers=sapi
        )
        assert made.status_code == 200, made.text
        refused = await http.post(
            "/sapi/v1/identity:verify", json={"token": "a.b.c"}, headers={"Authorization": f"Bearer {wrong_key}"}
        )
        assert refused.status_code == 401, refused.text

        async with connect(front.ws, open_timeout=seconds()) as ws:
            carol = WapiClient(ws)
            await carol.error("IdentityService.Login", {"username": "carol", "password": carol_wrong})
            session_c = await carol.login("carol", carol_password)
            found.token("carol's access token", session_c["accessToken"])
            found.token("carol's refresh token", session_c["refreshToken"])
            await carol.result("EventsService.Subscribe", {})

            assert "error" in await http_rpc(
                http, "IdentityService.Login", {"username": "dave", "password": dave_wrong}
            )
            session_d = (
                await http_rpc(http, "IdentityService.Login", {"username": "dave", "password": dave_password})
            )["result"]
            found.token("dave's access token", session_d["accessToken"])
            found.token("dave's refresh token", session_d["refreshToken"])

            # Dave's socket is bound by the token in its URL, which Envoy
            # and the edge see as part of the path.
            dave_url = f"{front.ws}?access_token={session_d['accessToken']}"
            async with connect(dave_url, open_timeout=seconds()) as dave_ws:
                dave = WapiClient(dave_ws)
                await dave.result("EventsService.Subscribe", {})
                call = await carol.result(
                    "CallsService.CreateCall", {"callee": "dave", "offer": {"type": "OFFER", "sdp": offer}}
                )
                assert (await call_event(dave, "callInvited"))["offer"]["sdp"] == offer
                await dave.result(
                    "CallsService.AnswerCall", {"callId": call["callId"], "answer": {"type": "ANSWER", "sdp": answer}}
                )
                assert (await call_event(carol, "callAnswered"))["answer"]["sdp"] == answer
                await carol.result("CallsService.HangupCall", {"callId": call["callId"]})
                await call_event(dave, "callEnded")

            # Over HTTP, with the bearer: the call with both descriptions, and
            # the events that carried them, replayed by a long poll.
            got = await http_rpc(http, "CallsService.GetCall", {"callId": call["callId"]}, session_d["accessToken"])
            assert "result" in got, got
            polled = await http.get(
                "/wapi/http/events",
                params={"afterSeq": "0"},
                headers={"Authorization": f"Bearer {session_d['accessToken']}"},
            )
            assert polled.status_code == 200 and polled.json()["events"], polled.text

            verified = await http.post(
                "/sapi/v1/identity:verify", json={"token": session_c["accessToken"]}, headers=sapi
            )
            assert verified.status_code == 200 and verified.json()["active"], verified.text
            header, payload, _ = session_c["accessToken"].split(".")
            forged = f"{header}.{payload}.{secrets.token_urlsafe(64)}"
            found.token("a forged access token", forged)
            rejected = await http.post("/sapi/v1/identity:verify", json={"token": forged}, headers=sapi)
            assert rejected.status_code == 200 and rejected.json().get("reason") == "INVALID_SIGNATURE", rejected.text
            got = await http_rpc(http, "IdentityService.GetSubscriber", {"username": "dave"}, forged)
            assert "error" in got, got

            refreshed_c = await carol.result(
                "IdentityService.RefreshSession", {"refreshToken": session_c["refreshToken"]}
            )
            found.token("carol's second access token", refreshed_c["accessToken"])
            found.token("carol's second refresh token", refreshed_c["refreshToken"])
            await carol.result("IdentityService.GetSubscriber", {"username": "carol"})
            refreshed_d = (
                await http_rpc(http, "IdentityService.RefreshSession", {"refreshToken": session_d["refreshToken"]})
            )["result"]
            found.token("dave's second access token", refreshed_d["accessToken"])
            found.token("dave's second refresh token", refreshed_d["refreshToken"])
            session_id = session_d["refreshToken"].split(".")[0]
            wrong_refresh = f"{session_id}.7.{secrets.token_urlsafe(32)}"
            found.token("a wrong refresh token", wrong_refresh)
            got = await http_rpc(http, "IdentityService.RefreshSession", {"refreshToken": wrong_refresh})
            assert "error" in got, got
            got = await http_rpc(
                http, "IdentityService.GetSubscriber", {"username": "dave"}, refreshed_d["accessToken"]
            )
            assert "result" in got, got

            await carol.result("IdentityService.Logout", {})
            got = await http_rpc(http, "IdentityService.Logout", {}, refreshed_d["accessToken"])
            assert "result" in got, got
            # A token its session's logout revoked, refused.
            got = await http_rpc(
                http, "IdentityService.GetSubscriber", {"username": "dave"}, refreshed_d["accessToken"]
            )
            assert "error" in got, got
    return added.stdout + added.stderr


def key_files(data: Path, found: Secrets) -> None:
    """The keys the core keeps in the data dir (the hop key; the gateway's
    when it is on), and the private part of each access-token signing key."""
    files = sorted(data.glob("*.key"))
    assert data / "hop.key" in files, sorted(path.name for path in data.iterdir())
    for path in files:
        found.api_key(f"the key in {path.name}", path.read_text().strip())
    with sqlite3.connect(f"file:{data / 'wac.sqlite3'}?mode=ro", uri=True) as database:
        rows = database.execute("SELECT kid, private_jwk FROM signing_keys").fetchall()
    assert rows
    for kid, jwk in rows:
        found.add(f"signing key {kid}'s private part", json.loads(jwk)["d"])


def entries(lines: list[str]) -> Iterator[dict[str, Any]]:
    """The JSON log lines (Envoy's and the supervisor's are plain text)."""
    for line in lines:
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


def demo_passwords(data: Path) -> dict[str, str]:
    text = (data / "demo-credentials.txt").read_text()
    return dict(line.split("\t") for line in text.splitlines() if line)


async def test_no_secret_reaches_the_logs_of_a_whole_run(tmp_path: Path) -> None:
    require_envoy()
    data = tmp_path / "data"
    front, core = Front(free_port()), free_port()
    env = cli_env(
        data,
        {
            "WAC_ENVOY_LISTEN": f"127.0.0.1:{front.port}",
            "WAC_ENVOY_ADMIN_PORT": str(free_port()),
            "WAC_CORE_LISTEN": f"127.0.0.1:{core}",
            "WAC_CORE_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
            "WAC_EDGE_LISTEN": f"127.0.0.1:{free_port()}",
            "WAC_EDGE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
            "WAC_EDGE_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
            "WAC_EDGE_CORE_ADDRESS": f"127.0.0.1:{core}",
            "WAC_LOG_LEVEL": "debug",
        },
    )
    log = tmp_path / "run.log"
    process = start_run(env, log, "--demo")
    found = Secrets()
    try:
        await serving(front, time.monotonic() + seconds(6))
        admin_output = await drive(front, env, found)
        key_files(data, found)
    except BaseException:
        stop(process)
        # Redacted: the tail shows why the drive failed, not the secrets so far.
        print(found.redacted(log.read_text(errors="replace")[-4000:]))
        raise
    stop(process)
    assert process.returncode == 0, log.read_text(errors="replace")[-3000:]

    lines = log.read_text(errors="replace").splitlines() + admin_output.splitlines()
    leaks = [
        f"{name} in: {found.redacted(line)[:300]}"
        for line in lines
        for name, value in found.named.items()
        if value in line
    ]
    # Printed once by design, alone on their line: anywhere else they leak.
    # Found there, they also show that the search sees the run's output.
    for username, password in demo_passwords(data).items():
        banner = f"{username}\t{password}"
        assert [line.strip() for line in lines if password in line][:1] == [banner], f"{username}'s demo banner"
        leaks += [
            f"{username}'s demo password in: {line.replace(password, '<password>')[:300]}"
            for line in lines
            if password in line and line.strip() != banner
        ]
    assert not leaks, "secrets in the logs:\n" + "\n".join(leaks)

    logged = list(entries(lines))
    # Not vacuous: the run logged its requests at debug (wac's own lines,
    # not only the libraries').
    ours = [entry for entry in logged if entry.get("level") == "debug" and entry.get("logger", "").startswith("wac")]
    assert len(ours) >= 10, lines[-50:]
    # A failed login is a warning naming its username (in a field: the
    # message's text is not this test's concern).
    for username in ("carol", "dave"):
        assert any(
            entry.get("level") == "warning" and username in (str(v) for k, v in entry.items() if k != "message")
            for entry in logged
        ), f"no warning for {username}'s failed login"
