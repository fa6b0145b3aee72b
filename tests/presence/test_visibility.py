"""The visibility policy in bulk, against an in-memory link index."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

import pytest

from core.presence.visibility import Visibility


class Links:
    """owner -> subscribers its contacts link."""

    def __init__(self, links: dict[str, set[str]]) -> None:
        self.links = links
        self.queries = 0

    async def linked_by(self, owner: str) -> set[str]:
        self.queries += 1
        return set(self.links.get(owner, set()))

    async def owners_among(self, subject: str, owners: Collection[str]) -> set[str]:
        self.queries += 1
        return {owner for owner in owners if subject in self.links.get(owner, set())}


LINKS = {"bob": {"alice", "carol"}, "carol": {"alice"}, "dave": set()}


def online_set(names: Collection[str]) -> Callable[[], Awaitable[Collection[str]]]:
    """The online subscribers as the handler gives them: asked for each time."""

    async def online() -> Collection[str]:
        return names

    return online


async def test_contacts_policy_follows_the_subjects_links_one_way() -> None:
    links = Links(LINKS)
    visibility = Visibility("contacts", links, online_set({"zed"}))
    # bob links alice: alice may see bob (bob's consent), bob may not see alice.
    assert await visibility.may_see("alice", "bob")
    assert not await visibility.may_see("bob", "alice"), "linking alice grants bob nothing"
    assert await visibility.may_see("dave", "dave"), "everyone sees themselves"
    assert await visibility.visible_among("alice", ["bob", "carol", "alice", "dave", "nobody"]) == {
        "alice",
        "bob",
        "carol",
    }
    assert await visibility.visible_among("bob", ["alice", "carol", "dave"]) == set()
    # Watchers of a subject: those its own contacts link.
    assert await visibility.watchers_of("bob") == {"bob", "alice", "carol"}
    assert await visibility.watchers_of("alice") == {"alice"}, "being linked by others gives no watchers"
    assert await visibility.watchers_of("dave") == {"dave"}


async def test_contacts_policy_asks_nothing_for_oneself() -> None:
    links = Links(LINKS)
    visibility = Visibility("contacts", links, online_set(set()))
    assert await visibility.visible_among("bob", ["bob"]) == {"bob"}
    assert links.queries == 0


async def test_domain_policy_shows_everyone_and_tells_the_online() -> None:
    links = Links(LINKS)
    online = {"bob", "erin"}
    visibility = Visibility("domain", links, online_set(online))
    assert await visibility.may_see("alice", "bob")
    assert await visibility.visible_among("dave", ["alice", "erin"]) == {"alice", "erin"}
    assert await visibility.watchers_of("alice") == {"alice", "bob", "erin"}
    assert online == {"bob", "erin"}, "the online set is not changed"
    assert links.queries == 0


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        Visibility("friends", Links({}), online_set(set()))


async def test_an_embedded_core_remembers_watchers_until_the_links_change() -> None:
    links = Links({"bob": {"alice"}})
    visibility = Visibility("contacts", links, online_set(set()), remember=True)
    assert await visibility.watchers_of("bob") == {"bob", "alice"}
    watchers = await visibility.watchers_of("bob")
    watchers.add("mallory")  # a caller's copy: the remembered set stays
    assert await visibility.watchers_of("bob") == {"bob", "alice"}
    assert links.queries == 1, "read once"
    links.links["bob"].add("carol")
    visibility.forget("bob")  # what the contacts service tells presence
    assert await visibility.watchers_of("bob") == {"bob", "alice", "carol"}
    assert links.queries == 2


async def test_a_cluster_core_reads_watchers_every_time() -> None:
    links = Links({"bob": {"alice"}})
    visibility = Visibility("contacts", links, online_set(set()))
    await visibility.watchers_of("bob")
    links.links["bob"].add("carol")  # changed on another core: no forget here
    assert await visibility.watchers_of("bob") == {"bob", "alice", "carol"}
