"""Generate envoy/openapi.json, the OpenAPI 3 description of SAPI, from build/wac.pb.

SAPI is whatever Envoy's gRPC-JSON transcoder makes of the google.api.http
annotations, so the document is derived from the same descriptor set Envoy
loads, with the same JSON conventions: lowerCamelCase names, enums as their
value names, 64-bit integers as strings, Timestamp as RFC 3339 text.

    python tools/gen_proto.py && python tools/gen_openapi.py
    python tools/gen_openapi.py --check   # CI: fail if the committed file drifted
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported for their side effect: they register the google.api extensions, so
# that parsing the descriptor set decodes them inside method and field options.
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

from core.auth import policy

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTOR = ROOT / "build" / "wac.pb"
OUTPUT = ROOT / "envoy" / "openapi.json"
PACKAGE = "wac.v1"

FDP = descriptor_pb2.FieldDescriptorProto
Schema = dict[str, Any]

# Field numbers in descriptor.proto, which source_code_info paths are made of.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE = 2
SERVICE_METHOD = 2

SCALARS: dict[int, Schema] = {
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    # Proto3 JSON writes 64-bit integers as strings: a double cannot hold them.
    FDP.TYPE_INT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SINT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FDP.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FDP.TYPE_FIXED64: {"type": "string", "format": "uint64"},
}

# Well-known types have their own JSON forms rather than a message's object.
WELL_KNOWN: dict[str, Schema] = {
    ".google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "An RFC 3339 time in UTC, e.g. 2026-01-02T15:04:05Z.",
    },
    ".google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": 'Seconds with an "s" suffix, e.g. "3.5s".',
    },
    ".google.protobuf.FieldMask": {
        "type": "string",
        "description": 'Comma-separated lowerCamelCase field paths, e.g. "displayName,email".',
    },
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    ".google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    # A status inside a message has the shape of every error.
    ".google.rpc.Status": {"$ref": "#/components/schemas/Error"},
}
# Types whose JSON is a string, and so may be a query or path parameter.
STRING_LIKE = {
    ".google.protobuf.Timestamp",
    ".google.protobuf.Duration",
    ".google.protobuf.FieldMask",
}

ERROR_RESPONSES = {
    "400": ("The request is malformed or a field is invalid (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE)."),
    "401": "The credentials are missing, invalid or expired (UNAUTHENTICATED).",
    "403": "The caller may not do this (PERMISSION_DENIED).",
    "404": "The resource or the path does not exist (NOT_FOUND).",
    "409": "The resource already exists or changed meanwhile (ALREADY_EXISTS, ABORTED).",
    "429": "Too many requests, or a limit was reached (RESOURCE_EXHAUSTED).",
    "503": "wac is unavailable for now; retry with back-off (UNAVAILABLE).",
}

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Operation:
    """One annotated RPC, as an HTTP operation."""

    service: str
    method: descriptor_pb2.MethodDescriptorProto
    verb: str
    template: str
    body: str
    description: str


class Catalogue:
    """The messages, enums and comments of a descriptor set, by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.comments: dict[tuple[str, tuple[int, ...]], str] = {}
        self.paths: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.package_files = [f for f in files.file if f.package == PACKAGE]
        for file in files.file:
            for location in file.source_code_info.location:
                text = clean_comment(location.leading_comments)
                if text:
                    self.comments[(file.name, tuple(location.path))] = text
            prefix = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                self._add_message(file.name, prefix, message, (FILE_MESSAGE, i))
            for i, enum in enumerate(file.enum_type):
                self._add_enum(file.name, prefix, enum, (FILE_ENUM, i))

    def _add_message(
        self, file: str, prefix: str, message: descriptor_pb2.DescriptorProto, path: tuple[int, ...]
    ) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = message
        self.paths[name] = (file, path)
        for i, nested in enumerate(message.nested_type):
            self._add_message(file, name, nested, (*path, MESSAGE_NESTED, i))
        for i, enum in enumerate(message.enum_type):
            self._add_enum(file, name, enum, (*path, MESSAGE_ENUM, i))

    def _add_enum(
        self,
        file: str,
        prefix: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        name = f"{prefix}.{enum.name}"
        self.enums[name] = enum
        self.paths[name] = (file, path)

    def comment(self, type_name: str, *sub_path: int) -> str:
        file, path = self.paths[type_name]
        return self.comments.get((file, (*path, *sub_path)), "")


def clean_comment(text: str) -> str:
    """Join a proto comment's wrapped lines into paragraphs."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def schema_name(full_name: str) -> str:
    """The component name of a wac.v1 type: .wac.v1.Call.State is Call.State."""
    return full_name.removeprefix(f".{PACKAGE}.")


def ref(full_name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{schema_name(full_name)}"}


def json_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.json_name:
        return field.json_name
    head, *rest = field.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def behaviors(field: descriptor_pb2.FieldDescriptorProto) -> set[str]:
    values = field.options.Extensions[field_behavior_pb2.field_behavior]
    return {field_behavior_pb2.FieldBehavior.Name(v) for v in values}


def value_schema(catalogue: Catalogue, field: descriptor_pb2.FieldDescriptorProto) -> Schema:
    """The schema of one value of the field (an item, if the field is repeated)."""
    if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_GROUP):
        if field.type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[field.type_name])
        return ref(field.type_name)
    if field.type == FDP.TYPE_ENUM:
        return ref(field.type_name)
    return dict(SCALARS[field.type])


def map_entry(
    catalogue: Catalogue, field: descriptor_pb2.FieldDescriptorProto
) -> descriptor_pb2.DescriptorProto | None:
    if field.type != FDP.TYPE_MESSAGE or field.label != FDP.LABEL_REPEATED:
        return None
    message = catalogue.messages.get(field.type_name)
    return message if message is not None and message.options.map_entry else None


def field_schema(catalogue: Catalogue, owner: str, index: int, field: descriptor_pb2.FieldDescriptorProto) -> Schema:
    entry = map_entry(catalogue, field)
    if entry is not None:
        schema: Schema = {
            "type": "object",
            "additionalProperties": value_schema(catalogue, entry.field[1]),
        }
    elif field.label == FDP.LABEL_REPEATED:
        schema = {"type": "array", "items": value_schema(catalogue, field)}
    else:
        schema = value_schema(catalogue, field)
    description = catalogue.comment(owner, MESSAGE_FIELD, index)
    if "$ref" in schema and (description or behaviors(field) & {"OUTPUT_ONLY", "INPUT_ONLY"}):
        # OpenAPI 3.0 ignores siblings of $ref, so wrap it to keep them.
        schema = {"allOf": [schema]}
    if description:
        schema["description"] = description
    if "OUTPUT_ONLY" in behaviors(field):
        schema["readOnly"] = True
    if "INPUT_ONLY" in behaviors(field):
        schema["writeOnly"] = True
    return schema


def message_schema(catalogue: Catalogue, full_name: str, skip: frozenset[str] = frozenset()) -> Schema:
    """An object schema for a message, leaving out the fields named in skip."""
    message = catalogue.messages[full_name]
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for index, field in enumerate(message.field):
        if field.name in skip:
            continue
        name = json_name(field)
        properties[name] = field_schema(catalogue, full_name, index, field)
        if "REQUIRED" in behaviors(field):
            required.append(name)
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    description = catalogue.comment(full_name)
    if description:
        schema["description"] = description
    return schema


def enum_schema(catalogue: Catalogue, full_name: str) -> Schema:
    enum = catalogue.enums[full_name]
    lines = []
    for index, value in enumerate(enum.value):
        comment = catalogue.comment(full_name, ENUM_VALUE, index)
        lines.append(f"- `{value.name}`: {comment}" if comment else f"- `{value.name}`")
    description = "\n".join(filter(None, [catalogue.comment(full_name), "\n".join(lines)]))
    return {"type": "string", "enum": [v.name for v in enum.value], "description": description}


def operations(catalogue: Catalogue) -> list[Operation]:
    found = []
    for file in catalogue.package_files:
        for s_index, service in enumerate(file.service):
            for m_index, method in enumerate(service.method):
                rule = method.options.Extensions[annotations_pb2.http]
                verb = rule.WhichOneof("pattern")
                if verb is None:
                    continue
                if verb not in HTTP_METHODS:
                    raise SystemExit(f"{service.name}.{method.name}: unsupported http rule {verb!r}")
                path = (FILE_SERVICE, s_index, SERVICE_METHOD, m_index)
                description = catalogue.comments.get((file.name, path), "")
                found.append(Operation(service.name, method, verb, getattr(rule, verb), rule.body, description))
    return found


def field_by_path(catalogue: Catalogue, message: str, dotted: str) -> descriptor_pb2.FieldDescriptorProto:
    """Follow "subscriber.username" from message to the field it names."""
    *parents, last = dotted.split(".")
    for name in parents:
        field = next(f for f in catalogue.messages[message].field if f.name == name)
        message = field.type_name
    return next(f for f in catalogue.messages[message].field if f.name == last)


def is_query_field(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Whether the transcoder can fill the field from a query parameter."""
    if field.type == FDP.TYPE_MESSAGE:
        return field.label != FDP.LABEL_REPEATED and field.type_name in STRING_LIKE
    return field.type != FDP.TYPE_GROUP


def operation_object(catalogue: Catalogue, op: Operation) -> tuple[str, Schema]:
    request = op.method.input_type
    variables = re.findall(r"\{([^}=]+)(?:=[^}]*)?\}", op.template)
    path = op.template
    parameters: list[Schema] = []
    for variable in variables:
        field = field_by_path(catalogue, request, variable)
        # Named after the field itself, not its dotted path: PATCH
        # /subscribers/{subscriber.username} would be a second path for
        # /subscribers/{username}, which OpenAPI forbids (templated paths of
        # the same hierarchy are identical), and a dotted name is no
        # identifier in the languages clients are generated in.
        name = json_name(field)
        path = re.sub(r"\{" + re.escape(variable) + r"(=[^}]*)?\}", "{" + name + "}", path)
        parameter: Schema = {
            "name": name,
            "in": "path",
            "required": True,
            "schema": dict(SCALARS.get(field.type, {"type": "string"})),
        }
        if field.type == FDP.TYPE_ENUM:
            parameter["schema"] = ref(field.type_name)
        parameters.append(parameter)

    bound = {v.split(".")[0] for v in variables}
    operation: Schema = {
        "operationId": f"{op.service}_{op.method.name}",
        "tags": [op.service],
        "summary": op.description.split(". ")[0].rstrip(".") if op.description else op.method.name,
    }
    if op.description:
        operation["description"] = op.description
    if policy.rule_for(f"/{PACKAGE}.{op.service}/{op.method.name}").public:
        operation["security"] = []  # no credential needed (the document's default asks for one)

    request_fields = catalogue.messages[request].field
    if op.body == "*":
        schema = message_schema(catalogue, request, skip=frozenset(bound)) if bound else ref(request)
        has_fields = bool(schema.get("properties")) if bound else bool(request_fields)
        operation["requestBody"] = {
            "required": has_fields,
            "content": {"application/json": {"schema": schema}},
        }
    elif op.body:
        body_field = field_by_path(catalogue, request, op.body)
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": value_schema(catalogue, body_field)}},
        }
    if op.body != "*":
        # Everything not bound to the path or the body may come as a query parameter.
        taken = bound | {op.body.split(".")[0]}
        for index, field in enumerate(request_fields):
            if field.name in taken or not is_query_field(field):
                continue
            item = value_schema(catalogue, field)
            schema = {"type": "array", "items": item} if field.label == FDP.LABEL_REPEATED else item
            parameter = {"name": json_name(field), "in": "query", "schema": schema}
            description = catalogue.comment(request, MESSAGE_FIELD, index)
            if description:
                parameter["description"] = description
            if "REQUIRED" in behaviors(field):
                parameter["required"] = True
            parameters.append(parameter)
    names = [p["name"] for p in parameters]
    if len(set(names)) != len(names):
        raise SystemExit(f"{op.service}.{op.method.name}: two parameters named alike in {names}")
    if parameters:
        operation["parameters"] = parameters

    output = op.method.output_type
    response_schema = dict(WELL_KNOWN[output]) if output in WELL_KNOWN else ref(output)
    operation["responses"] = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": response_schema}},
        },
        **{code: {"$ref": f"#/components/responses/{code}"} for code in ERROR_RESPONSES},
    }
    return path, operation


