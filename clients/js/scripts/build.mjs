#!/usr/bin/env node
// Builds the SDK with esbuild.
//
//   node scripts/build.mjs          dist/wac.js (ES module) and dist/wac.umd.js
//                                  (UMD: AMD, CommonJS or the global `Wac`),
//                                  both minified, with source maps; the UMD
//                                  again as dist/wac.umd.cjs, and the type
//                                  declarations in dist/types (npm's package)
//   node scripts/build.mjs --tests  test/*.test.ts into dist/test/*.test.js,
//                                  for `node --test`

import { execFileSync } from "node:child_process";
import { copyFileSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = resolve(ROOT, "dist");
// The browsers with WebRTC's modern API (transceivers, rollback) all run ES2020.
const TARGET = "es2020";

async function buildLibrary() {
  const common = {
    absWorkingDir: ROOT,
    bundle: true,
    minify: true,
    sourcemap: true,
    target: TARGET,
    platform: "browser",
    legalComments: "none",
    logLevel: "warning",
  };
  await esbuild.build({
    ...common,
    entryPoints: ["src/index.ts"],
    format: "esm",
    outfile: "dist/wac.js",
  });
  // esbuild writes an IIFE that assigns `__wac`; the wrapper hands its default
  // export (the Wac class) to whichever module system loads the file.
  await esbuild.build({
    ...common,
    entryPoints: ["src/umd.ts"],
    format: "iife",
    globalName: "__wac",
    banner: {
      js:
        "(function(root,factory){if(typeof define==='function'&&define.amd)define([],factory);" +
        "else if(typeof module==='object'&&module.exports)module.exports=factory();" +
        "else root.Wac=factory();})(typeof self!=='undefined'?self:this,function(){",
    },
    footer: { js: "return __wac.default;});" },
    outfile: "dist/wac.umd.js",
  });
  for (const name of ["wac.js", "wac.umd.js"]) {
    const bytes = readFileSync(resolve(DIST, name));
    console.log(`dist/${name}: ${bytes.length} bytes, ${gzipSync(bytes).length} gzipped`);
  }
  // The package is "type": "module", so Node would read wac.umd.js as an ES
  // module; require() gets the same UMD under a CommonJS name (package.json's
  // exports), while /sdk/wac.umd.js keeps its name for browsers.
  copyFileSync(resolve(DIST, "wac.umd.js"), resolve(DIST, "wac.umd.cjs"));
  buildDeclarations();
}

// The package's types: declarations of src/, what `import ... from "@wac/sdk"`
// sees in TypeScript.
function buildDeclarations() {
  rmSync(resolve(DIST, "types"), { recursive: true, force: true });
  const tsc = resolve(ROOT, "node_modules", ".bin", "tsc");
  const args = ["-p", "tsconfig.json", "--noEmit", "false", "--declaration", "--emitDeclarationOnly"];
  execFileSync(tsc, [...args, "--rootDir", "src", "--outDir", "dist/types"], { cwd: ROOT, stdio: "inherit" });
}

async function buildTests() {
  const testDir = resolve(ROOT, "test");
  const entryPoints = readdirSync(testDir)
    .filter((name) => name.endsWith(".test.ts"))
    .map((name) => `test/${name}`);
  rmSync(resolve(DIST, "test"), { recursive: true, force: true });
  await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints,
    outdir: "dist/test",
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    sourcemap: "inline",
    packages: "external",
    logLevel: "warning",
  });
}

if (process.argv.includes("--tests")) await buildTests();
else await buildLibrary();
