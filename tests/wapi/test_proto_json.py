"""edges.wapi.proto_json writes what json_format.MessageToDict writes, for
every message of the contract, filled at random."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import json_format, wrappers_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from edges.wapi import proto_json
from edges.wapi.methods import MethodTable
from wac.internal.v1 import stream_pb2
from wac.v1 import events_pb2

TABLE = MethodTable.for_package()

_STRINGS = ["", "a", "bench", "é", "日本", "\U0001f600", "\x00\x1f\u2028", '"\\/']
_INTS = {
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


def _scalar(field: FieldDescriptor, rng: random.Random) -> object:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(_STRINGS)
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return rng.choice([*numbers, max(numbers) + 7])  # an unknown value too
    if kind in _INTS:
        low, high = _INTS[kind]
        return rng.choice([0, 1, -1 if low else 2, low, high, rng.randint(low, high)])
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return rng.choice([0.0, 1.5, -2.25, 1e-7, float("inf"), float("nan")])
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.choice([b"", b"\x00\xff", b"abc"])
    raise AssertionError(kind)


def _fill(message: Message, rng: random.Random, depth: int = 0) -> None:
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                continue  # none in the contract today; json_format would write them
            if field.message_type.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
                kind = field.message_type._concrete_class
                values = [kind(seconds=rng.randint(0, 2**33), nanos=rng.choice([0, 1000, 5, 10**9]))]
                if field.is_repeated:
                    getattr(message, field.name).extend(values)
                else:
                    getattr(message, field.name).CopyFrom(values[0])
                continue
            if depth > 3 or field.message_type.full_name.startswith("google.protobuf."):
                continue  # other well-known types: json_format's, whole
            if field.is_repeated:
                for _ in range(rng.randint(0, 2)):
                    _fill(getattr(message, field.name).add(), rng, depth + 1)
            else:
                child = getattr(message, field.name)
                child.SetInParent()
                _fill(child, rng, depth + 1)
        elif field.is_repeated:
            getattr(message, field.name).extend(_scalar(field, rng) for _ in range(rng.randint(0, 3)))
        else:
            setattr(message, field.name, _scalar(field, rng))


def _types() -> list[type[Message]]:
    seen: dict[str, type[Message]] = {}
    for method in TABLE:
        for cls in (method.request_type, method.response_type):
            seen[cls.DESCRIPTOR.full_name] = cls
    seen[events_pb2.Event.DESCRIPTOR.full_name] = events_pb2.Event
    seen[stream_pb2.StreamEventsResponse.DESCRIPTOR.full_name] = stream_pb2.StreamEventsResponse
    return [seen[name] for name in sorted(seen)]


@pytest.mark.parametrize("cls", _types(), ids=lambda cls: cls.DESCRIPTOR.full_name)
def test_same_as_json_format(cls: type[Message]) -> None:
    rng = random.Random(cls.DESCRIPTOR.full_name)
    for _ in range(200):
        message = cls()
        _fill(message, rng)
        expected, got = _outcome(json_format.MessageToDict, message), _outcome(proto_json.to_json, message)
        # The same keys in the same order: the text on the wire is the same.
        assert repr(got) == repr(expected)


def _outcome(convert: Callable[[Message], dict[str, Any]], message: Message) -> object:
    try:
        return convert(message)
    except Exception as exc:  # a Timestamp out of range: the same error
        return type(exc), str(exc)


def test_the_contract_is_planned() -> None:
    """The messages of the hot paths take the planned road, not json_format's."""
    descriptors: list[Descriptor] = [events_pb2.Event.DESCRIPTOR]
    for name in ("PresenceService.GetPresence", "IdentityService.GetSubscriber", "CallsService.CreateCall"):
        method = TABLE.get(name)
        assert method is not None
        descriptors.append(method.response_type.DESCRIPTOR)
    for descriptor in descriptors:
        assert proto_json._PLANNER.plan(descriptor) is not None, descriptor.full_name


def test_well_known_types_and_floats_are_json_formats() -> None:
    assert proto_json._PLANNER.plan(wrappers_pb2.DoubleValue.DESCRIPTOR) is None
    value = wrappers_pb2.StringValue(value="x")
    assert proto_json.to_json(value) == json_format.MessageToDict(value)


def _params(descriptor: Descriptor, rng: random.Random) -> dict[str, Any]:
    """Params a client might send: right and wrong values, both spellings, unknown names."""
    params: dict[str, Any] = {}
    for field in descriptor.fields:
        if rng.random() < (0.5 if _valid(field, rng) else 0.9):
            continue
        key = rng.choice([field.json_name, field.json_name, field.name, field.name.upper()])
        choices: list[Any] = [None, "x", "é", "\ud800", 1, -1, 2**31, 2**63, 2**64, True, 1.0, 1.5, [], {}, "AWAY", "1"]
        if field.type == FieldDescriptor.TYPE_ENUM:
            choices += [value.name for value in field.enum_type.values] * 3
        valid = _valid(field, rng)
        params[key] = valid[0] if valid and rng.random() < 0.8 else rng.choice(choices)
    if rng.random() < 0.1:
        params["noSuchField"] = 1
    return params


def _valid(field: FieldDescriptor, rng: random.Random) -> list[Any]:
    if field.is_repeated or field.message_type is not None:
        return []
    if field.type == FieldDescriptor.TYPE_ENUM:
        return [rng.choice(field.enum_type.values).name]
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_BYTES):
        return []
    return [_scalar(field, rng)]


def _parsed(params: dict[str, Any], cls: type[Message]) -> object:
    try:
        return json_format.ParseDict(params, cls(), ignore_unknown_fields=False).SerializeToString(deterministic=True)
    except Exception:
        return "refused"


@pytest.mark.parametrize("cls", _types(), ids=lambda cls: cls.DESCRIPTOR.full_name)
def test_reads_as_json_format(cls: type[Message]) -> None:
    rng = random.Random("read " + cls.DESCRIPTOR.full_name)
    planned = 0
    for _ in range(400):
        params = _params(cls.DESCRIPTOR, rng)
        message = proto_json.from_json(params, cls)
        if message is None:
            continue  # json_format's to read, and to refuse
        planned += 1
        assert message.SerializeToString(deterministic=True) == _parsed(params, cls), params
    assert planned or not proto_json._read_plan(cls.DESCRIPTOR)


def test_plain_params_take_the_planned_road() -> None:
    method = TABLE.get("PresenceService.SetPresence")
    assert method is not None
    message = proto_json.from_json({"status": "AWAY", "note": "lunch"}, method.request_type)
    assert message is not None and json_format.MessageToDict(message) == {"status": "AWAY", "note": "lunch"}
