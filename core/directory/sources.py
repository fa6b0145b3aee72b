"""Directory sources: whose entries everyone finds and whose only their owner.

"wac" (the subscribers) and "ldap:<connector>" make the shared directory,
found by every subscriber. A personal source, "google:<username>", holds one
subscriber's own imported contacts, found by that subscriber alone. Pure
functions; the store turns the same rule into SQL.
"""

from __future__ import annotations

PERSONAL_KINDS = ("google",)


def personal_source(kind: str, owner: str) -> str:
    """The source of ``owner``'s entries of a personal kind: "google:alice"."""
    if kind not in PERSONAL_KINDS:
        raise ValueError(f"{kind!r} is not a personal source kind")
    return f"{kind}:{owner}"


def owner_of(source: str) -> str:
    """The subscriber a personal source belongs to; "" for a shared source."""
    kind, sep, owner = source.partition(":")
    return owner if sep and kind in PERSONAL_KINDS else ""


def visible_to(source: str, viewer: str) -> bool:
    """Whether ``viewer`` finds the source's entries."""
    owner = owner_of(source)
    return not owner or owner == viewer
