"""wac's version, as ``wac --version`` prints it.

It is the installed distribution's (``importlib.metadata``): a wheel's, or an
editable install's, which ``make setup`` refreshes whenever pyproject.toml
changes. Code run from a checkout that was never installed (``python -m cli``
with the checkout on PYTHONPATH) has no metadata; it says ``0.0.0+checkout``
rather than guess a release it may not be.
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "wac"
CHECKOUT = "0.0.0+checkout"


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return CHECKOUT
