"""Render and run Janus, the conferences' media server (janus/*.jcfg.tmpl).

Janus comes from Debian's package (deps/debian.txt). ``wac janus`` writes
its configuration into the data dir's ``janus/`` folder (0600: it holds the
token secret) and becomes Janus in the foreground, so that ``wac run``
supervises it like any other child. Only what conferences use is loaded:
the VideoRoom plugin, the WebSocket transport (browsers, through the front
door's /janus) and the HTTP transport (the core), both on loopback.
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from string import Template

from settings import checks
from settings.assets import asset
from settings.checks import guard

TEMPLATES = asset("janus")
CONFIG_FILE = "janus.jcfg"
# The plugin and transports wac uses; the rest of the package is left unloaded.
PLUGIN = "libjanus_videoroom.so"
TRANSPORTS = ("libjanus_websockets.so", "libjanus_http.so")

# Where Debian (multiarch) and a source install put Janus's modules.
_LIBRARIES = ("/usr/lib/*/janus", "/usr/lib/janus", "/usr/local/lib/janus", "/opt/janus/lib/janus")


class JanusError(RuntimeError):
    """Janus is missing, or did not start."""


@dataclass(frozen=True)
class Folders:
    plugins: Path
    transports: Path
    events: Path
    loggers: Path


def janus_binary() -> str | None:
    return shutil.which("janus") or next(
        (path for path in ("/usr/bin/janus", "/usr/local/bin/janus", "/opt/janus/bin/janus") if Path(path).is_file()),
        None,
    )


def folders() -> Folders:
    """Janus's module folders, found where its package put them."""
    for pattern in _LIBRARIES:
        for found in sorted(glob.glob(pattern)):
            root = Path(found)
            if (root / "plugins" / PLUGIN).is_file():
                return Folders(root / "plugins", root / "transports", root / "events", root / "loggers")
    raise JanusError(
        "Janus's VideoRoom plugin is not installed (sudo make system-deps installs janus, see deps/debian.txt)"
    )


def missing_programs() -> list[str]:
    """What conferences need and this machine lacks ([] when Janus can run)."""
    if janus_binary() is None:
        return ["janus"]
    try:
        folders()
    except JanusError:
        return ["janus (its VideoRoom plugin)"]
    return []


def _others(folder: Path, kept: tuple[str, ...]) -> str:
    """Every module of ``folder`` but ``kept``, as Janus's disable list."""
    names = sorted(p.name for p in folder.glob("*.so") if p.name not in kept) if folder.is_dir() else []
    return json.dumps(",".join(names))


def render_configs(
    directory: Path,
    *,
    ws_listen: str = "127.0.0.1:8188",
    api_listen: str = "127.0.0.1:8187",
    rtp_ports: tuple[int, int] = (40000, 44999),
    ice_interfaces: str = "lo",
    public_address: str = "",
    stun_server: str = "",
    token_secret: str,
    room_admin_key: str,
    debug_level: int = 3,
    found: Folders | None = None,
) -> dict[str, str]:
    """Each of Janus's configuration files by name, for ``directory``.
    A room's size is not Janus's setting but each room's: the core sets it
    when it creates one (connectors/janus.py)."""
    ws_host, ws_port = guard("ws_listen", checks.split_address, ws_listen)
    api_host, api_port = guard("api_listen", checks.split_address, api_listen)
    guard("rtp_ports", checks.rtp_ports, rtp_ports)
    guard("ice_interfaces", checks.ice_interfaces, ice_interfaces)
    if not token_secret or not room_admin_key:
        raise ValueError("Janus needs its token secret and room admin key")
    if not 0 <= debug_level <= 7:
        raise ValueError(f"debug_level must be 0 to 7, got {debug_level}")
    found = found or folders()
    nat: list[str] = []
    if public_address:
        guard("public_address", checks.ipv4, public_address)
        nat.append(f"\tnat_1_1_mapping = {json.dumps(public_address)}")
    if stun_server:
        host, port = guard("stun_server", checks.split_address, stun_server)
        nat += [f"\tstun_server = {json.dumps(host)}", f"\tstun_port = {port}"]

    def render(name: str, **values: object) -> str:
        text = (TEMPLATES / f"{name}.tmpl").read_text(encoding="utf-8")
        return Template(text).substitute(values)

    quoted = json.dumps  # a JSON string is a valid libconfig string
    return {
        CONFIG_FILE: render(
            CONFIG_FILE,
            configs_folder=quoted(str(directory.resolve())),
            plugins_folder=quoted(str(found.plugins)),
            transports_folder=quoted(str(found.transports)),
            events_folder=quoted(str(found.events)),
            loggers_folder=quoted(str(found.loggers)),
            debug_level=debug_level,
            token_secret=quoted(token_secret),
            rtp_port_min=rtp_ports[0],
            rtp_port_max=rtp_ports[1],
            ice_interfaces=quoted(ice_interfaces),
            nat="\n".join(nat),
            disabled_plugins=_others(found.plugins, (PLUGIN,)),
            disabled_transports=_others(found.transports, TRANSPORTS),
            disabled_loggers=_others(found.loggers, ()),
        ),
        "janus.transport.websockets.jcfg": render(
            "janus.transport.websockets.jcfg", ws_host=quoted(ws_host), ws_port=ws_port
        ),
        "janus.transport.http.jcfg": render("janus.transport.http.jcfg", api_host=quoted(api_host), api_port=api_port),
        "janus.plugin.videoroom.jcfg": render("janus.plugin.videoroom.jcfg", room_admin_key=quoted(room_admin_key)),
    }


def write_configs(directory: Path, files: dict[str, str]) -> Path:
    """Write the files (0600, in a 0700 folder); the main file's path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    for name, text in files.items():
        path = directory / name
        # Private before the secret is written.
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(text, encoding="utf-8")
    return directory / CONFIG_FILE


def janus_command(config: Path) -> list[str]:
    binary = janus_binary()
    if binary is None:
        raise JanusError("Janus is not installed (sudo make system-deps installs it, see deps/debian.txt)")
    # -o: no colours in wac run's log.
    return [binary, "--config", str(config), "--configs-folder", str(config.parent), "--disable-colors"]


def wait_until_live(
    api_listen: str, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> dict[str, object]:
    """Janus's own description (GET /janus/info) once its HTTP API answers;
    JanusError if ``process`` exits first or ``timeout`` passes."""
    host, port = checks.split_address(api_listen)
    deadline = time.monotonic() + timeout
    url = f"http://{host}:{port}/janus/info"
    while True:
        if process is not None and process.poll() is not None:
            raise JanusError(f"Janus exited with code {process.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                info: dict[str, object] = json.loads(answer.read())
                return info
        except (urllib.error.URLError, OSError, ValueError):
            if time.monotonic() >= deadline:
                raise JanusError(f"Janus did not answer on {url} within {timeout:g} s") from None
            time.sleep(0.1)
