"""Presence aggregation, coalescing and visibility, with a fake clock."""

from __future__ import annotations

import itertools

import pytest

from core.presence.rules import (
    Aggregate,
    Coalescer,
    DeviceStatus,
    Reason,
    Status,
    VisibilityPolicy,
    aggregate,
    may_see,
    presence_changed,
)

NOW = 1_700_000_000.0


def device(
    name: str,
    status: Status,
    note: str = "",
    *,
    updated_at: float = NOW - 100,
    connected: bool = True,
    last_seen: float = 0.0,
) -> DeviceStatus:
    return DeviceStatus(name, status, note, updated_at, connected, last_seen)


# --- Aggregation. ------------------------------------------------------------


def test_no_device_is_offline_never_seen() -> None:
    assert aggregate([], in_call=False, now=NOW) == Aggregate(Status.OFFLINE)


def test_one_available_device() -> None:
    result = aggregate([device("d1", Status.AVAILABLE, "hi")], in_call=False, now=NOW)
    assert result == Aggregate(Status.AVAILABLE, "hi", None, NOW, "d1")


REACHABILITY = [Status.AVAILABLE, Status.AWAY, Status.BUSY, Status.DO_NOT_DISTURB]


@pytest.mark.parametrize(("better", "worse"), list(itertools.combinations(REACHABILITY, 2)))
def test_the_most_reachable_device_wins(better: Status, worse: Status) -> None:
    devices = [device("d1", worse, "worse"), device("d2", better, "better")]
    for order in (devices, devices[::-1]):
        result = aggregate(order, in_call=False, now=NOW)
        assert (result.status, result.note) == (better, "better")


def test_busy_ranks_above_do_not_disturb() -> None:
    devices = [device("d1", Status.DO_NOT_DISTURB), device("d2", Status.BUSY)]
    assert aggregate(devices, in_call=False, now=NOW).status is Status.BUSY


def test_between_equal_statuses_the_most_recently_updated_note_wins() -> None:
    devices = [
        device("d1", Status.AWAY, "old", updated_at=NOW - 50),
        device("d2", Status.AWAY, "new", updated_at=NOW - 10),
        device("d3", Status.AWAY, "older", updated_at=NOW - 90),
    ]
    for order in itertools.permutations(devices):
        result = aggregate(order, in_call=False, now=NOW)
        assert (result.note, result.device) == ("new", "d2")


def test_a_complete_tie_is_settled_by_device_id_whatever_the_order() -> None:
    devices = [device("d2", Status.AWAY, "two"), device("d1", Status.AWAY, "one")]
    for order in (devices, devices[::-1]):
        assert aggregate(order, in_call=False, now=NOW).note == "one"


def test_a_device_published_offline_is_invisible() -> None:
    devices = [
        device("d1", Status.OFFLINE, "secret", updated_at=NOW - 5),
        device("d2", Status.AWAY, "away", updated_at=NOW - 60),
    ]
    result = aggregate(devices, in_call=False, now=NOW)
    assert (result.status, result.note, result.device) == (Status.AWAY, "away", "d2")


def test_only_invisible_devices_look_offline_since_they_went_invisible() -> None:
    devices = [device("d1", Status.OFFLINE, "secret", updated_at=NOW - 30)]
    assert aggregate(devices, in_call=False, now=NOW) == Aggregate(Status.OFFLINE, last_seen=NOW - 30)


def test_an_invisible_device_that_disconnected_earlier_is_seen_until_then() -> None:
    d = device("d1", Status.OFFLINE, updated_at=NOW - 30, connected=False, last_seen=NOW - 200)
    assert d.seen_until(NOW) == NOW - 200
    assert not d.online


def test_disconnected_devices_are_offline_with_their_last_seen_time() -> None:
    devices = [
        device("d1", Status.AVAILABLE, connected=False, last_seen=NOW - 300),
        device("d2", Status.BUSY, connected=False, last_seen=NOW - 60),
    ]
    assert aggregate(devices, in_call=False, now=NOW) == Aggregate(Status.OFFLINE, last_seen=NOW - 60)


