"""Requests whose text holds U+0000 are refused at the door.

PostgreSQL's text types cannot store the NUL character: a statement that
binds one fails ("invalid byte sequence for encoding UTF8: 0x00"), even a
lookup, where SQLite stores it or finds nothing. Protobuf strings may hold
it, so without this one rule the same request answered INVALID_ARGUMENT,
NOT_FOUND or INTERNAL depending on the backend. No wac field has a use for
it, so every request is held to the same rule on both.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def nul_field(message: Message, prefix: str = "") -> str | None:
    """The path of the first string field of ``message`` (nested ones too)
    that holds a NUL character, e.g. ``contact.notes`` or ``emails[2]``; None if none does."""
    # ListFields visits only the fields that are set: a few per request.
    for field, value in message.ListFields():
        if field.type == _STRING:
            if not field.is_repeated:
                if "\x00" in value:
                    return prefix + field.name
                continue
            for index, item in enumerate(value):
                if "\x00" in item:
                    return f"{prefix}{field.name}[{index}]"
        elif field.type == _MESSAGE:
            if field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    path = f"{prefix}{field.name}[{key!r}]"
                    if isinstance(key, str) and "\x00" in key:
                        return path
                    if isinstance(item, str) and "\x00" in item:
                        return path
                    if isinstance(item, Message) and (found := nul_field(item, path + ".")):
                        return found
            elif field.is_repeated:
                for index, item in enumerate(value):
                    if found := nul_field(item, f"{prefix}{field.name}[{index}]."):
                        return found
            elif found := nul_field(value, f"{prefix}{field.name}."):
                return found
    return None
