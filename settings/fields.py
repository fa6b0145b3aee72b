"""The one way a configuration section is read: declared rules per key, one loader.

A section is a frozen dataclass whose fields are its keys. Each field's type
says how a value is coerced (bool, int, float, str, Path, tuple of strings, a
nested section); its ``key(...)`` declaration adds the rest: bounds, a
duration syntax, choices, a check. ``load_section`` applies them to a TOML
table (and to ``WAC_*`` environment overrides where the section has them) and
names what it refuses as ``[section] key: reason`` (or ``WAC_SECTION_KEY:
reason``). Rules about several keys at once live in the section's
``__post_init__``, raising ``Invalid`` with the key at fault: they then hold
however the section is built.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

DAY = 86_400.0


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range."""


class Invalid(ValueError):
    """A value breaks a rule; the loader names where it came from."""

    def __init__(self, reason: str, key: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """What a key accepts beyond its type (see ``key``)."""

    between: tuple[float, float] | None = None
    at_least: float | None = None
    positive: bool = False
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], Any] | None = None
    duration: bool = False
    never: bool = False
    non_empty: bool = False
    secret_file: bool = False


T = TypeVar("T")
_RULE = "wac.rule"
_MISSING: Any = dataclasses.MISSING


def key(
    default: Any = _MISSING,
    *,
    between: tuple[float, float] | None = None,
    at_least: float | None = None,
    positive: bool = False,
    choices: tuple[str, ...] | None = None,
    check: Callable[[Any], Any] | None = None,
    duration: bool = False,
    never: bool = False,
    non_empty: bool = False,
    secret_file: bool = False,
    secret: bool = False,
) -> Any:
    """A configuration key: its default (none: the key is required) and its rules.

    - ``between``: inclusive bounds of a number; ``at_least``: its lower
      bound alone; ``positive``: more than zero. Without any of them,
      numbers only refuse negatives.
    - ``duration``: seconds as a number or as "500ms", "90s", "15m", "6h",
      "1d"; ``never`` also accepts "never" (None).
    - ``choices``: the strings accepted.
    - ``check``: a function of the coerced value returning it (normalised) or
      raising ``Invalid`` with the reason.
    - ``non_empty``: a list that must hold at least one item.
    - ``secret_file``: the value may instead be read from the file named by
      ``<key>_file`` (better for secrets); ``secret`` keeps it out of repr.
    """
    rule = Rule(between, at_least, positive, choices, check, duration, never, non_empty, secret_file)
    return dataclasses.field(default=default, metadata={_RULE: rule}, repr=not secret)


def _rule(f: dataclasses.Field[Any]) -> Rule:
    rule = f.metadata.get(_RULE)
    return rule if isinstance(rule, Rule) else Rule()