def test_last_seen_is_now_while_a_visible_device_is_connected() -> None:
    devices = [
        device("d1", Status.AVAILABLE, connected=False, last_seen=NOW - 300),
        device("d2", Status.DO_NOT_DISTURB, updated_at=NOW - 1000),
    ]
    result = aggregate(devices, in_call=False, now=NOW)
    assert (result.status, result.last_seen) == (Status.DO_NOT_DISTURB, NOW)


@pytest.mark.parametrize("published", [Status.AVAILABLE, Status.AWAY, Status.BUSY])
def test_in_a_call_a_reachable_subscriber_is_busy_in_call(published: Status) -> None:
    result = aggregate([device("d1", published, "note")], in_call=True, now=NOW)
    assert result == Aggregate(Status.BUSY, "note", Reason.IN_CALL, NOW, "d1")


def test_in_a_call_do_not_disturb_stays_as_published() -> None:
    result = aggregate([device("d1", Status.DO_NOT_DISTURB, "zzz")], in_call=True, now=NOW)
    assert (result.status, result.reason, result.note) == (Status.DO_NOT_DISTURB, None, "zzz")


def test_in_a_call_with_every_device_offline_or_invisible_stays_offline() -> None:
    devices = [
        device("d1", Status.OFFLINE, updated_at=NOW - 10),
        device("d2", Status.AVAILABLE, connected=False, last_seen=NOW - 20),
    ]
    result = aggregate(devices, in_call=True, now=NOW)
    assert (result.status, result.reason) == (Status.OFFLINE, None)
    assert aggregate([], in_call=True, now=NOW).reason is None


def test_aggregate_accepts_any_iterable() -> None:
    result = aggregate(iter([device("d1", Status.AWAY)]), in_call=False, now=NOW)
    assert result.status is Status.AWAY


# --- When a change is worth an event. ------------------------------------------


def test_the_first_aggregate_is_a_change() -> None:
    assert presence_changed(None, Aggregate(Status.OFFLINE))


@pytest.mark.parametrize(
    "current",
    [
        Aggregate(Status.AWAY, "note", None, NOW, "d1"),
        Aggregate(Status.AVAILABLE, "other note", None, NOW, "d1"),
        Aggregate(Status.BUSY, "note", Reason.IN_CALL, NOW, "d1"),
    ],
)
def test_status_note_and_reason_changes_are_changes(current: Aggregate) -> None:
    previous = Aggregate(Status.AVAILABLE, "note", None, NOW - 5, "d1")
    assert presence_changed(previous, current)


def test_a_moving_last_seen_or_device_of_an_online_subscriber_is_not_a_change() -> None:
    previous = Aggregate(Status.AVAILABLE, "note", None, NOW - 5, "d1")
    assert not presence_changed(previous, Aggregate(Status.AVAILABLE, "note", None, NOW, "d2"))


def test_a_new_last_seen_of_an_offline_subscriber_is_a_change() -> None:
    previous = Aggregate(Status.OFFLINE, last_seen=NOW - 500)
    assert presence_changed(previous, Aggregate(Status.OFFLINE, last_seen=NOW - 10))
    assert not presence_changed(previous, Aggregate(Status.OFFLINE, last_seen=NOW - 500))


# --- Visibility. ---------------------------------------------------------------


@pytest.mark.parametrize("policy", list(VisibilityPolicy))
def test_a_subscriber_always_sees_itself(policy: VisibilityPolicy) -> None:
    assert may_see("alice", "alice", policy, set())


def test_contacts_policy_shows_a_subject_to_those_its_own_contacts_link() -> None:
    # bob's contacts link alice and carol: bob consents to both seeing him.
    bobs_contacts = {"alice", "carol"}
    assert may_see("alice", "bob", VisibilityPolicy.CONTACTS, bobs_contacts)
    assert may_see("carol", "bob", "contacts", bobs_contacts)
    assert not may_see("dave", "bob", VisibilityPolicy.CONTACTS, bobs_contacts)


