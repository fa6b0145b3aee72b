"""Generate the Python stubs and Envoy's descriptor set from proto/.

Two packages: the contract, wac.v1 (proto/wac/v1), and wac's internal hops,
wac.internal.v1 (proto/wac/internal/v1). Both get Python stubs; only the
contract goes into the descriptor set, which Envoy transcodes and from which
envoy/openapi.json and the SDK's types are generated, so the internal
package is never published or routed.

Generated code is built, never committed, so it cannot drift from the
.proto files: every checkout and every CI run makes it afresh.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT  # protoc writes wac/v1/*_pb2.py below the output root
# Each generated package, and the docstring of its __init__.py.
PACKAGES = {
    "wac/v1": "Generated from proto/wac/v1; do not edit.",
    "wac/internal/v1": "Generated from proto/wac/internal/v1; do not edit.",
}
PUBLIC = "wac/v1"
DESCRIPTOR = ROOT / "build" / "wac.pb"
# Envoy's transcoder can print a google.rpc.Status detail only if its type is in
# the descriptor set; these are the detail types the core sends.
STATUS_PROTOS = ["google/rpc/status.proto", "google/rpc/error_details.proto"]


def include_dirs() -> list[str]:
    """The well-known types (grpc_tools) and google/api (googleapis-common-protos)."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    import google.api

    googleapis = str(Path(next(iter(google.api.__path__))).parent.parent)
    return [str(PROTO_DIR), well_known, googleapis]


def main() -> int:
    protos = {
        package: sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / package).glob("*.proto"))
        for package in PACKAGES
    }
    DESCRIPTOR.parent.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{d}" for d in include_dirs()]
    args = ["grpc_tools.protoc", *includes]
    args += [
        f"--python_out={OUT_DIR}",
        f"--pyi_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        *(proto for files in protos.values() for proto in files),
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    # A second run for the descriptor set alone, so that the google.rpc types
    # reach Envoy without generating Python into google/ (the package
    # googleapis-common-protos already provides it).
    descriptor_args = [
        "grpc_tools.protoc",
        *includes,
        f"--descriptor_set_out={DESCRIPTOR}",
        "--include_imports",
        "--include_source_info",
        *protos[PUBLIC],
        *STATUS_PROTOS,
    ]
    if protoc.main(descriptor_args) != 0:
        print("protoc failed writing the descriptor set", file=sys.stderr)
        return 1
    for package, docstring in PACKAGES.items():
        (ROOT / package / "__init__.py").write_text(f'"""{docstring}"""\n')
    # wac/internal/ is generated too: it holds nothing but its v1.
    (ROOT / "wac" / "internal" / "__init__.py").write_text('"""Generated: wac\'s internal hops; do not edit."""\n')
    counts = ", ".join(f"{len(files)} into {package}" for package, files in protos.items())
    print(f"generated {counts}, and {DESCRIPTOR.relative_to(ROOT)} from {PUBLIC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
