"""`wac gateway` and `wac rtpengine`: the script rendered from the template
is one Kamailio accepts; values that could break it are refused before
Kamailio sees them; a refused configuration exits 78 (wac run then stops)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cli import gateway
from settings.config import ConfigError, load_config
from tests.support.cli import ROOT, cli_env
from tests.support.gateway import require_gateway
from tests.support.timing import seconds

KEY = "wac_test_gateway_key_0123456789abcdef"
EX_CONFIG = 78


def test_the_rendered_script_is_one_kamailio_accepts(tmp_path: Path) -> None:
    require_gateway()
    text = gateway.render_config(gateway_key=KEY)
    assert "{{" not in text and "}}" not in text
    path = tmp_path / "kamailio.cfg"
    gateway.write_private(path, text)
    gateway.check_config(path)


def test_kamailio_check_names_what_it_refuses(tmp_path: Path) -> None:
    require_gateway()
    path = tmp_path / "kamailio.cfg"
    text = gateway.render_config(gateway_key=KEY).replace('loadmodule "tm.so"', 'loadmodule "no_such_module.so"')
    gateway.write_private(path, text)
    with pytest.raises(gateway.GatewayError, match="no_such_module"):
        gateway.check_config(path)


# Values that could break the script, each with what the configuration's
# loading says of it and what the renderer says when called with it directly.
BREAKING = [
    ("domain", 'wac.example"\nlisten=udp:0.0.0.0:5060', "domain: must be"),
    ("jsonrpc_listen", "0.0.0.0:8089", "jsonrpc_listen: must be a loopback address"),
    ("ws_listen", "localhost:8088", "ws_listen: must be an IPv4 address"),
    ("ws_listen", "127.0.0.1:5060", "four different ports"),
    ("events_listen", "127.0.0.1:8089", "four different ports"),
    ("events_listen", "0.0.0.0:8090", "events_listen: must be a loopback address"),
    ("trunk_uri", "sip:carrier.example.com", "trunk_uri: must be sip:IPv4"),
    ("trunk_uri", 'sip:127.0.0.1:5090"', "trunk_uri: must be sip:IPv4"),
    ("sapi_url", "http://127.0.0.1:8080/", "sapi_url: must be"),
    ("sapi_url", 'http://127.0.0.1:8080/x", "', "sapi_url: must be"),
    ("rtpengine", "127.0.0.1:22222", "rtpengine: must be udp:IPv4:port"),
]


@pytest.mark.parametrize(("key", "value", "message"), BREAKING)
def test_values_that_could_break_the_script_are_refused_by_the_configuration(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    # The environment's name of the key is upper-case: WAC_GATEWAY_DOMAIN.
    with pytest.raises(ConfigError, match="(?i)" + message):
        load_config(None, {f"WAC_GATEWAY_{key.upper()}": value})
    path = tmp_path / "wac.toml"
    path.write_text(f"[gateway]\n{key} = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=r"\[gateway\] .*" + message):
        load_config(path, {})


@pytest.mark.parametrize(
    ("values", "message"),
    [({key: value}, message) for key, value, message in BREAKING] + [({"gateway_key": 'short"'}, "not an API key")],
)
def test_values_that_could_break_the_script_are_refused_by_the_renderer(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gateway.render_config(**{"gateway_key": KEY, **values})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WAC_GATEWAY_API_KEY": 'short"'}, "WAC_GATEWAY_API_KEY: is not an API key"),
        ({"WAC_GATEWAY_MEDIA_ADDRESS": "media.example.org"}, "WAC_GATEWAY_MEDIA_ADDRESS: must be an IPv4 address"),
        ({"WAC_GATEWAY_RTP_PORT_MIN": "3000", "WAC_GATEWAY_RTP_PORT_MAX": "2000"}, "rtp_port_min < rtp_port_max"),
    ],
)
def test_the_gateways_other_values_are_checked_with_the_configuration(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, env)


def test_rtpengine_runs_in_userspace_on_its_own_configuration() -> None:
    require_gateway()
    command = gateway.rtpengine_command(
        control="udp:127.0.0.1:22222", media_address="127.0.0.1", port_min=20000, port_max=29999, pid_file="x.pid"
    )
    assert "--table=-1" in command and "--foreground" in command and "--config-file=none" in command
    with pytest.raises(ValueError, match="rtp_port_min < rtp_port_max"):
        gateway.rtpengine_command(
            control="udp:127.0.0.1:22222", media_address="127.0.0.1", port_min=3000, port_max=2000, pid_file="x"
        )


def run_gateway(data: Path, template: Path, extra: dict[str, str] | None = None) -> tuple[int, str]:
    """`wac gateway` as wac run starts it, on another template."""
    program = (
        "import sys; from pathlib import Path; from cli import gateway; "
        "gateway.TEMPLATE = Path(sys.argv[1]); from cli.main import main; sys.exit(main(['gateway']))"
    )
    env = cli_env(data, {"WAC_GATEWAY_ENABLED": "true", **(extra or {})})
    result = subprocess.run(
        [sys.executable, "-c", program, str(template)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds(4),
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def provision_key(data: Path) -> None:
    data.mkdir(mode=0o700)
    key = data / "gateway.key"
    key.touch(mode=0o600)
    key.write_text(KEY)


def test_wac_gateway_exits_78_with_kamailios_reason_when_it_refuses_the_script(tmp_path: Path) -> None:
    require_gateway()
    data = tmp_path / "data"
    provision_key(data)
    broken = tmp_path / "kamailio.cfg.tmpl"
    text = gateway.TEMPLATE.read_text().replace("route[REQINIT] {", "route[REQINIT] {\n\tthis is not kamailio;", 1)
    broken.write_text(text)
    code, output = run_gateway(data, broken)
    assert code == EX_CONFIG, output
    assert f"Kamailio refused {data / 'kamailio.cfg'}" in output
    assert KEY not in output, "the gateway key is never printed"
    rendered = data / "kamailio.cfg"
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    assert KEY in rendered.read_text()


def test_kamailios_refusal_never_quotes_the_gateway_key(tmp_path: Path) -> None:
    require_gateway()
    path = tmp_path / "kamailio.cfg"
    # Kamailio quotes what it cannot load: here, the key itself.
    text = gateway.render_config(gateway_key=KEY).replace('loadmodule "tm.so"', f'loadmodule "{KEY}.so"', 1)
    gateway.write_private(path, text)
    with pytest.raises(gateway.GatewayError) as refused:
        gateway.check_config(path, secret=KEY)
    assert KEY not in str(refused.value)
    assert "could not find module <<gateway key>>" in str(refused.value)


def test_wac_gateway_exits_78_on_a_value_the_configuration_refuses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    provision_key(data)
    code, output = run_gateway(data, gateway.TEMPLATE, {"WAC_GATEWAY_JSONRPC_LISTEN": "0.0.0.0:8089"})
    assert code == EX_CONFIG, output
    assert "WAC_GATEWAY_JSONRPC_LISTEN: must be a loopback address" in output


def test_wac_gateway_exits_78_when_the_gateway_is_disabled(tmp_path: Path) -> None:
    data = tmp_path / "data"
    provision_key(data)
    code, output = run_gateway(data, gateway.TEMPLATE, {"WAC_GATEWAY_ENABLED": "false"})
    assert code == EX_CONFIG, output
    assert "the gateway is disabled" in output


# The callouts-off baseline of bench/bench_gateway.py: Kamailio's -A define.
NO_IDM = "WAC_BENCH_NO_IDM"


def kamailio_check(path: Path, *defines: str) -> subprocess.CompletedProcess[str]:
    command = [gateway.kamailio_binary(), "-c", *(arg for name in defines for arg in ("-A", name)), "-f", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds(4), check=False)


def test_the_benchs_no_idm_mode_is_never_what_wac_gateway_runs(tmp_path: Path) -> None:
    text = gateway.render_config(gateway_key=KEY)
    assert f"#!ifdef {NO_IDM}" in text, "the bench's switch is in the template"
    for directive in ("#!define", "#!trydef", "#!redefine"):
        assert f"{directive} {NO_IDM}" not in text, "the rendered script never turns the callouts off"
    command = gateway.kamailio_command("k.cfg", shm_mb=64, pid_file="k.pid", runtime_dir=tmp_path)
    assert "-A" not in command and NO_IDM not in " ".join(command)
    # Nothing in wac (what `wac gateway` and `wac run` run) names the switch.
    package = Path(gateway.__file__).parent
    assert not [p for p in package.rglob("*.py") if NO_IDM in p.read_text(encoding="utf-8")]


def test_both_modes_pass_kamailio_check_and_the_switch_selects_the_branch(tmp_path: Path) -> None:
    require_gateway()
    path = tmp_path / "kamailio.cfg"
    gateway.write_private(path, gateway.render_config(gateway_key=KEY))
    for defines in ((), (NO_IDM,)):
        result = kamailio_check(path, *defines)
        assert result.returncode == 0, result.stderr[-2000:]
    # A line Kamailio refuses inside the no-IdM branch: only the mode that
    # selects it fails, so each check above parsed the branch it meant to.
    broken = gateway.render_config(gateway_key=KEY).replace(
        f"#!ifdef {NO_IDM}\n", f"#!ifdef {NO_IDM}\n\tthis is not kamailio;\n"
    )
    gateway.write_private(path, broken)
    assert kamailio_check(path).returncode == 0
    assert kamailio_check(path, NO_IDM).returncode != 0
