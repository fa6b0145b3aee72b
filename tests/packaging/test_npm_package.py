"""The JS SDK as an npm package: `npm pack` of clients/js (as `make sdk`
built it), installed into an empty project and used there by node as an ES
module, through require() (the UMD), as a classic script (the global `Wac`),
and by TypeScript through its declarations."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.cli import ROOT
from tests.support.system import missing

JS = ROOT / "clients" / "js"
BUILT = (JS / "dist" / "wac.js", JS / "dist" / "wac.umd.cjs", JS / "dist" / "types" / "index.d.ts")
TSC = JS / "node_modules" / ".bin" / "tsc"

pytestmark = pytest.mark.timeout(300)


def _run(args: list[str], cwd: Path, timeout: float = 120) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty project with the packed tarball installed."""
    absent = [str(path) for path in (*BUILT, TSC) if not path.exists()]
    if absent or shutil.which("npm") is None:
        missing(f"the SDK is not built (make setup builds it): missing {absent or 'npm'}")
    work = tmp_path_factory.mktemp("npm")
    # --ignore-scripts: pack what `make sdk` built, nothing rebuilt.
    packed = json.loads(_run(["npm", "pack", "--json", "--ignore-scripts", "--pack-destination", str(work)], JS))
    tarball = work / packed[0]["filename"]
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    expected = {"package/dist/wac.js", "package/dist/wac.umd.js", "package/dist/wac.umd.cjs"}
    expected |= {"package/dist/types/index.d.ts", "package/package.json"}
    assert expected <= names, sorted(expected - names)
    assert not any(name.startswith(("package/dist/test/", "package/node_modules/")) for name in names)
    project = work / "consumer"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "consumer", "private": True, "version": "0.0.0"}))
    # jssip (the declarations name its types) comes from npm's cache or the registry.
    _run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline", str(tarball)], project, timeout=240)
    return project


def test_node_imports_the_es_module(consumer: Path) -> None:
    script = (
        'import { Wac, WacError, Status } from "@wac/sdk"; console.log(typeof Wac, typeof WacError, typeof Status);'
    )
    assert _run(["node", "--input-type=module", "-e", script], consumer).split() == ["function", "function", "object"]


def test_node_requires_the_umd(consumer: Path) -> None:
    script = 'const Wac = require("@wac/sdk"); console.log(typeof Wac, typeof Wac.WacError, typeof Wac.Status);'
    assert _run(["node", "-e", script], consumer).split() == ["function", "function", "object"]


def test_a_classic_script_gets_the_global(consumer: Path) -> None:
    script = """
const vm = require("node:vm"), fs = require("node:fs");
const page = {}; page.self = page;
vm.runInNewContext(fs.readFileSync("node_modules/@wac/sdk/dist/wac.umd.js", "utf8"), page);
console.log(typeof page.Wac);
"""
    assert _run(["node", "-e", script], consumer).split() == ["function"]


def test_typescript_sees_the_declarations(consumer: Path) -> None:
    (consumer / "use.ts").write_text(
        'import { Wac, WacError, type WacOptions, type CallState } from "@wac/sdk";\n'
        "export const options: WacOptions | undefined = undefined;\n"
        "export const state: CallState | undefined = undefined;\n"
        "export const made: typeof Wac = Wac;\n"
        "export const failed = (error: unknown): boolean => error instanceof WacError;\n"
    )
    tsconfig = {
        "compilerOptions": {
            "target": "ES2020",
            "module": "ESNext",
            "moduleResolution": "bundler",
            "lib": ["ES2022", "DOM", "DOM.Iterable"],
            "types": [],
            "strict": True,
            "noEmit": True,
            # As the SDK's own: jssip's declarations import Node's "events".
            "skipLibCheck": True,
        },
        "files": ["use.ts"],
    }
    (consumer / "tsconfig.json").write_text(json.dumps(tsconfig))
    _run([str(TSC), "-p", "tsconfig.json"], consumer)
    # And a misuse is caught: the types are real, not `any`.
    (consumer / "use.ts").write_text('import { Wac } from "@wac/sdk";\nexport const wrong: number = Wac;\n')
    result = subprocess.run(
        [str(TSC), "-p", "tsconfig.json"], cwd=consumer, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode != 0 and "use.ts" in result.stdout, result.stdout + result.stderr