def test_linking_someone_from_your_own_contacts_grants_you_nothing() -> None:
    # The attack of issue 14 (item 6): dave's contacts do not link alice, so
    # however alice's own contacts link dave, she does not see him.
    daves_contacts: set[str] = {"erin"}
    assert not may_see("alice", "dave", VisibilityPolicy.CONTACTS, daves_contacts)
    # The rule is one-way: alice linking bob lets bob see alice, not the reverse.
    assert may_see("bob", "alice", "contacts", {"bob"})
    assert not may_see("alice", "bob", "contacts", set())


def test_domain_policy_shows_everybody() -> None:
    assert may_see("alice", "dave", VisibilityPolicy.DOMAIN, set())
    assert may_see("alice", "dave", "domain", frozenset())


def test_an_unknown_policy_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        may_see("alice", "bob", "everyone", set())


# --- Coalescing. ---------------------------------------------------------------


def test_a_burst_emits_the_first_at_once_and_the_last_at_the_deadline() -> None:
    coalescer: Coalescer[str, int] = Coalescer()
    emitted_now = [coalescer.offer("bob", i, NOW + i * 0.01) for i in range(10)]  # 10 in 90 ms
    assert emitted_now == [True] + [False] * 9
    assert coalescer.next_deadline() == NOW + 0.25
    for t in (0.1, 0.15, 0.2, 0.249):
        assert coalescer.due(NOW + t) == []
    assert coalescer.due(NOW + 0.25) == [("bob", 9)]
    assert coalescer.next_deadline() is None
    assert coalescer.due(NOW + 0.3) == []


def test_changes_after_a_flush_wait_a_full_interval_from_it() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    coalescer.offer("bob", "a", NOW)
    coalescer.offer("bob", "b", NOW + 0.1)
    assert coalescer.due(NOW + 0.3) == [("bob", "b")]  # flushed late, at 0.3
    assert coalescer.offer("bob", "c", NOW + 0.4) is False
    assert coalescer.next_deadline() == pytest.approx(NOW + 0.55)
    assert coalescer.due(NOW + 0.55) == [("bob", "c")]


def test_a_change_after_a_quiet_interval_is_emitted_at_once() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    assert coalescer.offer("bob", "a", NOW)
    assert coalescer.offer("bob", "b", NOW + 0.25)
    assert coalescer.offer("bob", "c", NOW + 10)


def test_subjects_are_coalesced_independently() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    assert coalescer.offer("bob", "a", NOW)
    assert coalescer.offer("carol", "a", NOW + 0.05)
    assert not coalescer.offer("carol", "b", NOW + 0.1)
    assert not coalescer.offer("bob", "b", NOW + 0.2)
    assert coalescer.next_deadline() == NOW + 0.25
    assert coalescer.due(NOW + 0.26) == [("bob", "b")]
    assert coalescer.next_deadline() == NOW + 0.3
    assert coalescer.due(NOW + 0.3) == [("carol", "b")]


def test_due_returns_every_ripe_change_oldest_deadline_first() -> None:
    coalescer: Coalescer[str, int] = Coalescer(interval=1.0)
    for i, subject in enumerate(["c", "a", "b"]):
        coalescer.offer(subject, 0, NOW + i * 0.1)
    for subject in ["b", "a", "c"]:
        coalescer.offer(subject, 1, NOW + 0.5)
    assert coalescer.due(NOW + 5) == [("c", 1), ("a", 1), ("b", 1)]


def test_memory_holds_only_recent_and_pending_subjects() -> None:
    coalescer: Coalescer[int, str] = Coalescer()
    for subject in range(1000):
        coalescer.offer(subject, "x", NOW)
    coalescer.offer(7, "y", NOW + 0.1)
    assert len(coalescer) == 1000
    assert coalescer.due(NOW + 0.25) == [(7, "y")]
    assert len(coalescer) == 1  # only 7, emitted just now
    coalescer.due(NOW + 0.5)
    assert len(coalescer) == 0


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Coalescer(interval=0)