def load_section(
    cls: type[T],
    table: Any,
    section: str,
    *,
    env: Mapping[str, str] | None = None,
    env_prefix: str = "",
    fixed: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from a TOML table, every key coerced and checked.

    ``section`` names the table in messages ("core", "connectors.corp").
    With ``env``, ``WAC_<env_prefix>_<KEY>`` overrides the table's value.
    ``fixed`` gives fields that are not keys (a connector's name).
    """
    where = f"[{section}]"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    fixed = fixed or {}
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in fixed]  # type: ignore[arg-type]
    known = {f.name for f in fields} | {f"{f.name}_file" for f in fields if _rule(f).secret_file}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{where} unknown key(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = dict(fixed)
    for f in fields:
        rule = _rule(f)
        env_name = f"WAC_{env_prefix}_{f.name}".upper()
        given: Any
        if env is not None and env_name in env:
            named, given = env_name, env[env_name]
        else:
            named = f"{where} {f.name}"
            given = _secret(table, f.name, named) if rule.secret_file else table.get(f.name)
        if given is not None:
            values[f.name] = _value(given, hints[f.name], rule, named, f"{section}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            hint = f" (or {f.name}_file)" if rule.secret_file else ""
            raise ConfigError(f"{named}: is required{hint}")
    try:
        return cls(**values)
    except Invalid as exc:
        raise ConfigError(f"{where} {exc.key}: {exc.reason}" if exc.key else f"{where} {exc.reason}") from None


def _secret(table: Mapping[str, Any], name: str, named: str) -> Any:
    """The inline value, or the stripped text of the file ``<name>_file`` names."""
    inline, path = table.get(name), table.get(f"{name}_file")
    if inline is not None and path is not None:
        raise ConfigError(f"{named}: give {name} or {name}_file, not both")
    if path is None:
        return inline
    if not isinstance(path, str):
        raise ConfigError(f"{named}_file: expected a path, got {path!r}")
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{named}_file: cannot read {path}: {exc.strerror}") from None


def _value(value: Any, kind: Any, rule: Rule, named: str, section_key: str) -> Any:
    try:
        return _checked(value, kind, rule, section_key)
    except Invalid as exc:
        raise ConfigError(f"{named}: {exc.reason}") from None


def _checked(value: Any, kind: Any, rule: Rule, section_key: str) -> Any:
    if dataclasses.is_dataclass(kind):
        # A nested table ([connectors.corp.attributes]) is a section of its own.
        return load_section(typing.cast(type, kind), value, section_key)
    coerced = duration(value, never=rule.never) if rule.duration else _coerce(value, kind)
    if isinstance(coerced, int | float) and not isinstance(coerced, bool):
        _bounded(coerced, rule, value)
    if rule.choices is not None and coerced not in rule.choices:
        raise Invalid(f"must be one of {', '.join(rule.choices)}, got {value!r}")
    if rule.non_empty and not coerced:
        raise Invalid(f"must be a non-empty list of strings, got {value!r}")
    if rule.check is not None:
        coerced = rule.check(coerced)
    return coerced


def _bounded(number: float, rule: Rule, value: Any) -> None:
    # Written as "not inside" so that NaN, which compares false, is refused too.
    if rule.between is not None:
        low, high = rule.between
        if not low <= number <= high:
            raise Invalid(f"must be between {low:g} and {high:g}, got {value!r}")
    elif rule.at_least is not None:
        if not number >= rule.at_least:
            raise Invalid(f"must be at least {rule.at_least:g}, got {value!r}")
    elif rule.positive:
        if not number > 0:
            raise Invalid(f"must be more than zero, got {value!r}")
    elif number < 0:
        raise Invalid(f"must not be negative, got {value!r}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(value: Any, kind: Any) -> Any:
    """A TOML or environment value as the field's declared type."""
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise Invalid(f"expected true or false, got {value!r}")
    if kind is int:
        return _integer(value)
    if kind is float:
        if isinstance(value, bool):
            raise Invalid(f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise Invalid(f"expected a number, got {value!r}") from None
    if kind in (str, bytes):
        # A bytes key is written as text (base64); its check decodes it.
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {value!r}")
        return value
    if kind is Path:
        if not isinstance(value, str):
            raise Invalid(f"expected a path, got {value!r}")
        return Path(value)
    if typing.get_origin(kind) is tuple:
        # The environment has no lists: there, and in a string, commas separate.
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
            raise Invalid(f"expected a list of strings, got {value!r}")
        return tuple(item.strip() for item in items if item.strip())
    raise Invalid(f"unsupported type {kind!r}")  # pragma: no cover


def _integer(value: Any) -> int:
    """An int, a float without a fraction (TOML's 1e4), or the text of either."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, str | float):
        raise Invalid(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise Invalid(f"expected a number, got {value!r}") from None
    if not number.is_integer():
        raise Invalid(f"expected a whole number, got {value!r}")
    return int(number)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, None: 1.0}


def duration(value: Any, *, never: bool = False) -> float | None:
    """Seconds, as a number or "500ms", "90s", "15m", "6h", "1d"; "never" (None) where allowed."""
    if never and value == "never":
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None or not seconds >= 0:
        hint = ', or "never"' if never else ""
        raise Invalid(f'must be a duration like 900, "15m", "6h" or "1d"{hint}, got {value!r}')
    return seconds
