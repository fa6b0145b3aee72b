"""The WAPI method table, read from the protobuf descriptors of wac.v1.

Every service in the generated ``wac.v1`` modules is reachable as
``"<Service>.<Method>"``: a method added to a .proto file is callable
through the edge once the stubs are regenerated, with no change here.
``params`` is the request message and ``result`` the response message, in
proto3 JSON (lowerCamelCase out, either spelling in; fields holding their
default value are omitted, as proto3 JSON does).

Two properties come from the descriptors too, never from a list of names:
a server-streaming method is a subscription (its messages become
notifications), and a method returning ``wac.v1.Session`` opens a session
(it is callable before login and its result binds the connection).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from edges.wapi import proto_json
from edges.wapi.rpc import INVALID_PARAMS, RpcError, encode

PACKAGE = "wac.v1"
SESSION_MESSAGE = f"{PACKAGE}.Session"

_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)" at "([^"]+)"')


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC as the WAPI sees it."""

    name: str
    path: str
    request_type: type[Message]
    response_type: type[Message]
    server_streaming: bool
    client_streaming: bool
    opens_session: bool

    def parse_params(self, params: Mapping[str, Any]) -> Message:
        """The request message from JSON params; RpcError -32602 naming the field if they do not fit."""
        message = proto_json.from_json(params, self.request_type)
        if message is not None:
            return message
        try:
            return json_format.ParseDict(params, self.request_type(), ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params: {_describe(exc)}") from None
        except (RecursionError, ValueError, TypeError) as exc:  # defensive: json_format leaks some
            raise RpcError(INVALID_PARAMS, f"invalid params: {exc}") from None


def _describe(exc: json_format.ParseError) -> str:
    text = str(exc)
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        field, where = unknown.groups()
        return f'unknown field "{field}" in {where}'
    # json_format appends the list of known fields on a second line; the
    # first line already names the field at fault.
    return text.split("\n", 1)[0].rstrip(".")


def to_json(message: Message) -> dict[str, Any]:
    """Proto3 JSON, lowerCamelCase names (json_format's, planned per type)."""
    return proto_json.to_json(message)


# proto3 JSON writes these as strings, the other integers as numbers.
_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


class StreamJson:
    """The proto3 JSON text of stream messages, converted once per payload.

    A fan-out hands the same event to thousands of sessions, identical but
    for the ``seq`` each session's log gave it. The JSON of everything but
    ``seq`` is kept for the last ``size`` payloads (>= 1), so each copy costs
    a serialization and a lookup instead of a conversion, which is most of
    the edge's work per event. The text equals ``encode(to_json(message))``.
    """

    __slots__ = ("_cache", "_seq_fields", "_size")

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._cache: OrderedDict[tuple[str, bytes], str] = OrderedDict()
        self._seq_fields: dict[str, FieldDescriptor | None] = {}

    def text(self, message: Message) -> str:
        descriptor = message.DESCRIPTOR
        try:
            field = self._seq_fields[descriptor.full_name]
        except KeyError:
            field = self._seq_fields[descriptor.full_name] = _leading_seq(descriptor)
        if field is None:
            return encode(to_json(message))
        seq = getattr(message, "seq")  # noqa: B009 - a field found by name
        message.ClearField("seq")
        key = (descriptor.full_name, message.SerializeToString(deterministic=True))
        rest = self._cache.get(key)
        if rest is None:
            rest = encode(to_json(message))
            self._cache[key] = rest
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        setattr(message, "seq", seq)  # noqa: B010 - the message is the caller's
        if seq == 0:
            return rest
        head = f'{{"{field.json_name}":"{seq}"'
        return head + ("}" if rest == "{}" else "," + rest[1:])


def _leading_seq(descriptor: Any) -> FieldDescriptor | None:
    """The message's int64 ``seq`` field, if it has the lowest field number:
    proto3 JSON writes fields in number order, so it comes first."""
    field = descriptor.fields_by_name.get("seq")
    if field is None or field.type not in _INT64_TYPES or field.is_repeated:
        return None
    if field.number != min(f.number for f in descriptor.fields):
        return None
    return field


def wac_services(package: str = PACKAGE) -> list[ServiceDescriptor]:
    """The services declared in the generated modules of ``package``."""
    root = importlib.import_module(package)
    services: list[ServiceDescriptor] = []
    for module_info in sorted(pkgutil.iter_modules(root.__path__), key=lambda m: m.name):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"{package}.{module_info.name}")
        services.extend(module.DESCRIPTOR.services_by_name.values())
    return services


class MethodTable:
    """Every method of the given services, by WAPI name."""

    def __init__(self, services: Iterable[ServiceDescriptor]) -> None:
        self._methods: dict[str, Method] = {}
        for service in services:
            for descriptor in service.methods:
                name = f"{service.name}.{descriptor.name}"
                self._methods[name] = Method(
                    name=name,
                    path=f"/{service.full_name}/{descriptor.name}",
                    request_type=message_factory.GetMessageClass(descriptor.input_type),
                    response_type=message_factory.GetMessageClass(descriptor.output_type),
                    server_streaming=descriptor.server_streaming,
                    client_streaming=descriptor.client_streaming,
                    opens_session=descriptor.output_type.full_name == SESSION_MESSAGE,
                )

    @classmethod
    def for_package(cls, package: str = PACKAGE) -> MethodTable:
        return cls(wac_services(package))

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def __iter__(self) -> Iterator[Method]:
        return iter(self._methods.values())

    def __len__(self) -> int:
        return len(self._methods)
