"""Generate the Python stubs and Envoy's descriptor set from proto/.

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
    protos = sorted(
        str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "wac" / "v1").glob("*.proto")
    )
    DESCRIPTOR.parent.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{d}" for d in include_dirs()]
    args = ["grpc_tools.protoc", *includes]
    args += [
        f"--python_out={OUT_DIR}",
        f"--pyi_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        *protos,
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
        *protos,
        *STATUS_PROTOS,
    ]
    if protoc.main(descriptor_args) != 0:
        print("protoc failed writing the descriptor set", file=sys.stderr)
        return 1
    (ROOT / "wac" / "v1" / "__init__.py").write_text(
        '"""Generated from proto/wac/v1; do not edit."""\n'
    )
    print(f"generated {len(protos)} files into wac/v1 and {DESCRIPTOR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
