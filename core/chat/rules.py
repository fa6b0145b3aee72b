"""Chat's rules: who may do what to a conversation, and what each input
makes of it. Pure: a conversation in, the conversation after the input (or
a refusal) out; the handler stores it and tells the members.

- Only members read a conversation or send to it. Anyone else is refused
  with the same message as an unknown conversation id (``NOT_MEMBER``), so
  that its existence is not leaked; every rule checks membership first.
- A one-to-one conversation is made by the first message between two
  subscribers and has them alone as members, for good. A system
  conversation holds the operator's messages to one subscriber, who reads
  it and cannot send to it.
- A group's owner (its creator) renames it and adds or removes members; a
  member removes itself (leaves). An owner who leaves hands the group to
  the member who joined after it.
- Text is kept as sent: it must be non-empty and at most the configured
  bytes of UTF-8, and is never interpreted.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from core import checks, failures
from core.phones import InvalidPhoneNumber, normalize_e164

NOT_MEMBER = "not a member of this conversation"
MAX_TITLE = 200
MAX_USERNAME = 64
MAX_ID = 64
MAX_REQUEST_ID = 64
# Members of one group, its owner among them: one message to a group is a
# row per member to notify, and the figure is 500.
MAX_GROUP_MEMBERS = 500


class Kind(enum.Enum):
    """The kind of a conversation; the names are the contract's ``Type``."""

    DIRECT = "DIRECT"
    GROUP = "GROUP"
    SYSTEM = "SYSTEM"


@dataclass(frozen=True, slots=True)
class Conversation:
    conversation_id: str
    kind: Kind
    # In the order they became members.
    members: tuple[str, ...]
    create_time: float
    update_time: float
    # The seq of its last message; 0 before the first.
    last_seq: int = 0
    # A group's.
    title: str = ""
    owner: str = ""

    def is_member(self, username: str) -> bool:
        return username in self.members

    def peer(self, username: str) -> str:
        """Of a one-to-one conversation, the member that is not ``username``."""
        if self.kind is not Kind.DIRECT:
            return ""
        return next((m for m in self.members if m != username), "")


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    conversation_id: str
    seq: int
    # "" for a system message.
    sender: str
    text: str
    create_time: float
    system: bool
    # Who sent it (a username, or "operator:" and the API key's name) and
    # its key for a retry: unique together.
    requester: str
    request_id: str


@dataclass(frozen=True, slots=True)
class View:
    """A conversation as one member sees it."""

    conversation: Conversation
    read_seq: int
    unread: int
    last_message: Message | None


# -- request fields ----------------------------------------------------
def text(value: str, max_bytes: int) -> str:
    checks.require("text", value)
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise failures.Invalid("text", f"is {size} bytes of UTF-8; at most {max_bytes} are allowed")
    return value


def request_id(value: str) -> str:
    checks.require("request_id", value)
    checks.max_length("request_id", value, MAX_REQUEST_ID)
    return value


def title(value: str) -> str:
    checks.require("title", value.strip())
    checks.max_length("title", value, MAX_TITLE)
    return value


def valid_username(field: str, value: str) -> str:
    checks.require(field, value)
    checks.max_length(field, value, MAX_USERNAME)
    return value


def conversation_id(value: str) -> str:
    checks.require("conversation_id", value)
    checks.max_length("conversation_id", value, MAX_ID)
    return value


def message_id(value: str) -> str:
    checks.require("message_id", value)
    checks.max_length("message_id", value, MAX_ID)
    return value


def new_members(field: str, requested: Sequence[str], *, members: Sequence[str]) -> tuple[str, ...]:
    """The usernames of ``requested`` not yet ``members``, in order, once
    each; INVALID_ARGUMENT naming ``field[i]`` for a malformed one, or
    ``field`` when the group would be too big."""
    new: list[str] = []
    for index, name in enumerate(requested):
        valid_username(f"{field}[{index}]", name)
        if name not in members and name not in new:
            new.append(name)
    if len(members) + len(new) > MAX_GROUP_MEMBERS:
        raise failures.Invalid(field, f"a group has at most {MAX_GROUP_MEMBERS} members")
    return tuple(new)


def direct_key(a: str, b: str) -> str:
    """What makes the one-to-one conversation of ``a`` and ``b`` the only one."""
    low, high = sorted((a, b))
    return f"direct:{low}\x1f{high}"


# A party on the gateway's side: its URI stands in the conversation's
# members where a username would (a username never holds a ':'). E.164 as
# the gateway reads it (route[TO_NUMBER]); a sip: URI with a plain user and
# host, nothing that could break out of a SIP header.
_SEPARATORS = re.compile(r"[\s().-]")
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_SIP_URI = re.compile(r"^sips?:([A-Za-z0-9_.!~*'()&=+$,%-]{1,64})@([A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?)$")
_TEL = re.compile(r"^tel:\+?[0-9]{2,15}$")
# A party's URI stands where a username would, in columns of 64 (tables.py).
MAX_PARTY = 64


