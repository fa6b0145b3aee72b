"""The configuration file, its environment overrides and its errors."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from settings.config import SECTIONS, ClusterConfig, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "wac.example.toml"


def test_the_example_documents_every_key_with_its_default() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    defaults = load_config(None, {})
    for name, cls in SECTIONS.items():
        documented = raw.get(name, {})
        for field in dataclasses.fields(cls):
            assert field.name in documented, f"[{name}] {field.name} is missing from wac.example.toml"
            value = getattr(getattr(defaults, name), field.name)
            expected = list(value) if isinstance(value, tuple) else value
            assert documented[field.name] == expected, f"[{name}] {field.name}: example differs from the default"
    assert load_config(EXAMPLE, {}) == defaults


def test_environment_overrides_every_kind_of_value(tmp_path: Path) -> None:
    config = load_config(
        None,
        {
            "WAC_DATA_DIR": str(tmp_path),
            "WAC_CORE_LISTEN": "127.0.0.1:1234",
            "WAC_CALLS_BUSY_ON_BUSY": "yes",
            "WAC_CALLS_RING_TIMEOUT": "5",
            "WAC_ICE_STUN_URLS": "stun:a.example:3478, stun:b.example:3478",
        },
    )
    assert config.data_dir == tmp_path
    assert config.core.listen == "127.0.0.1:1234"
    assert config.calls.busy_on_busy is True
    assert config.calls.ring_timeout == 5.0
    assert config.ice.stun_urls == ("stun:a.example:3478", "stun:b.example:3478")
    assert config.database_url.endswith(f"{tmp_path}/wac.sqlite3")


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[core]\nlisen = 'x'\n", {}, "[core] unknown key(s): lisen"),
        ("[cores]\n", {}, "unknown top-level key(s): cores"),
        ("[calls]\nring_timeout = 'soon'\n", {}, "[calls] ring_timeout: expected a number"),
        ("", {"WAC_CALLS_BUSY_ON_BUSY": "maybe"}, "WAC_CALLS_BUSY_ON_BUSY: expected true or false"),
        (
            "[presence]\nvisibility = 'world'\n",
            {},
            "[presence] visibility: must be one of contacts, domain, got 'world'",
        ),
        ("[roles.x]\npermissions = 'call.audio'\n", {}, "[roles.x] permissions: expected a list of strings"),
        ("not toml [", {}, "is not valid TOML"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "wac.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, env)
    assert message in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", {})


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[identity]\nthrottle_after = 0\n", {}, "[identity] throttle_after: must be between 1 and 10000, got 0"),
        ("[identity]\nthrottle_after = 1e12\n", {}, "[identity] throttle_after: must be between 1 and 10000"),
        ("[identity]\nthrottle_delay = 0\n", {}, "[identity] throttle_delay: must be between 0.001 and 3600, got 0"),
        ("[identity]\nthrottle_delay = 1e12\n", {}, "[identity] throttle_delay: must be between 0.001 and 3600"),
        ("[identity]\nthrottle_delay = nan\n", {}, "[identity] throttle_delay: must be between 0.001 and 3600"),
        ("[identity]\nlock_after = -3\n", {}, "[identity] lock_after: must be between 1 and 100000, got -3"),
        ("[identity]\nlock_seconds = 0\n", {}, "[identity] lock_seconds: must be between 1 and 604800, got 0"),
        ("[identity]\nthrottle_window = 1e12\n", {}, "[identity] throttle_window: must be between 1 and 604800"),
        ("", {"WAC_IDENTITY_THROTTLE_WINDOW": "0"}, "WAC_IDENTITY_THROTTLE_WINDOW: must be between 1 and 604800"),
        ("", {"WAC_IDENTITY_LOCK_SECONDS": "-1"}, "WAC_IDENTITY_LOCK_SECONDS: must be between 1 and 604800"),
        ("", {"WAC_IDENTITY_MAX_PASSWORD_CHECKS": "0"}, "WAC_IDENTITY_MAX_PASSWORD_CHECKS: must be between 1 and 256"),
        ("", {"WAC_IDENTITY_REFRESH_MIN_INTERVAL": "1e9"}, "WAC_IDENTITY_REFRESH_MIN_INTERVAL: must be between 0"),
        ("", {"WAC_IDENTITY_THROTTLE_AFTER": "three"}, "WAC_IDENTITY_THROTTLE_AFTER: expected a number"),
    ],
)
def test_nonsensical_throttle_settings_are_refused(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "wac.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, env)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WAC_EDGE_MAX_MESSAGE_BYTES": "1000"}, "WAC_EDGE_MAX_MESSAGE_BYTES: must be at least 1024, got '1000'"),
        ({"WAC_EDGE_MAX_BATCH": "0"}, "WAC_EDGE_MAX_BATCH: must be between 1 and 1000, got '0'"),
        ({"WAC_EDGE_RATE_PER_SECOND": "0"}, "WAC_EDGE_RATE_PER_SECOND: must be more than zero"),
        ({"WAC_EDGE_SEND_QUEUE_BYTES": "65535"}, "WAC_EDGE_SEND_QUEUE_BYTES: must be at least 65536"),
        ({"WAC_EDGE_HEADER_TIMEOUT": "-1"}, "WAC_EDGE_HEADER_TIMEOUT: must be more than zero"),
        ({"WAC_ENVOY_LISTEN": "8080"}, "WAC_ENVOY_LISTEN: must be host:port, got '8080'"),
        ({"WAC_ENVOY_LISTEN": "127.0.0.1:0"}, "WAC_ENVOY_LISTEN: must be a TCP port (1-65535), got 0"),
        ({"WAC_EDGE_LISTEN": "127.0.0.1"}, "WAC_EDGE_LISTEN: must be host:port, got '127.0.0.1'"),
        ({"WAC_EDGE_HTTP_LISTEN": "127.0.0.1:70000"}, "WAC_EDGE_HTTP_LISTEN: must be a TCP port (1-65535), got 70000"),
        ({"WAC_ENVOY_ADMIN_PORT": "70000"}, "WAC_ENVOY_ADMIN_PORT: must be between 0 and 65535"),
        ({"WAC_ENVOY_LOG_LEVEL": "loud"}, "WAC_ENVOY_LOG_LEVEL: must be one of trace, debug, info, warning"),
        ({"WAC_ENVOY_UPGRADES_PER_ADDRESS": "-1"}, "WAC_ENVOY_UPGRADES_PER_ADDRESS: must not be negative"),
        ({"WAC_CORE_RATE_BURST": "1.5"}, "WAC_CORE_RATE_BURST: expected a whole number, got '1.5'"),
    ],
)
def test_every_section_is_checked_the_same_way(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, env)
    assert message in str(err.value)


def test_edge_listeners_may_take_any_free_port() -> None:
    edge = load_config(None, {"WAC_EDGE_LISTEN": "127.0.0.1:0", "WAC_EDGE_HTTP_LISTEN": "[::1]:0"}).edge
    assert (edge.listen, edge.http_listen) == ("127.0.0.1:0", "[::1]:0")


def test_throttle_settings_at_their_bounds_are_accepted() -> None:
    env = {
        "WAC_IDENTITY_THROTTLE_AFTER": "1",
        "WAC_IDENTITY_THROTTLE_DELAY": "3600",
        "WAC_IDENTITY_LOCK_AFTER": "100000",
        "WAC_IDENTITY_LOCK_SECONDS": "604800",
        "WAC_IDENTITY_THROTTLE_WINDOW": "1",
        "WAC_IDENTITY_USERNAME_MAX_DELAY": "0",
        "WAC_IDENTITY_REFRESH_MIN_INTERVAL": "0",
    }
    identity = load_config(None, env).identity
    assert (identity.throttle_after, identity.throttle_delay, identity.lock_seconds) == (1, 3600.0, 604800)
    assert (identity.username_max_delay, identity.refresh_min_interval) == (0.0, 0.0)


def test_the_cluster_section_defaults_to_embedded_and_takes_a_redis_cluster(tmp_path: Path) -> None:
    assert load_config(None, {}).cluster == ClusterConfig("", "", 5.0, 1.0)
    path = tmp_path / "wac.toml"
    path.write_text(
        '[cluster]\nredis_url = "rediss://:s3cret@redis.example:6380/2"\nnode_id = "core-1.eu_west"\n'
        "lease_seconds = 10\nheartbeat_seconds = 4.9\n"
    )
    cluster = load_config(path, {}).cluster
    assert (cluster.redis_url, cluster.node_id) == ("rediss://:s3cret@redis.example:6380/2", "core-1.eu_west")
    assert (cluster.lease_seconds, cluster.heartbeat_seconds) == (10.0, 4.9)
    assert "s3cret" not in repr(cluster)
    for url in ("redis://127.0.0.1", "unix:///run/redis/redis.sock"):
        assert load_config(None, {"WAC_CLUSTER_REDIS_URL": url}).cluster.redis_url == url


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[cluster]\nredis_url = 'http://:s3cret@h'\n", {}, "[cluster] redis_url: must be a redis://, rediss:// or"),
        ("", {"WAC_CLUSTER_REDIS_URL": "127.0.0.1:6379"}, "WAC_CLUSTER_REDIS_URL: must be a redis://"),
        ("", {"WAC_CLUSTER_REDIS_URL": "redis://"}, "WAC_CLUSTER_REDIS_URL: must name a host"),
        ("", {"WAC_CLUSTER_REDIS_URL": "redis://:s3cret@h:port"}, "WAC_CLUSTER_REDIS_URL: has a port that is not"),
        ("", {"WAC_CLUSTER_REDIS_URL": "unix://"}, "WAC_CLUSTER_REDIS_URL: must name the socket's path"),
        (
            "[cluster]\nnode_id = 'core 1'\n",
            {},
            "[cluster] node_id: must be 1 to 64 of A-Z a-z 0-9 . _ -, got 'core 1'",
        ),
        ("", {"WAC_CLUSTER_NODE_ID": "c:1"}, "WAC_CLUSTER_NODE_ID: must be 1 to 64 of"),
        ("", {"WAC_CLUSTER_NODE_ID": "n" * 65}, "WAC_CLUSTER_NODE_ID: must be 1 to 64 of"),
        ("[cluster]\nlease_seconds = 0.5\n", {}, "[cluster] lease_seconds: must be between 1 and 60, got 0.5"),
        ("[cluster]\nlease_seconds = 61\n", {}, "[cluster] lease_seconds: must be between 1 and 60, got 61"),
        ("[cluster]\nheartbeat_seconds = 0.05\n", {}, "[cluster] heartbeat_seconds: must be between 0.1 and 10"),
        (
            "[cluster]\nheartbeat_seconds = 2.5\n",
            {},
            "[cluster] heartbeat_seconds: must be less than half of lease_seconds (5), got 2.5",
        ),
        (
            "[cluster]\nlease_seconds = 2\n",
            {},
            "[cluster] heartbeat_seconds: must be less than half of lease_seconds (2), got 1",
        ),
        (
            "",
            {"WAC_CLUSTER_LEASE_SECONDS": "18", "WAC_CLUSTER_HEARTBEAT_SECONDS": "9"},
            "[cluster] heartbeat_seconds: must be less than half of lease_seconds (18), got 9",
        ),
    ],
)
def test_cluster_mistakes_are_named_without_the_redis_password(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "wac.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, env)
    assert message in str(err.value)
    assert "s3cret" not in str(err.value)


def test_the_gateway_s_and_janus_s_media_ports_must_not_overlap() -> None:
    overlapping = {"WAC_CONFERENCES_RTP_PORT_MIN": "29000", "WAC_CONFERENCES_RTP_PORT_MAX": "30999"}
    with pytest.raises(ConfigError, match=r"\[conferences\] rtp_port_min-rtp_port_max \(29000-30999\) overlaps"):
        load_config(None, overlapping)
    # Either one off: nothing shares the ports.
    load_config(None, {**overlapping, "WAC_GATEWAY_ENABLED": "false"})
    load_config(None, {**overlapping, "WAC_CONFERENCES_ENABLED": "false"})
