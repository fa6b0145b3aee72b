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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from edges.wapi.rpc import INVALID_PARAMS, RpcError

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
    """Proto3 JSON, lowerCamelCase names."""
    return json_format.MessageToDict(message)


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
