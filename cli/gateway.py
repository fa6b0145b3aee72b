"""Render, check and run the SIP gateway: Kamailio (gateway/kamailio.cfg.tmpl)
and rtpengine, its media anchor.

Both come from Debian packages (deps/debian.txt). ``wac gateway`` and
``wac rtpengine`` run them in the foreground, so that ``wac run`` supervises
them like any other child.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from settings import checks
from settings.assets import asset
from settings.checks import guard

TEMPLATE = asset("gateway", "kamailio.cfg.tmpl")

# Debian installs both in sbin or bin; a user's PATH may lack /usr/sbin.
_SEARCH = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")

# Kamailio's private memory per process in MB (its default of 8 is plenty
# for this script; the JSON answers of the SAPI are small).
PKG_MB = 8

_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")


class GatewayError(RuntimeError):
    """Kamailio or rtpengine is missing, or Kamailio refused a configuration."""


def _program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _SEARCH:
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    return None


def kamailio_binary() -> str:
    found = _program("kamailio")
    if found is None:
        raise GatewayError("Kamailio is not installed (sudo make system-deps installs it, see deps/debian.txt)")
    return found


def rtpengine_binary() -> str:
    found = _program("rtpengine")
    if found is None:
        raise GatewayError("rtpengine is not installed (sudo make system-deps installs it, see deps/debian.txt)")
    return found


def missing_programs() -> list[str]:
    """The gateway's programs that are not installed ([] when it can run)."""
    return [name for name in ("kamailio", "rtpengine") if _program(name) is None]


def render_config(
    *,
    domain: str = "127.0.0.1",
    ws_listen: str = "127.0.0.1:8088",
    sip_listen: str = "127.0.0.1:5060",
    jsonrpc_listen: str = "127.0.0.1:8089",
    events_listen: str = "127.0.0.1:8090",
    trunk_uri: str = "sip:127.0.0.1:5090",
    rtpengine: str = "udp:127.0.0.1:22222",
    sapi_url: str = "http://127.0.0.1:8080",
    gateway_key: str,
    workers: int = 4,
) -> str:
    """Fill in gateway/kamailio.cfg.tmpl and return the script's text.

    The text holds gateway_key (the gateway's API key towards the SAPI):
    write it where only wac's user reads it. Every value is checked here;
    check_config runs Kamailio's own parser on the result.
    """
    # Every value lands inside the Kamailio script, some inside double-quoted
    # strings. `wac gateway` passes values the configuration has checked
    # (settings/checks.py); the same checks guard other callers here.
    guard("[gateway] domain", checks.sip_domain, domain)
    for what, value in (("ws_listen", ws_listen), ("sip_listen", sip_listen)):
        guard(f"[gateway] {what}", checks.ipv4_address, value)
    guard("[gateway] jsonrpc_listen", checks.loopback("it can end calls"), jsonrpc_listen)
    guard("[gateway] events_listen", checks.loopback("it tells who calls whom"), events_listen)
    listeners = {
        "ws_listen": ws_listen,
        "sip_listen": sip_listen,
        "jsonrpc_listen": jsonrpc_listen,
        "events_listen": events_listen,
    }
    guard("[gateway]", checks.distinct_ports, listeners)
    ws_host, ws_port = checks.split_address(ws_listen)
    sip_host, sip_port = checks.split_address(sip_listen)
    rpc_host, rpc_port = checks.split_address(jsonrpc_listen)
    events_host, events_port = checks.split_address(events_listen)
    trunk = guard("[gateway] trunk_uri", checks.parse_trunk, trunk_uri)
    guard("[gateway] rtpengine", checks.rtpengine, rtpengine)
    guard("[gateway] sapi_url", checks.sapi_url, sapi_url)
    guard("the gateway key", checks.api_key, gateway_key)
    if not (sapi_url and gateway_key):
        raise ValueError("the gateway needs the SAPI's URL and its API key")
    values = {
        "domain": domain,
        "ws_host": ws_host,
        "ws_port": str(ws_port),
        "sip_host": sip_host,
        "sip_port": str(sip_port),
        "jsonrpc_host": rpc_host,
        "jsonrpc_port": str(rpc_port),
        "events_host": events_host,
        "events_port": str(events_port),
        "trunk_uri": trunk.uri,
        "trunk_host": trunk.host,
        "trunk_port": str(trunk.port),
        "trunk_hostport": trunk.hostport,
        "trunk_transport": trunk.transport,
        "rtpengine": rtpengine,
        "sapi_url": sapi_url,
        "gateway_key": gateway_key,
        "workers": str(workers),
    }

    def fill(match: re.Match[str]) -> str:
        name = match[1]
        if name not in values:
            raise ValueError(f"{TEMPLATE.name} uses {{{{{name}}}}}, which wac does not fill in")
        return values[name]

    return _PLACEHOLDER.sub(fill, TEMPLATE.read_text(encoding="utf-8"))


def write_private(path: Path, text: str) -> None:
    """Write text readable by wac's user only (it holds the gateway key)."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")


def check_config(path: str | Path, *, secret: str = "", timeout: float = 30.0) -> None:
    """Run ``kamailio -c``; raise GatewayError with Kamailio's reason if it refuses the script.

    It parses the script and loads and configures every module, without
    binding a port. A parse error quotes the script near it: ``secret`` (the
    gateway key) is blanked out of the message."""
    command = [kamailio_binary(), "-c", "-f", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        output = "\n".join(part.strip() for part in (result.stderr, result.stdout) if part.strip())
        if secret:
            output = output.replace(secret, "<gateway key>")
        raise GatewayError(f"Kamailio refused {path}:\n{_errors(output) or f'exit code {result.returncode}'}")


def _errors(output: str) -> str:
    """Kamailio's error lines (its -c output is mostly notices)."""
    lines = [line for line in output.splitlines() if "ERROR" in line or "CRITICAL" in line or "error" in line]
    return "\n".join(lines[-20:]) or output[-2000:]


def kamailio_command(
    config_path: str | Path, *, shm_mb: int, pid_file: str | Path, runtime_dir: str | Path
) -> list[str]:
    """Kamailio in the foreground: -DD keeps the main process attached (its
    workers are its children), -E logs to stderr, which wac run shows."""
    return [
        kamailio_binary(),
        "-DD",
        "-E",
        "-f",
        str(config_path),
        "-m",
        str(shm_mb),
        "-M",
        str(PKG_MB),
        "-P",
        str(pid_file),
        # Where Kamailio keeps its runtime files, instead of /run/kamailio.
        "-Y",
        str(runtime_dir),
    ]


def rtpengine_command(
    *,
    control: str,
    media_address: str,
    port_min: int,
    port_max: int,
    pid_file: str | Path,
) -> list[str]:
    """rtpengine in userspace (no kernel module), in the foreground, logging to stderr."""
    control_host, control_port = guard("[gateway] rtpengine", checks.split_rtpengine, control)
    guard("[gateway] media_address", checks.ipv4, media_address)
    guard("[gateway]", checks.rtp_ports, (port_min, port_max))
    return [
        rtpengine_binary(),
        # Not /etc/rtpengine/rtpengine.conf, which Debian's own daemon uses
        # (its control, CLI and HTTP ports would collide).
        "--config-file=none",
        # Userspace forwarding: no kernel module (table -1).
        "--table=-1",
        "--foreground",
        "--log-stderr",
        f"--interface={media_address}",
        f"--listen-ng={control_host}:{control_port}",
        f"--port-min={port_min}",
        f"--port-max={port_max}",
        f"--pidfile={pid_file}",
    ]
