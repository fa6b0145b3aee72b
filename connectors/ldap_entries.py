"""LDAP entries into directory records, and the change cursor. Pure rules:
no sockets, so they are tested in microseconds.

The cursor follows a change attribute the server maintains: modifyTimestamp
(any LDAP server) or an update sequence number (entryUSN, AD's uSNChanged).
The next incremental search asks for ``attribute >= mark``: ">=" because
timestamps have one-second resolution and more changes may land in the
second already read. The cursor remembers what it saw at the mark so those
repeats are dropped, unless the entry changed again within that second.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.directory.records import DirectoryRecord
from core.phones import InvalidPhoneNumber, normalize_e164
from settings.connectors import AttributeMap

RawAttributes = Mapping[str, Sequence[bytes]]

# Generalized time: YYYYMMDDHHMMSS, optional fraction, then Z or an offset.
_GENERALIZED = re.compile(r"^(\d{14})(?:[.,]\d+)?(Z|[+-]\d{4})?$")


def lower_keys(attributes: RawAttributes) -> dict[str, Sequence[bytes]]:
    """Attribute names are case-insensitive in LDAP; servers return them as
    the schema spells them, configurations as the admin does."""
    return {name.lower(): values for name, values in attributes.items()}


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace").strip()


def _first(attrs: Mapping[str, Sequence[bytes]], names: Iterable[str]) -> str:
    for name in names:
        for value in attrs.get(name.lower(), ()):
            text = _text(value)
            if text:
                return text
    return ""


def _all(attrs: Mapping[str, Sequence[bytes]], names: Iterable[str]) -> list[str]:
    return [t for name in names for v in attrs.get(name.lower(), ()) if (t := _text(v))]


def entry_id(attrs: Mapping[str, Sequence[bytes]], mapping: AttributeMap) -> str:
    """The stable id: entryUUID's text, or a binary GUID (AD's objectGUID)
    in its usual text form."""
    values = attrs.get(mapping.id.lower(), ())
    if not values or not values[0]:
        return ""
    raw = values[0]
    if len(raw) == 16:
        try:
            raw.decode("ascii")
        except UnicodeDecodeError:
            # AD stores the GUID's first three fields little-endian.
            return str(uuid.UUID(bytes_le=raw))
    return _text(raw)


@dataclass(frozen=True, slots=True)
class Mapped:
    """An entry's record, or why it has none."""

    entry_id: str
    record: DirectoryRecord | None
    reason: str = ""


def map_entry(attributes: RawAttributes, mapping: AttributeMap, *, region: str, require_phone: bool) -> Mapped:
    attrs = lower_keys(attributes)
    ident = entry_id(attrs, mapping)
    if not ident:
        return Mapped("", None, f"no {mapping.id}")
    name = _first(attrs, mapping.display)
    if not name:
        name = " ".join(p for p in (_first(attrs, [mapping.given]), _first(attrs, [mapping.family])) if p)
    if not name:
        return Mapped(ident, None, "no usable name")
    phones: list[str] = []
    for raw in _all(attrs, mapping.phones):
        try:
            number = normalize_e164(raw, region)
        except InvalidPhoneNumber:
            continue  # one bad number does not lose the person
        if number not in phones:
            phones.append(number)
    if require_phone and not phones:
        return Mapped(ident, None, "no usable phone number")
    emails: dict[str, str] = {}
    for email in _all(attrs, mapping.email):
        emails.setdefault(email.lower(), email)
    record = DirectoryRecord(
        entry_id=ident,
        display_name=name,
        phone_numbers=tuple(phones),
        emails=tuple(emails.values()),
        department=_first(attrs, mapping.department),
    )
    return Mapped(ident, record)


def attributes_digest(attributes: RawAttributes) -> str:
    """A fingerprint of an entry as read, to tell a repeat from a new change."""
    attrs = lower_keys(attributes)
    h = hashlib.blake2b(digest_size=12)
    for name in sorted(attrs):
        for value in sorted(attrs[name]):
            h.update(name.encode() + b"\0" + value + b"\0")
    return h.hexdigest()


# -- the change cursor ---------------------------------------------------------


def change_mark(value: bytes, attribute: str) -> str | int | None:
    """The comparable mark of a change attribute value, or None if unreadable:
    an integer USN, or a generalized time cut to whole seconds in UTC."""
    text = _text(value)
    if attribute.lower() != "modifytimestamp":
        return int(text) if text.isdigit() else None
    match = _GENERALIZED.match(text)
    if match is None:
        return None
    if match.group(2) not in (None, "Z"):
        return None  # servers write UTC; a zone offset here is not worth guessing at
    return match.group(1) + "Z"


@dataclass(slots=True)
class ChangeCursor:
    """The latest mark seen and a digest of each entry seen at that mark."""

    attribute: str
    mark: str | int | None = None
    seen: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, data: Mapping[str, Any] | None, attribute: str) -> ChangeCursor | None:
        """The stored cursor, or None if there is none or it follows another
        attribute (the configuration changed: start with a full run)."""
        if not data or data.get("attribute") != attribute or data.get("mark") is None:
            return None
        return cls(attribute, data["mark"], dict(data.get("seen") or {}))

    def dump(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "mark": self.mark, "seen": self.seen}

    def search_filter(self, base_filter: str) -> str:
        """The base filter narrowed to entries changed at or after the mark."""
        return f"(&{base_filter}({self.attribute}>={self.mark}))"

    def is_repeat(self, ident: str, mark: str | int | None, digest: str) -> bool:
        """Whether an entry read again is exactly what an earlier run saw."""
        return mark == self.mark and self.seen.get(ident) == digest

    def observe(self, ident: str, mark: str | int | None, digest: str) -> None:
        """Take an entry read by this run into the next cursor."""
        if mark is None:
            return
        if self.mark is None or _later(mark, self.mark):
            self.mark, self.seen = mark, {ident: digest}
        elif mark == self.mark:
            self.seen[ident] = digest


def _later(a: str | int, b: str | int) -> bool:
    # Both are ints or both are "YYYYMMDDHHMMSSZ" strings, which sort as times.
    return a > b  # type: ignore[operator]
