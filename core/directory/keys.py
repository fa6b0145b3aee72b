"""Search keys: what an entry can be found by, and what a query looks for.

Pure functions. A key is a folded string; a query matches an entry when one
of the query's keys is a prefix of one of the entry's keys, and matches it
exactly when the two are equal.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable

from core.phones import query_digits, search_keys

MAX_KEY_LENGTH = 255
# The first one to PREFIX_LENGTH characters of every name, word and e-mail
# key are also stored on their own, in display-name order, so that a short
# query with thousands of matches reads its page off an index instead of
# sorting them all. Phone keys are left out: their digits have nothing to do
# with the name order, so their matches are spread evenly along it and a walk
# in that order finds a page soon enough, with no rows to store.
PREFIX_LENGTH = 3
# What a phone key ("+34600111222", "600111222") can start with.
_PHONE_START = re.compile(r"\+?[0-9]*")

_SPACES = re.compile(r"\s+")
# Word boundaries inside a name: "Mary-Jane O'Neil" is found by "jane" and "neil".
_WORD_BREAKS = re.compile("[\\s\\-'\u2019.,()/]+")


def fold(text: str) -> str:
    """Lower case without accents and with single spaces: "José  Núñez" → "jose nunez"."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", bare.casefold()).strip()


def entry_keys(display_name: str, emails: Iterable[str], phone_numbers: Iterable[str]) -> dict[str, str]:
    """Each key of an entry with its kind (name, word, email, phone)."""
    keys: dict[str, str] = {}

    def add(key: str, kind: str) -> None:
        key = key[:MAX_KEY_LENGTH]
        if key and key not in keys:
            keys[key] = kind

    name = fold(display_name)
    add(name, "name")
    for word in _WORD_BREAKS.split(name):
        add(word, "word")
    for email in emails:
        # Folded like the query is, or "josé@…" would not be found by "jose@".
        add(fold(email), "email")
    for number in phone_numbers:
        for key in search_keys(number):
            add(key, "phone")
    return keys


def key_prefixes(keys: dict[str, str]) -> set[str]:
    """The distinct first 1 to ``PREFIX_LENGTH`` characters of the keys
    (from ``entry_keys``) other than phone numbers."""
    return {
        key[:length]
        for key, kind in keys.items()
        if kind != "phone"
        for length in range(1, min(len(key), PREFIX_LENGTH) + 1)
    }


def prefixes_cover(query_key: str) -> bool:
    """Whether every key starting with ``query_key`` has its prefixes stored
    (``key_prefixes``): true unless it could be the start of a phone key."""
    return not _PHONE_START.fullmatch(query_key)


def query_keys(query: str, region: str) -> tuple[str, ...]:
    """The keys a query looks for: its folded text and, if it looks like a
    phone number, the digit prefixes ``core.phones`` derives from it."""
    keys = [fold(query)[:MAX_KEY_LENGTH], *query_digits(query, region)]
    return tuple(dict.fromkeys(k for k in keys if k))


def successor(prefix: str) -> str:
    """The least string greater than every string starting with ``prefix``,
    so that ``prefix <= key < successor(prefix)`` is a prefix test an index
    can answer as a range scan (LIKE cannot on SQLite by default)."""
    for i in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[i])
        if code < sys.maxunicode:
            # Surrogates cannot be stored as UTF-8; the next storable one is U+E000.
            following = 0xE000 if 0xD7FF <= code < 0xE000 else code + 1
            return prefix[:i] + chr(following)
    # Only U+10FFFF characters: no string sorts above, so nothing is excluded.
    return prefix + chr(sys.maxunicode)
