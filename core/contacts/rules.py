"""Contact rules as pure functions: validation, normalisation, bounds.

Nothing here does I/O or reads the clock. Each check raises ``Invalid``
(INVALID_ARGUMENT) naming the field at fault in the request
(``contact.phone_numbers[1]``).
Whether a linked subscriber exists is the handler's question: it needs the
database.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from core.checks import max_length, require
from core.failures import Invalid
from core.identity.rules import check_email
from core.phones import InvalidPhoneNumber, normalize_e164

MAX_DISPLAY_NAME: Final = 128
MAX_PHONE_NUMBERS: Final = 20
MAX_EMAILS: Final = 20
MAX_NOTES: Final = 1024
MAX_SUBSCRIBER: Final = 64
MAX_CONTACT_ID: Final = 64
# Per subscriber; beyond it CreateContact fails with RESOURCE_EXHAUSTED.
MAX_CONTACTS: Final = 5000

# The fields a client sets, in the order an empty update mask checks them.
EDITABLE: Final = ("display_name", "phone_numbers", "emails", "subscriber", "favorite", "notes")


@dataclass(frozen=True, slots=True)
class ContactFields:
    """A contact's editable fields, validated and normalised."""

    display_name: str
    phone_numbers: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    subscriber: str = ""
    favorite: bool = False
    notes: str = ""


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def display_name(field: str, value: str) -> str:
    """1 to 128 characters once trimmed, no control characters."""
    name = value.strip()
    if not name:
        raise Invalid(field, "is required")
    max_length(field, name, MAX_DISPLAY_NAME)
    if _has_control(name):
        raise Invalid(field, "must not contain control characters")
    return name


def phone_numbers(field: str, values: Iterable[str], region: str) -> tuple[str, ...]:
    """Each number in E.164 form, duplicates dropped, order kept."""
    numbers = list(values)
    if len(numbers) > MAX_PHONE_NUMBERS:
        raise Invalid(field, f"has {len(numbers)} numbers; at most {MAX_PHONE_NUMBERS} are allowed")
    out: dict[str, None] = {}
    for index, raw in enumerate(numbers):
        try:
            out[normalize_e164(raw, region)] = None
        except InvalidPhoneNumber as exc:
            raise Invalid(f"{field}[{index}]", str(exc)) from None
    return tuple(out)


def emails(field: str, values: Iterable[str]) -> tuple[str, ...]:
    """Each address trimmed and checked; duplicates (ignoring case) dropped."""
    addresses = list(values)
    if len(addresses) > MAX_EMAILS:
        raise Invalid(field, f"has {len(addresses)} addresses; at most {MAX_EMAILS} are allowed")
    out: dict[str, str] = {}
    for index, raw in enumerate(addresses):
        address = raw.strip()
        if not address:
            raise Invalid(f"{field}[{index}]", "is empty")
        check_email(f"{field}[{index}]", address)
        out.setdefault(address.lower(), address)
    return tuple(out.values())


def subscriber(field: str, value: str) -> str:
    """A username's shape only; whether it exists is checked by the handler."""
    username = value.strip()
    max_length(field, username, MAX_SUBSCRIBER)
    return username


def notes(field: str, value: str) -> str:
    max_length(field, value, MAX_NOTES)
    return value


def validate(prefix: str, given: Mapping[str, Any], paths: Iterable[str], region: str) -> dict[str, Any]:
    """The normalised values of the ``paths`` of ``given`` (raw field values
    by name), each checked as ``<prefix>.<path>``."""
    out: dict[str, Any] = {}
    for path in paths:
        field = f"{prefix}.{path}"
        value = given[path]
        if path == "display_name":
            out[path] = display_name(field, value)
        elif path == "phone_numbers":
            out[path] = phone_numbers(field, value, region)
        elif path == "emails":
            out[path] = emails(field, value)
        elif path == "subscriber":
            out[path] = subscriber(field, value)
        elif path == "favorite":
            out[path] = bool(value)
        elif path == "notes":
            out[path] = notes(field, value)
        else:
            raise Invalid("update_mask", f"field {path!r} cannot be set; settable: {', '.join(EDITABLE)}")
    return out


def update_paths(mask: Iterable[str], present: Iterable[str]) -> list[str]:
    """The fields an update changes: the mask's, or with an empty mask
    every field that is set (AIP-134). INVALID_ARGUMENT for a path that is
    not editable."""
    paths = list(dict.fromkeys(mask)) or [p for p in EDITABLE if p in set(present)]
    for path in paths:
        if path not in EDITABLE:
            raise Invalid("update_mask", f"field {path!r} cannot be updated; updatable: {', '.join(EDITABLE)}")
    return paths


def contact_id(field: str, value: str) -> str:
    require(field, value)
    max_length(field, value, MAX_CONTACT_ID)
    return value
