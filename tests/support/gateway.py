"""The SIP gateway for tests: rtpengine and Kamailio on free 127.0.0.1 ports,
Kamailio's script rendered from gateway/kamailio.cfg.tmpl as `wac gateway`
renders it; a minimal SIP client over TCP; sipp."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cli import gateway
from tests.support.server import LocalServer, free_port
from tests.support.system import missing, require_program
from tests.support.timing import seconds

DOMAIN = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parents[1] / "gateway" / "scenarios"


def require_gateway() -> None:
    """Kamailio, rtpengine and sipp (deps/debian.txt), else skip (fail under CI=true)."""
    absent = gateway.missing_programs()
    if absent:
        missing(f"{' and '.join(absent)} not installed (sudo make system-deps)")
    require_program("sipp", "Debian package sip-tester")


class Rtpengine(LocalServer):
    """Userspace rtpengine, its control (ng protocol) on self.port."""

    name = "rtpengine"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        # A small range of its own, so that two gateways on the machine
        # (another test run) rarely compete for ports.
        self.port_min = 20000 + random.randrange(0, 99) * 100

    @property
    def control(self) -> str:
        return f"udp:127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return gateway.rtpengine_command(
            control=self.control,
            media_address="127.0.0.1",
            port_min=self.port_min,
            port_max=self.port_min + 99,
            pid_file=self.directory / "rtpengine.pid",
        )

    def ready(self) -> bool:
        return rtpengine_answers(self.port)


@dataclass
class KamailioSettings:
    sapi_url: str
    gateway_key: str
    rtpengine: str
    trunk_port: int
    ws_port: int = field(default_factory=free_port)
    jsonrpc_port: int = field(default_factory=free_port)
    events_port: int = field(default_factory=free_port)
    # The trunk's transport: "tcp" adds ;transport=tcp to trunk_uri.
    trunk_transport: str = "udp"


class Kamailio(LocalServer):
    """Kamailio on self.port (SIP, UDP and TCP), with the rendered script."""

    name = "kamailio"

    def __init__(self, directory: Path, settings: KamailioSettings) -> None:
        super().__init__(directory)
        self.settings = settings
        self.config_path = directory / "kamailio.cfg"

    def render(self) -> str:
        s = self.settings
        return gateway.render_config(
            domain=DOMAIN,
            ws_listen=f"127.0.0.1:{s.ws_port}",
            sip_listen=f"127.0.0.1:{self.port}",
            jsonrpc_listen=f"127.0.0.1:{s.jsonrpc_port}",
            events_listen=f"127.0.0.1:{s.events_port}",
            trunk_uri=f"sip:127.0.0.1:{s.trunk_port}" + (";transport=tcp" if s.trunk_transport == "tcp" else ""),
            rtpengine=s.rtpengine,
            sapi_url=s.sapi_url,
            gateway_key=s.gateway_key,
            workers=2,
        )

    def command(self) -> list[str]:
        gateway.write_private(self.config_path, self.render())
        runtime = self.directory / "kamailio-run"
        runtime.mkdir(exist_ok=True)
        return gateway.kamailio_command(
            self.config_path, shm_mb=64, pid_file=self.directory / "kamailio.pid", runtime_dir=runtime
        )

    def ready(self) -> bool:
        return sip_options_answered(self.port)


def rtpengine_answers(port: int) -> bool:
    """The ng protocol's ping ("<cookie> <bencoded dict>"), answered "pong"."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.sendto(b"probe d7:command4:pinge", ("127.0.0.1", port))
            return b"pong" in probe.recv(1024)
        except OSError:
            return False


