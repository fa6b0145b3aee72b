"""The conferences' counters on the core's /metrics registry, as an
operator reads them: compared before and after (they are the process's)."""

from __future__ import annotations

from core.metrics import REGISTRY
from tests.conferences.support import Conferences

NAMES = (
    ("wac_core_conferences_created_total", {}),
    ("wac_core_conference_joins_total", {}),
    ("wac_core_conference_leaves_total", {"reason": "LEFT"}),
    ("wac_core_conference_leaves_total", {"reason": "KICKED"}),
    ("wac_core_conference_leaves_total", {"reason": "MOVED"}),
    ("wac_core_conference_endings_total", {"reason": "CREATOR"}),
    ("wac_core_conference_endings_total", {"reason": "OPERATOR"}),
)


def sample() -> list[float]:
    return [REGISTRY.get_sample_value(name, labels) or 0.0 for name, labels in NAMES]


async def test_creations_joins_leaves_and_endings_are_counted(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    operator = await conferences.operator("conferences.write")
    before = sample()
    first = await alice.open("bob")
    await bob.join(first.conference_id)
    await bob.join(first.conference_id)  # a refresh: not a new entrance
    await alice.join(first.conference_id)
    await bob.leave(first.conference_id)
    phone = await conferences.member("alice", "phone")
    await phone.join(first.conference_id)  # alice moves to her phone
    await operator.kick(first.conference_id, "alice")
    await alice.end(first.conference_id)
    second = await alice.open("bob")
    await bob.join(second.conference_id)
    await operator.end(second.conference_id)  # bob in the room: no leave counted
    after = sample()
    deltas = {f"{name}{labels}": a - b for (name, labels), a, b in zip(NAMES, after, before, strict=True)}
    assert deltas == {
        "wac_core_conferences_created_total{}": 2,
        "wac_core_conference_joins_total{}": 4,
        "wac_core_conference_leaves_total{'reason': 'LEFT'}": 1,
        "wac_core_conference_leaves_total{'reason': 'KICKED'}": 1,
        "wac_core_conference_leaves_total{'reason': 'MOVED'}": 1,
        "wac_core_conference_endings_total{'reason': 'CREATOR'}": 1,
        "wac_core_conference_endings_total{'reason': 'OPERATOR'}": 1,
    }
