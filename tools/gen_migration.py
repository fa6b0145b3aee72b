"""Regenerate the initial migration from the tables' metadata.

Only while nothing has shipped: once a release is out, schema changes get a
new revision (``alembic revision --autogenerate``) instead.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from core.db.migrate import MIGRATIONS, alembic_config


def main() -> int:
    for old in (MIGRATIONS / "versions").glob("0001_*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as empty:
        config = alembic_config(f"sqlite+aiosqlite:///{Path(empty) / 'empty.db'}")
        command.revision(config, message="initial schema", autogenerate=True, rev_id="0001")
    return 0


if __name__ == "__main__":
    sys.exit(main())