def sip_options_answered(port: int) -> bool:
    """OPTIONS to the gateway itself over UDP, which the script answers 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(0.2)
        local = probe.getsockname()[1]
        branch = uuid.uuid4().hex
        ping = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{branch}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={branch}\r\n"
            "To: <sip:127.0.0.1>\r\n"
            f"Call-ID: {branch}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        try:
            probe.sendto(ping.encode(), ("127.0.0.1", port))
            return probe.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def udp_port_taken(port: int) -> bool:
    """Whether something listens on UDP port of 127.0.0.1 (it cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@dataclass
class Response:
    status: int
    text: str

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), its value stripped."""
        for line in self.text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


class SipTcp:
    """One TCP connection to the gateway, sending requests and reading their final answers."""

    def __init__(self, port: int, *, source: str = "127.0.0.1") -> None:
        """``source``: the address this client connects from (another
        loopback address than the trunk's, where the trunk is on TCP)."""
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=seconds(), source_address=(source, 0))
        self.source = source
        self.local = self.sock.getsockname()[1]
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipTcp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(
        self, user: str, *, token: str | None = None, authorization: str | None = None, to_user: str | None = None
    ) -> Response:
        """REGISTER sip:USER@domain from USER (To: to_user, default USER) with a bearer token, if any."""
        call = uuid.uuid4().hex
        to_user = to_user or user
        if authorization is None and token is not None:
            authorization = f"Bearer {token}"
        auth = f"Authorization: {authorization}\r\n" if authorization is not None else ""
        return self.request(
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {self.source}:{self.local};branch=z9hG4bK{call}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag={call[:8]}\r\n"
            f"To: <sip:{to_user}@{DOMAIN}>\r\n"
            f"Call-ID: {call}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@{self.source}:{self.local};transport=tcp>;expires=300\r\n"
            f"{auth}Content-Length: 0\r\n\r\n"
        )

    def message(self, sender: str, target: str, body: str, *, token: str | None = None) -> Response:
        """MESSAGE (RFC 3428) to target (a URI) from sender; the final answer."""
        call = uuid.uuid4().hex
        auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
        return self.request(
            f"MESSAGE {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {self.source}:{self.local};branch=z9hG4bK{call}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{sender}@{DOMAIN}>;tag={call[:8]}\r\n"
            f"To: <{target}>\r\n"
            f"Call-ID: {call}\r\n"
            "CSeq: 1 MESSAGE\r\n"
            f"{auth}Content-Type: text/plain\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}"
        )

    def reply(self, request: str, status: str) -> None:
        """Answer a request the gateway sent this client (e.g. "200 OK")."""
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        keep = [line for line in head if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        self.sock.sendall(("SIP/2.0 " + status + "\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode())

    def invite(self, caller: str, target: str, *, token: str | None = None) -> Response:
        """INVITE target (a URI) from caller with an RTP/AVP offer; the final answer."""
        self.send_invite(caller, target, token=token)
        while True:
            response = self.read()
            if response.status >= 200:
                return response

    def send_invite(self, caller: str, target: str, *, token: str | None = None) -> None:
        """INVITE target (a URI) from caller with an RTP/AVP offer, not waiting for answers."""
        call = uuid.uuid4().hex
        auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        self.sock.sendall(
            f"INVITE {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {self.source}:{self.local};branch=z9hG4bK{call}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{caller}@{DOMAIN}>;tag={call[:8]}\r\n"
            f"To: <{target}>\r\n"
            f"Call-ID: {call}\r\n"
            "CSeq: 1 INVITE\r\n"
            f"Contact: <sip:{caller}@{self.source}:{self.local};transport=tcp>\r\n"
            f"{auth}Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}".encode()
        )

    def request(self, text: str) -> Response:
        self.sock.sendall(text.encode())
        while True:
            response = self.read()
            if response.status >= 200:
                return response

    def read_request(self) -> str:
        """The next message, which must be a request (one the gateway sends this client)."""
        text = self._read_message()
        assert not text.startswith("SIP/2.0 "), f"not a request: {text.splitlines()[0]!r}"
        return text

    def read(self) -> Response:
        text = self._read_message()
        first = text.split("\r\n", 1)[0]
        assert first.startswith("SIP/2.0 "), f"not a response: {first!r}"
        return Response(int(first.split()[1]), text)

    def _read_message(self) -> str:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            key, _, value = line.partition(b":")
            if key.strip().lower() in (b"content-length", b"l"):
                length = int(value.strip())
        while len(rest) < length:
            self._fill()
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
        message, self._buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
        return message.decode(errors="replace")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the gateway closed the connection")
        self._buffer += chunk


def sipp(*args: str, log: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """sipp to completion (no terminal: -nostdin), its output in log."""
    command = ["sipp", "-nostdin", "-timeout", f"{timeout:.0f}s", "-timeout_error", *args]
    with log.open("w") as sink:
        result = subprocess.run(
            command, check=False, stdout=sink, stderr=subprocess.STDOUT, text=True, timeout=timeout + 10
        )
    return result


def start_sipp(*args: str, log: Path, timeout: float) -> subprocess.Popen[bytes]:
    """sipp in the background (no terminal: -nostdin), its output in log; it
    gives up after timeout (exit status 1)."""
    command = ["sipp", "-nostdin", "-timeout", f"{timeout:.0f}s", "-timeout_error", *args]
    with log.open("wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def start_sipp_uas(
    port: int, *, trace: Path, log: Path, scenario: str = "trunk.xml", timeout: float | None = None
) -> subprocess.Popen[bytes]:
    """sipp as the trunk on UDP port (scenarios/trunk.xml, or another of
    scenarios/): answers one call, echoes its RTP (-rtp_echo), writes every
    message it sends and receives to trace. With ``timeout``, sipp fails
    once it has waited that many seconds. Returns once it listens."""
    command = ["sipp", "-nostdin", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port)]
    command += ["-t", "u1"]
    command += ["-mi", "127.0.0.1", "-rtp_echo", "-mp", str(free_port()), "-m", "1"]
    command += ["-trace_msg", "-message_file", str(trace)]
    if timeout is not None:
        command += ["-timeout", f"{timeout:.0f}s", "-timeout_error"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds()
    while time.monotonic() < deadline and process.poll() is None:
        if udp_port_taken(port):
            return process
        time.sleep(0.01)
    process.kill()
    process.wait()
    raise RuntimeError(f"sipp UAS did not listen on {port}: {log.read_text(errors='replace')[-2000:]}")


def jsonrpc(port: int, method: str, *params: object) -> dict[str, object]:
    """One call to Kamailio's JSON-RPC over HTTP (POST /RPC); the whole answer."""
    import json
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/RPC", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=seconds()) as answer:
            return dict(json.loads(answer.read()))
    except urllib.error.HTTPError as error:
        # Kamailio answers a JSON-RPC error with its code as the HTTP status
        # and the JSON-RPC error in the body.
        return dict(json.loads(error.read()))


@dataclass
class Traced:
    """One message of a sipp message trace (-trace_msg)."""

    received: bool
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def cseq(self) -> str:
        for line in self.text.splitlines():
            if line.lower().startswith("cseq:"):
                return line.split(":", 1)[1].strip()
        return ""


def traced(trace: Path) -> list[Traced]:
    """The messages of a sipp trace, in order: each follows a line of dashes
    and a line saying whether it was sent or received."""
    messages = []
    for block in re.split(r"^-{20,}.*$", trace.read_text(errors="replace"), flags=re.MULTILINE):
        header, _, text = block.strip("\n").partition("\n")
        if " message " in header:
            messages.append(Traced(received=" received " in header, text=text.strip("\n")))
    return messages


def find(messages: list[Traced], first_line: str, cseq: str, *, received: bool = True) -> Traced:
    """The message whose first line starts with first_line, with that CSeq."""
    for message in messages:
        if message.received == received and message.first_line.startswith(first_line) and message.cseq == cseq:
            return message
    raise AssertionError(f"no {first_line} {cseq} {'received' if received else 'sent'}")


OFFER = (
    "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class TrunkSide(Protocol):
    """Where the gateway listens and where it expects the trunk."""

    @property
    def sip_port(self) -> int: ...

    trunk_port: int


class Trunk:
    """The carrier: SIP over UDP from trunk_uri's port, as the gateway expects it."""

    def __init__(self, gateway: TrunkSide) -> None:
        self.gateway = gateway
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", gateway.trunk_port))
        self.sock.settimeout(seconds())
        self.call = uuid.uuid4().hex

    def close(self) -> None:
        self.sock.close()

    def invite(self, number: str) -> None:
        self.sock.sendto(
            (
                f"INVITE sip:{number}@127.0.0.1:{self.gateway.sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.gateway.trunk_port};branch=z9hG4bK{self.call}\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:+34911000000@127.0.0.1>;tag={self.call[:8]}\r\n"
                f"To: <sip:{number}@127.0.0.1>\r\n"
                f"Call-ID: {self.call}\r\n"
                "CSeq: 1 INVITE\r\n"
                f"Contact: <sip:+34911000000@127.0.0.1:{self.gateway.trunk_port}>\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(OFFER)}\r\n\r\n{OFFER}"
            ).encode(),
            ("127.0.0.1", self.gateway.sip_port),
        )

    def take(self, status: str) -> str:
        """Takes the next request the gateway sends the trunk and answers it
        with ``status`` ("200 OK"); the request."""
        data, address = self.sock.recvfrom(65536)
        request = data.decode()
        self.sock.sendto(response(request, status).encode(), address)
        return request

    def message(
        self, number: str, text: bytes, *, call_id: str, sender: str = "+34911000000", content_type: str = "text/plain"
    ) -> str:
        """Sends a MESSAGE (RFC 3428) to a number; the gateway's final answer."""
        port = self.gateway.sip_port
        head = (
            f"MESSAGE sip:{number}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.gateway.trunk_port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{sender}@127.0.0.1>;tag=carrier\r\n"
            f"To: <sip:{number}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(text)}\r\n\r\n"
        )
        self.sock.sendto(head.encode() + text, ("127.0.0.1", port))
        return self._final_answer()

    def _final_answer(self) -> str:
        """The next final response the gateway sends the trunk (provisional ones skipped)."""
        while True:
            text = self.sock.recv(65536).decode(errors="replace")
            if int(text.split()[1]) >= 200:
                return text

    def final(self) -> str:
        """The final answer to the INVITE (provisional ones skipped), ACKed."""
        text = self._final_answer()
        to = next(line for line in text.split("\r\n") if line.lower().startswith("to:"))
        self.sock.sendto(
            (
                f"ACK sip:127.0.0.1:{self.gateway.sip_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.gateway.trunk_port};branch=z9hG4bK{self.call}\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:+34911000000@127.0.0.1>;tag={self.call[:8]}\r\n"
                f"{to}\r\nCall-ID: {self.call}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", self.gateway.sip_port),
        )
        return text


def response(request: str, status: str) -> str:
    """A response with no body ("486 Busy Here") to a request the gateway
    sent: its dialog headers copied back, and a To tag (RFC 3261 8.2.6.2)."""
    keep = [
        line
        for line in request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        if line.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq", "record-route")
    ]
    to = next(line for line in request.split("\r\n") if line.lower().startswith("to:"))
    headers = "\r\n".join([*keep, f"{to};tag={uuid.uuid4().hex[:8]}"])
    return f"SIP/2.0 {status}\r\n{headers}\r\nContent-Length: 0\r\n\r\n"


def busy(invite: str) -> str:
    """486 Busy Here to an INVITE the gateway sent a device."""
    return response(invite, "486 Busy Here")
