"""Check the contract with buf: `buf lint`, then `buf breaking` against HEAD~1.

buf cannot download the googleapis module here, so the google/api and
google/rpc files the contract imports are copied into build/googleapis (a
module of buf.yaml's workspace) from googleapis-common-protos, the same
files tools/gen_proto.py compiles against. The breaking check compares the
working tree with the protos of the previous commit, extracted with
`git archive` next to a copy of today's buf.yaml and googleapis.

A deliberate break of the contract is accepted only from a commit that says
so: when HEAD's message carries a `Breaking-Change: <reason>` trailer, buf's
findings are printed with the reason and the check passes. Once another
commit lands on top, HEAD~1 is that commit and the check is strict again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GOOGLEAPIS = Path("build") / "googleapis"  # relative to a workspace root
BUF = Path(os.environ.get("BUF", ROOT / "clients" / "js" / "node_modules" / ".bin" / "buf"))
IMPORT = re.compile(r'^import\s+(?:public\s+|weak\s+)?"([^"]+)";', re.MULTILINE)
# buf brings the well-known types itself.
BUILT_IN = "google/protobuf/"


def googleapis_root() -> Path:
    """Where googleapis-common-protos keeps google/api and google/rpc."""
    import google.api

    return Path(next(iter(google.api.__path__))).parent.parent


def google_imports(source: Path) -> list[str]:
    """The googleapis files the contract imports, directly or through each other."""
    wanted: list[str] = []
    pending = [name for proto in sorted(PROTO_DIR.rglob("*.proto")) for name in IMPORT.findall(proto.read_text())]
    while pending:
        name = pending.pop()
        if not name.startswith("google/") or name.startswith(BUILT_IN) or name in wanted:
            continue
        wanted.append(name)
        pending += IMPORT.findall((source / name).read_text())
    return sorted(wanted)


def copy_googleapis(workspace: Path) -> None:
    source = googleapis_root()
    target = workspace / GOOGLEAPIS
    shutil.rmtree(target, ignore_errors=True)
    for name in google_imports(source):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)


def buf(*args: str) -> int:
    return subprocess.run([str(BUF), *args], cwd=ROOT, check=False).returncode


def previous_protos(workspace: Path) -> bool:
    """Extract HEAD~1's proto/ into workspace; False if there is none."""
    has_parent = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "HEAD~1^{commit}"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if has_parent.returncode != 0:
        return False
    tree = subprocess.run(
        ["git", "ls-tree", "-d", "HEAD~1", "proto"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    if not tree.stdout.strip():
        return False
    archive = subprocess.run(["git", "archive", "HEAD~1", "proto"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(workspace)], input=archive.stdout, check=True)
    return True


def breaking_change_reason() -> str:
    """The reason HEAD's message gives for breaking the contract on purpose
    (its ``Breaking-Change:`` trailers); "" if it gives none."""
    trailers = subprocess.run(
        ["git", "log", "-1", "--format=%(trailers:key=Breaking-Change,valueonly)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if trailers.returncode != 0:
        return ""
    return " ".join(trailers.stdout.split())


def main() -> int:
    if not BUF.exists():
        print(f"{BUF} is missing: run `make setup` (buf comes with clients/js's npm ci)", file=sys.stderr)
        return 1
    copy_googleapis(ROOT)
    if buf("lint") != 0:
        print("buf lint failed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="wac-buf-") as temp:
        against = Path(temp)
        if not previous_protos(against):
            # A first commit, a shallow clone or a history before proto/.
            print("buf breaking: no previous commit with proto/ to compare with; skipped")
            return 0
        shutil.copyfile(ROOT / "buf.yaml", against / "buf.yaml")
        copy_googleapis(against)
        if buf("breaking", "--against", str(against)) != 0:
            reason = breaking_change_reason()
            if not reason:
                print(
                    "buf breaking failed: the protos break the contract of HEAD~1 "
                    "(a deliberate break needs a `Breaking-Change: <reason>` trailer in HEAD's message)",
                    file=sys.stderr,
                )
                return 1
            print(f"buf breaking: the break above is deliberate (HEAD's Breaking-Change trailer): {reason}")
            print("buf lint passed; buf breaking against HEAD~1 accepted as a deliberate break")
            return 0
    print("buf lint and buf breaking (against HEAD~1) passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
