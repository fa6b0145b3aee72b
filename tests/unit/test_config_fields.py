"""The one loader of configuration sections (settings/fields.py), on a made-up section."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from settings.fields import ConfigError, Invalid, duration, key, load_section


def _even(value: int) -> int:
    if value % 2:
        raise Invalid(f"must be even, got {value}")
    return value


@dataclass(frozen=True)
class Inner:
    names: tuple[str, ...] = key(("a",), non_empty=True)


@dataclass(frozen=True)
class Sample:
    name: str
    host: str = key()
    count: int = key(2, between=(0, 10), check=_even)
    size: int = key(64, at_least=16)
    rate: float = key(1.0, positive=True)
    slack: float = 0.5
    every: float | None = key(60.0, duration=True, never=True)
    mode: str = key("fast", choices=("fast", "slow"))
    on: bool = False
    token: str = key("", secret_file=True, secret=True)
    inner: Inner = Inner()

    def __post_init__(self) -> None:
        if self.on and not self.token:
            raise Invalid("needs token", "on")


def load(table: dict[str, object], env: dict[str, str] | None = None) -> Sample:
    return load_section(Sample, table, "sample.one", env=env, env_prefix="sample", fixed={"name": "one"})


def test_values_are_coerced_from_toml_and_the_environment() -> None:
    sample = load(
        {"host": "h", "every": "15m", "inner": {"names": ["x", "y"]}},
        {"WAC_SAMPLE_COUNT": "4", "WAC_SAMPLE_ON": "yes", "WAC_SAMPLE_TOKEN": "t"},
    )
    assert (sample.name, sample.host, sample.count, sample.on, sample.token) == ("one", "h", 4, True, "t")
    assert sample.every == 900.0 and sample.inner.names == ("x", "y")
    assert "'t'" not in repr(sample)
    assert load({"host": "h", "every": "never"}).every is None


def test_a_secret_comes_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    assert load({"host": "h", "token_file": str(secret)}).token == "s3cret"


@pytest.mark.parametrize(
    ("table", "env", "message"),
    [
        ({}, {}, "[sample.one] host: is required"),
        ({"host": "h", "hots": 1}, {}, "[sample.one] unknown key(s): hots"),
        ({"host": "h", "count": 12}, {}, "[sample.one] count: must be between 0 and 10, got 12"),
        ({"host": "h", "count": 3}, {}, "[sample.one] count: must be even, got 3"),
        ({"host": "h"}, {"WAC_SAMPLE_COUNT": "2.5"}, "WAC_SAMPLE_COUNT: expected a whole number, got '2.5'"),
        ({"host": "h", "count": True}, {}, "[sample.one] count: expected a number, got True"),
        ({"host": "h", "size": 8}, {}, "[sample.one] size: must be at least 16, got 8"),
        ({"host": "h", "rate": 0}, {}, "[sample.one] rate: must be more than zero, got 0"),
        ({"host": "h", "slack": -1}, {}, "[sample.one] slack: must not be negative, got -1"),
        ({"host": "h", "every": "soon"}, {}, '[sample.one] every: must be a duration like 900, "15m"'),
        ({"host": "h", "mode": "slowest"}, {}, "[sample.one] mode: must be one of fast, slow, got 'slowest'"),
        ({"host": "h", "on": "maybe"}, {}, "[sample.one] on: expected true or false, got 'maybe'"),
        ({"host": "h", "on": True}, {}, "[sample.one] on: needs token"),
        ({"host": "h", "token": "t", "token_file": "f"}, {}, "[sample.one] token: give token or token_file, not both"),
        ({"host": "h", "inner": {"names": []}}, {}, "[sample.one.inner] names: must be a non-empty list of strings"),
        ({"host": 5}, {}, "[sample.one] host: expected a string, got 5"),
    ],
)
def test_mistakes_are_named_where_they_are(table: dict[str, object], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(table, env)
    assert str(caught.value).startswith(message)


def test_durations() -> None:
    assert [duration(v) for v in (90, "90s", "500ms", "1.5h", "1d")] == [90.0, 90.0, 0.5, 5400.0, 86400.0]
    with pytest.raises(Invalid):
        duration(-1)
    with pytest.raises(Invalid):
        duration("never")
