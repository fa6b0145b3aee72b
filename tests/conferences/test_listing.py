"""ListConferences: a subscriber's own conferences, active first; an
operator's view of every active one, with its participants."""

from __future__ import annotations

import grpc

from tests.calls.support import fails
from tests.conferences.support import Conference, Conferences


async def test_a_subscriber_lists_its_conferences_active_first(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    carol = await conferences.member("carol")
    made = []
    for n in range(4):
        made.append(await alice.open("bob", title=f"t{n}"))
        await conferences.advance(1)
    theirs = await carol.open("bob", title="carol's")
    await alice.end(made[1].conference_id)
    await alice.end(made[3].conference_id)

    expected = [theirs, made[2], made[0], made[3], made[1]]
    seen: list[str] = []
    token = ""
    while True:
        page = await bob.mine(page_size=2, page_token=token)
        seen += [c.conference_id for c in page.conferences]
        token = page.next_page_token
        if not token:
            break
    assert seen == [c.conference_id for c in expected]
    listed = (await bob.mine()).conferences
    assert [c.state for c in listed] == [Conference.ACTIVE] * 3 + [Conference.ENDED] * 2
    assert [c.conference_id for c in (await alice.mine()).conferences] == [
        made[2].conference_id,
        made[0].conference_id,
        made[3].conference_id,
        made[1].conference_id,
    ]
    assert [c.title for c in (await carol.mine()).conferences] == ["carol's"]
    await fails(grpc.StatusCode.INVALID_ARGUMENT, bob.mine(page_token="garbage"), "page_token")
    await fails(grpc.StatusCode.INVALID_ARGUMENT, bob.mine(page_size=-1), "page_size")


async def test_an_operator_lists_every_active_conference_with_participants(conferences: Conferences) -> None:
    alice, bob = await conferences.member("alice"), await conferences.member("bob")
    first = await alice.open("bob", title="first")
    await conferences.advance(1)
    second = await bob.open("alice", title="second")
    await conferences.advance(1)
    gone = await alice.open(title="gone")
    await alice.end(gone.conference_id)
    joined = await bob.join(first.conference_id)
    await conferences.advance(1)
    await alice.join(first.conference_id)

    operator = await conferences.operator("conferences.read")
    listed = (await operator.list()).conferences
    assert [c.conference_id for c in listed] == [second.conference_id, first.conference_id]
    assert [p.username for p in listed[1].participants] == ["bob", "alice"]
    assert listed[1].participants[0].feed_id == joined.feed_id
    page = await operator.list(page_size=1)
    assert [c.conference_id for c in page.conferences] == [second.conference_id]
    rest = await operator.list(page_size=1, page_token=page.next_page_token)
    assert [c.conference_id for c in rest.conferences] == [first.conference_id] and not rest.next_page_token
    # A subscriber's page token is not an operator's.
    mine = await alice.mine(page_size=1)
    await fails(grpc.StatusCode.INVALID_ARGUMENT, operator.list(page_token=mine.next_page_token), "page_token")

    writer = await conferences.operator("calls.read")
    await fails(grpc.StatusCode.PERMISSION_DENIED, writer.list(), "conferences.read")