def openapi_operation() -> Schema:
    """GET /sapi/v1/openapi.json, which Envoy serves itself."""
    return {
        "operationId": "OpenApi_Get",
        "tags": ["OpenApi"],
        "summary": "This document",
        "description": "The OpenAPI description of SAPI, served by the front door itself.",
        "security": [],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    }


def build(files: descriptor_pb2.FileDescriptorSet) -> Schema:
    """The whole OpenAPI document for the descriptor set."""
    catalogue = Catalogue(files)
    schemas: dict[str, Schema] = {}
    for name, message in catalogue.messages.items():
        if name.startswith(f".{PACKAGE}.") and not message.options.map_entry:
            schemas[schema_name(name)] = message_schema(catalogue, name)
    for name in catalogue.enums:
        if name.startswith(f".{PACKAGE}."):
            schemas[schema_name(name)] = enum_schema(catalogue, name)
    if "Error" in schemas:
        raise SystemExit("a wac.v1 message named Error would clash with the error schema")
    schemas["Error"] = {
        "type": "object",
        "description": (
            "Every SAPI error, from the core or from the front door: a google.rpc.Status. "
            "code is the gRPC status code number (5 NOT_FOUND, 3 INVALID_ARGUMENT, "
            "14 UNAVAILABLE, ...)."
        ),
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "The gRPC status code."},
            "message": {"type": "string", "description": "A developer-facing explanation."},
            "details": {
                "type": "array",
                "description": (
                    "google.rpc error details (BadRequest, ResourceInfo, ErrorInfo, ...), "
                    'each naming its type in "@type".'
                ),
                "items": dict(WELL_KNOWN[".google.protobuf.Any"]),
            },
        },
    }

    paths: dict[str, dict[str, Schema]] = {"/sapi/v1/openapi.json": {"get": openapi_operation()}}
    tags: dict[str, str] = {"OpenApi": "The description of this API."}
    for file in catalogue.package_files:
        for index, service in enumerate(file.service):
            comment = catalogue.comments.get((file.name, (FILE_SERVICE, index)), "")
            tags[service.name] = comment
    used_tags = {"OpenApi"}
    for op in operations(catalogue):
        path, operation = operation_object(catalogue, op)
        if op.verb in paths.setdefault(path, {}):
            raise SystemExit(f"two methods map to {op.verb.upper()} {path}")
        paths[path][op.verb] = operation
        used_tags.add(op.service)

    return {
        "openapi": "3.0.3",
        "info": {
            "title": "wac SAPI",
            "version": "v1",
            "description": (
                "The service API of wac, the WebRTC Application Controller: REST and JSON "
                "for gateways and the operator's systems, transcoded by Envoy to the core's "
                "gRPC services (the same methods are reachable as native gRPC on the same "
                "port). Field names are lowerCamelCase; errors are always the Error schema."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t, "description": tags[t]} for t in sorted(used_tags)],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "An API key of a service, or a subscriber's access token, "
                        'sent as "Authorization: Bearer <key or token>".'
                    ),
                }
            },
            "responses": {
                code: {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
                for code, text in ERROR_RESPONSES.items()
            },
            "schemas": schemas,
        },
    }


def render(descriptor: Path) -> str:
    """The document as committed: sorted keys, two-space indent, final newline."""
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(descriptor.read_bytes())
    return json.dumps(build(files), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptor", type=Path, default=DESCRIPTOR, help="descriptor set (build/wac.pb)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="document to write or check")
    parser.add_argument("--check", action="store_true", help="exit 1 if --output is not up to date")
    args = parser.parse_args(argv)

    if not args.descriptor.is_file():
        print(f"{args.descriptor} is missing: run python tools/gen_proto.py first", file=sys.stderr)
        return 1
    text = render(args.descriptor)
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else None
        if current != text:
            print(
                f"{args.output} is out of date with proto/: run python tools/gen_proto.py "
                "&& python tools/gen_openapi.py, and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