def is_external(party: str) -> bool:
    """Whether a member is a party on the gateway's side (its URI)."""
    return ":" in party


def external_party(field: str, target: str, domain: str, region: str) -> str | None:
    """The URI of a recipient on the gateway's side ("tel:+34911222333",
    "sip:ann@example.com"), or None when ``target`` names a subscriber
    (a username, or a sip: URI of the gateway's own domain: then the
    caller reads the username with ``subscriber_of``). A number is E.164
    with or without tel: and visual separators, or national digits after
    tel: (read in ``region``). Invalid for what the gateway cannot take."""
    raw = target.strip()
    lowered = raw.lower()
    if lowered.startswith(("sip:", "sips:")):
        found = _SIP_URI.match(raw)
        if found is None:
            raise failures.Invalid(field, f"{raw[:80]!r} is not a sip: URI wac can send to (sip:user@host)")
        if found.group(2).lower() == domain.lower():
            return None
        checks.max_length(field, raw, MAX_PARTY)
        return raw
    if not (lowered.startswith("tel:") or raw.startswith("+")):
        return None
    number = _SEPARATORS.sub("", (raw[4:] if lowered.startswith("tel:") else raw).split(";", 1)[0])
    if not number.startswith("+"):
        try:
            number = normalize_e164(number, region)
        except InvalidPhoneNumber as exc:
            raise failures.Invalid(field, f"{raw[:80]!r} {exc.problem}") from None
    if not _E164.match(number):
        raise failures.Invalid(field, f"{raw[:80]!r} is not an E.164 number (+ and 2 to 15 digits)")
    return f"tel:{number}"


def subscriber_of(target: str) -> str:
    """The username a recipient names: itself, or the user of a sip: URI of the gateway's domain."""
    found = _SIP_URI.match(target.strip())
    return found.group(1) if found else target


def sender_party(field: str, value: str, domain: str, region: str) -> str:
    """A sender on the gateway's side as the gateway hands it in (a tel: or
    sip: URI), as wac keeps it: a number the way ``external_party`` reads
    it, else as given (a carrier's digits that are no number in ``region``;
    a sip: URI, even of the gateway's own domain: it is no subscriber)."""
    checks.require(field, value)
    checks.max_length(field, value, MAX_PARTY)
    if _SIP_URI.match(value):
        return value
    if not _TEL.match(value):
        raise failures.Invalid(field, f"{value[:80]!r} is not a tel: or sip: URI")
    try:
        return external_party(field, value, domain, region) or value
    except failures.Invalid:
        return value


def system_key(username: str) -> str:
    return f"system:{username}"


# -- access ------------------------------------------------------------
def member(conversation: Conversation | None, username: str) -> Conversation:
    """The conversation, if ``username`` is one of its members; an unknown
    conversation gets the same refusal as a stranger's."""
    if conversation is None or not conversation.is_member(username):
        raise failures.PermissionDenied(NOT_MEMBER)
    return conversation


def may_send(conversation: Conversation | None, username: str) -> Conversation:
    conversation = member(conversation, username)
    if conversation.kind is Kind.SYSTEM:
        raise failures.FailedPrecondition("a system conversation is read only")
    return conversation


def group(conversation: Conversation | None, username: str) -> Conversation:
    conversation = member(conversation, username)
    if conversation.kind is not Kind.GROUP:
        raise failures.FailedPrecondition("only a group has a title and members to change")
    return conversation


def owned(conversation: Conversation | None, username: str) -> Conversation:
    conversation = group(conversation, username)
    if conversation.owner != username:
        raise failures.PermissionDenied("only the group's owner may do this")
    return conversation


# -- inputs: the conversation before, the conversation after -------------
def rename(conversation: Conversation | None, username: str, new_title: str) -> Conversation:
    return replace(owned(conversation, username), title=title(new_title))


def add(conversation: Conversation | None, username: str, requested: Sequence[str]) -> Conversation:
    conversation = owned(conversation, username)
    new = new_members("members", requested, members=conversation.members)
    return replace(conversation, members=conversation.members + new)


def remove(conversation: Conversation | None, username: str, requested: Sequence[str]) -> Conversation:
    """Its owner removes anyone, a member only itself; an owner who leaves
    hands the group to the member who joined after it."""
    conversation = group(conversation, username)
    for index, name in enumerate(requested):
        valid_username(f"members[{index}]", name)
        if username not in (name, conversation.owner):
            raise failures.PermissionDenied("only the group's owner may remove other members")
    gone = set(requested)
    kept = tuple(m for m in conversation.members if m not in gone)
    owner = conversation.owner if conversation.owner in kept else (kept[0] if kept else "")
    return replace(conversation, members=kept, owner=owner)


def sent(conversation: Conversation, now: float) -> Conversation:
    """The conversation once a message took the next seq."""
    return replace(conversation, last_seq=conversation.last_seq + 1, update_time=now)
