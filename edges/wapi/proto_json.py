"""Proto3 JSON of a message, exactly as ``json_format.MessageToDict`` writes
it, and a request message from plain params, exactly as ``ParseDict`` reads
them, planned once per message type.

``json_format`` works out every field's conversion from its descriptor on
every call, which made it most of the edge's own work per WAPI call. Here
the plan of a message type (each field's JSON name and conversion) is made
on first use; a type with a field the plan does not cover (floats, bytes,
maps, well-known types other than Timestamp and Duration, extensions) is
left to ``json_format`` whole, so the text never differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# A field's conversion; None when the value is its own JSON (strings, bools, 32-bit integers).
Convert = Callable[[Any], Any] | None
# By field number: (JSON name, repeated, conversion).
Plan = dict[int, tuple[str, bool, Convert]]

_AS_THEY_ARE = frozenset(
    {
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BOOL,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)
# proto3 JSON writes 64-bit integers as strings.
_AS_STRINGS = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
# Well-known types json_format writes with the message's own ToJsonString.
_OWN_TEXT = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


def _enum_names_plain() -> bool:
    """Whether no enum value can carry a JSON name of its own (the
    ``pb.enumvalue.json`` option json_format honours): then a value's JSON is its name."""
    try:
        descriptor_pool.Default().FindExtensionByName("pb.enumvalue.json")
    except KeyError:
        return True
    return False


class _Unplanned(Exception):
    """A field json_format must write."""


class _Planner:
    __slots__ = ("_plans", "enum_names_plain")

    def __init__(self) -> None:
        # None: the type is left to json_format.
        self._plans: dict[str, Plan | None] = {}
        self.enum_names_plain = _enum_names_plain()

    def plan(self, descriptor: Descriptor) -> Plan | None:
        name = descriptor.full_name
        try:
            return self._plans[name]
        except KeyError:
            pass
        self._plans[name] = None  # while planning: a recursive type is left to json_format
        plan = self._make(descriptor)
        self._plans[name] = plan
        return plan

    def _make(self, descriptor: Descriptor) -> Plan | None:
        if descriptor.full_name.startswith("google.protobuf."):
            return None  # well-known types: json_format's own rules
        try:
            return {
                field.number: (field.json_name, field.is_repeated, self._convert(field)) for field in descriptor.fields
            }
        except _Unplanned:
            return None

    def _convert(self, field: FieldDescriptor) -> Convert:
        """The field's conversion; _Unplanned when json_format must write it."""
        kind = field.type
        if kind in _AS_THEY_ARE:
            return None
        if kind in _AS_STRINGS:
            return str
        if kind == FieldDescriptor.TYPE_ENUM:
            enum = field.enum_type
            if not self.enum_names_plain or enum.is_closed or enum.full_name == "google.protobuf.NullValue":
                raise _Unplanned
            names = {value.number: value.name for value in enum.values}
            return lambda number: names.get(number, number)  # an unknown value stays a number
        if kind == FieldDescriptor.TYPE_MESSAGE:
            message = field.message_type
            if message.GetOptions().map_entry:
                raise _Unplanned
            if message.full_name in _OWN_TEXT:
                return _own_text
            if self.plan(message) is None:
                raise _Unplanned
            return to_json
        raise _Unplanned  # floats (NaN, float32's shortest form), bytes (base64)


def _own_text(message: Message) -> str:
    text: str = message.ToJsonString()
    return text


_PLANNER = _Planner()


def to_json(message: Message) -> dict[str, Any]:
    """Proto3 JSON, lowerCamelCase names: ``json_format.MessageToDict(message)``."""
    plan = _PLANNER.plan(message.DESCRIPTOR)
    if plan is None:
        return json_format.MessageToDict(message)
    out: dict[str, Any] = {}
    try:
        for field, value in message.ListFields():
            entry = plan.get(field.number)
            if entry is None or field.is_extension:
                return json_format.MessageToDict(message)
            name, repeated, convert = entry
            if convert is None:
                out[name] = list(value) if repeated else value
            elif repeated:
                out[name] = [convert(item) for item in value]
            else:
                out[name] = convert(value)
    except ValueError:
        # A Timestamp out of range: json_format raises its own error for it.
        return json_format.MessageToDict(message)
    return out


# -- reading -------------------------------------------------------------------
# What a scalar field takes on the planned road: (kind, low, high, enum numbers by name).
_Reader = tuple[str, int, int, dict[str, int] | None]
# By JSON name and by proto name: (field name, its oneof or None, reader).
ReadPlan = dict[str, tuple[str, str | None, _Reader]]

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# json_format refuses these in a string field; the planned road leaves them to it.
_SURROGATE = re.compile("[\ud800-\udfff]")
_READ_PLANS: dict[str, ReadPlan] = {}


def _read_plan(descriptor: Descriptor) -> ReadPlan:
    """The scalar, singular fields of a message, which the planned road sets
    directly; params naming any other field go to json_format."""
    plan = _READ_PLANS.get(descriptor.full_name)
    if plan is not None:
        return plan
    plan = {}
    plain_enums = _PLANNER.enum_names_plain
    for field in descriptor.fields:
        if field.is_repeated or field.is_extension:
            continue
        kind = field.type
        reader: _Reader
        if kind == FieldDescriptor.TYPE_STRING:
            reader = ("str", 0, 0, None)
        elif kind == FieldDescriptor.TYPE_BOOL:
            reader = ("bool", 0, 0, None)
        elif kind in _INT_RANGES:
            reader = ("int", *_INT_RANGES[kind], None)
        elif kind == FieldDescriptor.TYPE_ENUM and plain_enums and not field.enum_type.is_closed:
            if field.enum_type.full_name == "google.protobuf.NullValue":
                continue
            reader = ("enum", 0, 0, {value.name: value.number for value in field.enum_type.values})
        else:
            continue
        oneof = field.containing_oneof.name if field.containing_oneof is not None else None
        plan[field.json_name] = plan[field.name] = (field.name, oneof, reader)
    _READ_PLANS[descriptor.full_name] = plan
    return plan


def from_json(params: Mapping[str, Any], cls: type[Message]) -> Message | None:
    """``json_format.ParseDict(params, cls())`` when every param is a plain
    value of a scalar field; None otherwise (and for anything json_format
    would refuse), so that json_format reads it and words its error."""
    plan = _read_plan(cls.DESCRIPTOR)
    values: dict[str, Any] = {}
    oneofs: set[str] = set()
    for key, value in params.items():
        entry = plan.get(key)
        if entry is None:
            return None
        name, oneof, (kind, low, high, numbers) = entry
        if name in values:
            return None  # both spellings of one field
        if oneof is not None:
            if oneof in oneofs:
                return None
            oneofs.add(oneof)
        value_type = type(value)
        if kind == "str":
            if value_type is not str or (not value.isascii() and _SURROGATE.search(value) is not None):
                return None
        elif kind == "int":
            if value_type is not int or not low <= value <= high:
                return None
        elif kind == "bool":
            if value_type is not bool:
                return None
        else:
            number = numbers.get(value) if numbers is not None and value_type is str else None
            if number is None:
                return None
            values[name] = number
            continue
        values[name] = value
    try:
        return cls(**values)
    except (ValueError, TypeError):
        return None
