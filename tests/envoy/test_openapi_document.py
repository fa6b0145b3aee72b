"""envoy/openapi.json: generated from the descriptor set, and kept in step with it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "gen_openapi.py"
DESCRIPTOR = ROOT / "build" / "wac.pb"


def load_tool() -> ModuleType:
    # tools/ is a folder of scripts, not a package.
    spec = importlib.util.spec_from_file_location("gen_openapi", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    tool = load_tool()
    return json.loads(tool.render(DESCRIPTOR))


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, check=False)


def test_committed_document_is_up_to_date() -> None:
    result = run_tool("--check")
    assert result.returncode == 0, result.stderr


def test_check_reports_drift(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text('{"openapi": "3.0.3"}\n')
    result = run_tool("--check", "--output", str(stale))
    assert result.returncode == 1
    assert "out of date" in result.stderr
    assert stale.read_text() == '{"openapi": "3.0.3"}\n'


def test_output_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert run_tool("--output", str(first)).returncode == 0
    assert run_tool("--output", str(second)).returncode == 0
    assert first.read_bytes() == second.read_bytes()


def test_every_annotated_method_has_its_operation(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert document["openapi"].startswith("3.")
    assert paths["/sapi/v1/jwks"]["get"]["operationId"] == "IdentityService_GetJwks"
    assert "post" in paths["/sapi/v1/identity:verify"]
    assert "patch" in paths["/sapi/v1/subscribers/{username}"]
    assert "delete" in paths["/sapi/v1/subscribers/{username}"]
    assert "post" in paths["/sapi/v1/calls/{callId}:hangup"]
    assert "get" in paths["/sapi/v1/subscribers/{username}/presence"]
    assert "post" in paths["/sapi/v1/connectors/{name}:sync"]
    # Methods without an http annotation are gRPC only.
    assert not any("Login" in op["operationId"] for ops in paths.values() for op in ops.values())


def test_parameters(document: dict[str, Any]) -> None:
    list_calls = document["paths"]["/sapi/v1/calls"]["get"]
    query = {p["name"]: p for p in list_calls["parameters"]}
    assert set(query) == {"pageSize", "pageToken", "state", "subscriber"}
    assert query["state"]["schema"] == {"$ref": "#/components/schemas/Call.State"}
    assert all(p["in"] == "query" for p in query.values())

    update = document["paths"]["/sapi/v1/subscribers/{username}"]["patch"]
    by_name = {p["name"]: p for p in update["parameters"]}
    assert by_name["username"]["in"] == "path"
    assert by_name["updateMask"] == {
        "name": "updateMask",
        "in": "query",
        "schema": by_name["updateMask"]["schema"],
        "description": by_name["updateMask"]["description"],
    }
    body = update["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Subscriber"}


def test_body_star_leaves_out_path_fields(document: dict[str, Any]) -> None:
    sync = document["paths"]["/sapi/v1/connectors/{name}:sync"]["post"]
    schema = sync["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"full"}


def test_schemas_follow_proto3_json(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    subscriber = schemas["Subscriber"]["properties"]
    assert subscriber["createTime"]["format"] == "date-time"
    assert subscriber["createTime"]["readOnly"] is True
    assert subscriber["password"]["writeOnly"] is True
    assert subscriber["phoneNumbers"]["type"] == "array"
    assert "Immutable after creation" in subscriber["username"]["description"]
    assert schemas["Call"]["properties"]["duration"]["type"] == "string"
    assert schemas["Call.State"]["enum"] == ["STATE_UNSPECIFIED", "RINGING", "ACTIVE", "ENDED"]
    assert schemas["Event"]["properties"]["seq"] == {
        "type": "string",
        "format": "int64",
        "description": schemas["Event"]["properties"]["seq"]["description"],
    }
    assert schemas["Session"]["properties"]["subscriber"]["allOf"] == [{"$ref": "#/components/schemas/Subscriber"}]
    assert schemas["LoginRequest"]["required"] == ["username", "password"]


def test_errors_and_security(document: dict[str, Any]) -> None:
    components = document["components"]
    assert components["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": components["securitySchemes"]["bearerAuth"]["description"],
    }
    assert document["security"] == [{"bearerAuth": []}]
    error = components["schemas"]["Error"]
    assert set(error["properties"]) == {"code", "message", "details"}
    assert error["properties"]["details"]["type"] == "array"
    responses = document["paths"]["/sapi/v1/jwks"]["get"]["responses"]
    for status in ("400", "401", "403", "404", "409", "429", "503"):
        assert responses[status] == {"$ref": f"#/components/responses/{status}"}
        schema = components["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}
    delete = document["paths"]["/sapi/v1/subscribers/{username}"]["delete"]
    assert delete["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "object"}


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for reference in refs(document):
        _, section, kind, name = reference.split("/")
        assert name in document[section][kind], reference
