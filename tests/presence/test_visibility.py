"""The visibility policy in bulk, against an in-memory link index."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from core.presence.visibility import Visibility


class Links:
    """owner -> subscribers its contacts link."""

    def __init__(self, links: dict[str, set[str]]) -> None:
        self.links = links
        self.queries = 0

    async def owners_linking(self, subject: str) -> set[str]:
        self.queries += 1
        return {owner for owner, linked in self.links.items() if subject in linked}

    async def linked_among(self, owner: str, subjects: Collection[str]) -> set[str]:
        self.queries += 1
        return self.links.get(owner, set()) & set(subjects)


LINKS = {"bob": {"alice", "carol"}, "carol": {"alice"}, "dave": set()}


async def test_contacts_policy_follows_links_one_way() -> None:
    links = Links(LINKS)
    visibility = Visibility("contacts", links, lambda: {"zed"})
    assert await visibility.may_see("bob", "alice")
    assert not await visibility.may_see("alice", "bob"), "links are one-way"
    assert await visibility.may_see("dave", "dave"), "everyone sees themselves"
    assert await visibility.visible_among("bob", ["alice", "bob", "dave", "nobody"]) == {"alice", "bob"}
    assert await visibility.watchers_of("alice") == {"alice", "bob", "carol"}
    assert await visibility.watchers_of("dave") == {"dave"}


async def test_contacts_policy_asks_nothing_for_oneself() -> None:
    links = Links(LINKS)
    visibility = Visibility("contacts", links, set)
    assert await visibility.visible_among("bob", ["bob"]) == {"bob"}
    assert links.queries == 0


async def test_domain_policy_shows_everyone_and_tells_the_online() -> None:
    links = Links(LINKS)
    online = {"bob", "erin"}
    visibility = Visibility("domain", links, lambda: online)
    assert await visibility.may_see("alice", "bob")
    assert await visibility.visible_among("dave", ["alice", "erin"]) == {"alice", "erin"}
    assert await visibility.watchers_of("alice") == {"alice", "bob", "erin"}
    assert online == {"bob", "erin"}, "the online set is not changed"
    assert links.queries == 0


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        Visibility("friends", Links({}), set)
