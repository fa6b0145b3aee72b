"""A private OpenLDAP server for tests and benches.

Each ``Slapd`` writes its own slapd.conf (mdb backend; core, cosine and
inetorgperson schemas) in a temp dir, listens on 127.0.0.1 at a free port,
runs in the foreground as a child of the test, and is always stopped. The
machine's own slapd service, if any, is neither needed nor touched.

Under CI=true a missing slapd fails the test; elsewhere it skips with the
reason, so a laptop without OpenLDAP still runs the rest.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.server import LocalServer
from tests.support.system import missing

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ldap"
SCHEMAS = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
READER_DN = f"cn=reader,ou=services,{SUFFIX}"
READER_PASSWORD = "reader-secret"  # as in fixtures/ldap/00-base.ldif
PEOPLE_DN = f"ou=people,{SUFFIX}"


_CONFIG = """\
include {schemas}/core.schema
include {schemas}/cosine.schema
include {schemas}/inetorgperson.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
{modules}
sizelimit unlimited
timelimit unlimited

database mdb
maxsize 1073741824
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_password}
directory {dir}/data
index objectClass eq
index entryUUID eq
index modifyTimestamp eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""


def slapd_binary() -> str | None:
    return shutil.which("slapd") or next(
        (p for p in ("/usr/sbin/slapd", "/usr/local/libexec/slapd") if os.access(p, os.X_OK)), None
    )


def require_slapd() -> str:
    """The slapd binary; fails under CI and skips elsewhere if it is missing."""
    binary = slapd_binary()
    tools = all(shutil.which(t) for t in ("ldapadd", "ldapmodify", "ldapdelete"))
    if binary and tools and (SCHEMAS / "inetorgperson.schema").is_file():
        return binary
    missing("OpenLDAP's slapd and ldap-utils are not installed (apt-get install slapd ldap-utils)")


class Slapd(LocalServer):
    """One slapd process with its data in ``directory``."""

    name = "slapd"

    def __init__(self, directory: Path, binary: str) -> None:
        super().__init__(directory)
        self.binary = binary
        # Its own root password: the readiness check binds with it, so it
        # cannot mistake another test session's slapd that took the port
        # first (same fixtures, same DNs) for this one.
        self.root_password = secrets.token_urlsafe(16)
        (directory / "data").mkdir(parents=True, exist_ok=True)
        modules = ""
        # Debian builds the mdb backend as a module; a static build has it in.
        if (MODULES / "back_mdb.so").exists() or (MODULES / "back_mdb.la").exists():
            modules = f"modulepath {MODULES}\nmoduleload back_mdb"
        self.config = directory / "slapd.conf"
        self.config.write_text(
            _CONFIG.format(
                schemas=SCHEMAS,
                dir=directory,
                modules=modules,
                suffix=SUFFIX,
                root_dn=ROOT_DN,
                root_password=self.root_password,
            )
        )

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        # -d keeps slapd in the foreground as our child; level 0 logs nothing.
        return [self.binary, "-d", "0", "-h", self.url, "-f", str(self.config)]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        # Listening; a root bind proves the database is open too.
        result = subprocess.run(
            ["ldapwhoami", "-x", "-H", self.url, "-D", ROOT_DN, "-w", self.root_password],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def _tool(self, tool: str, *args: str, ldif: str | None = None) -> None:
        command = [tool, "-x", "-H", self.url, "-D", ROOT_DN, "-w", self.root_password, *args]
        result = subprocess.run(command, input=ldif, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}")

    def ldapadd(self, ldif: str | Path) -> None:
        if isinstance(ldif, Path):
            self._tool("ldapadd", "-f", str(ldif))
        else:
            self._tool("ldapadd", ldif=ldif)

    def ldapmodify(self, ldif: str) -> None:
        self._tool("ldapmodify", ldif=ldif)

    def ldapdelete(self, *dns: str) -> None:
        self._tool("ldapdelete", *dns)

    def load_fixtures(self, *names: str) -> None:
        """Load LDIF files from tests/fixtures/ldap, all of them by default, in name order."""
        paths = [FIXTURES / n for n in names] if names else sorted(FIXTURES.glob("*.ldif"))
        for path in paths:
            self.ldapadd(path)


@contextmanager
def running_slapd(directory: Path, *fixtures: str) -> Iterator[Slapd]:
    """A started slapd holding only the base entries plus ``fixtures``."""
    server = Slapd(directory, require_slapd())
    server.start()
    try:
        server.load_fixtures("00-base.ldif", *fixtures)
        yield server
    finally:
        server.stop()


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A slapd of this test's own, loaded with every fixture LDIF."""
    server = Slapd(tmp_path / "slapd", require_slapd())
    server.start()
    try:
        server.load_fixtures()
        yield server
    finally:
        server.stop()
