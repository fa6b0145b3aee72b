"""Where wac's data files are, in a checkout and in an installed wheel.

The files the processes read at run time and do not import (Envoy's template,
its descriptor set and openapi.json, Kamailio's template, the built JS SDK and
the demo) live in a checkout where the repository keeps or builds them. A
wheel carries the same files under ``wac/share/``, at the same relative paths
(hatch_build.py, the build hook, lists them), so one relative path names a
file in both: ``asset("envoy", "envoy.yaml.tmpl")``.

Alembic's migrations are a package's own files (core/db/migrations) and need
no such help.
"""

from __future__ import annotations

from pathlib import Path

# The checkout's root, or site-packages in an installed wheel: settings/ and
# wac/ are siblings in both.
_TOP = Path(__file__).resolve().parent.parent
# Only a wheel has it; a checkout never makes it.
INSTALLED = _TOP / "wac" / "share"


def root() -> Path:
    """The directory the data files' relative paths start from."""
    return INSTALLED if INSTALLED.is_dir() else _TOP


def asset(*parts: str) -> Path:
    """A data file (or directory) by its path relative to the checkout's root."""
    return root().joinpath(*parts)
