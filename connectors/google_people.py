"""People API persons into directory records. Pure rules.

A person (https://developers.google.com/people/api/rest/v1/people) has
lists of names, phoneNumbers and emailAddresses, each item with metadata
saying whether it is the primary one. An incremental listing also returns
deleted persons, with ``metadata.deleted`` true and little else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.directory.records import DirectoryRecord
from core.phones import InvalidPhoneNumber, normalize_e164

PERSON_FIELDS = "names,emailAddresses,phoneNumbers"


@dataclass(frozen=True, slots=True)
class MappedPerson:
    entry_id: str  # the resourceName, "people/c123..."
    record: DirectoryRecord | None
    deleted: bool = False
    reason: str = ""


def _primary_first(items: Any) -> list[Mapping[str, Any]]:
    if not isinstance(items, Sequence):
        return []
    usable = [i for i in items if isinstance(i, Mapping)]
    return sorted(usable, key=lambda i: not (i.get("metadata") or {}).get("primary", False))


def map_person(person: Mapping[str, Any], *, region: str, require_phone: bool) -> MappedPerson:
    ident = str(person.get("resourceName") or "")
    if (person.get("metadata") or {}).get("deleted"):
        return MappedPerson(ident, None, deleted=True)
    if not ident:
        return MappedPerson("", None, reason="no resourceName")
    name = ""
    for item in _primary_first(person.get("names")):
        given, family = item.get("givenName", ""), item.get("familyName", "")
        name = (item.get("displayName") or " ".join(p for p in (given, family) if p)).strip()
        if name:
            break
    if not name:
        return MappedPerson(ident, None, reason="no usable name")
    phones: list[str] = []
    for item in _primary_first(person.get("phoneNumbers")):
        # canonicalForm is Google's own E.164 reading, present when it could
        # tell the country; otherwise read the number as the subscriber wrote it.
        raw = item.get("canonicalForm") or item.get("value") or ""
        try:
            number = normalize_e164(str(raw), region)
        except InvalidPhoneNumber:
            continue
        if number not in phones:
            phones.append(number)
    if require_phone and not phones:
        return MappedPerson(ident, None, reason="no usable phone number")
    emails: dict[str, str] = {}
    for item in _primary_first(person.get("emailAddresses")):
        value = str(item.get("value") or "").strip()
        if value:
            emails.setdefault(value.lower(), value)
    record = DirectoryRecord(
        entry_id=ident,
        display_name=name,
        phone_numbers=tuple(phones),
        emails=tuple(emails.values()),
    )
    return MappedPerson(ident, record)
