"""The wheel's data files: hatchling's build hook (pyproject.toml's
``[tool.hatch.build.targets.wheel.hooks.custom]``).

The files the processes read at run time from outside the Python packages go
into a wheel below ``wac/share/``, at their checkout paths, where
settings/assets.py finds them. A hook rather than ``force-include``: an
editable install (``make setup``'s ``pip install -e``, which runs before the
descriptor set and the SDK are built) reads them from the checkout and must
neither need nor copy them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# Relative to the checkout's root, and to wac/share/ in the wheel.
SHARED = (
    "envoy/envoy.yaml.tmpl",
    "envoy/openapi.json",
    "build/wac.pb",  # tools/gen_proto.py
    "gateway/kamailio.cfg.tmpl",
    "janus",
    "clients/js/dist/wac.js",  # npm run build (make sdk)
    "clients/js/dist/wac.js.map",
    "clients/js/dist/wac.umd.js",
    "clients/js/dist/wac.umd.js.map",
    "clients/js/demo",
)


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        root = Path(self.root)
        missing = [path for path in SHARED if not (root / path).exists()]
        if missing:
            raise RuntimeError(f"run `make setup` first; the wheel needs {', '.join(missing)}")
        for path in SHARED:
            build_data["force_include"][str(root / path)] = f"wac/share/{path}"
