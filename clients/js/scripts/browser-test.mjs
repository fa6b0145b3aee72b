#!/usr/bin/env node
// Runs test/browser/call.html in headless Chromium: two SDK instances call
// each other through an in-page stand-in for the WAPI, with real
// RTCPeerConnections and Chromium's fake camera and microphone. Talks to
// Chromium over the DevTools protocol on a pipe, so it needs no package.
//
//   node scripts/browser-test.mjs      (after npm run build; CHROMIUM=path to override)

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const PAGE = pathToFileURL(join(ROOT, "test/browser/call.html")).href;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TIMEOUT_MS = 60_000 * Number(process.env.WAC_TEST_TIME_SCALE ?? 1);

const profile = mkdtempSync(join(tmpdir(), "wac-chromium-"));
const args = [
  "--headless",
  "--remote-debugging-pipe",
  `--user-data-dir=${profile}`,
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
  "--allow-file-access-from-files",
  "--no-first-run",
  "--disable-gpu",
  ...(process.getuid?.() === 0 ? ["--no-sandbox"] : []), // Chromium refuses its sandbox as root
  "about:blank",
];
const browser = spawn(CHROMIUM, args, { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"] });
let stderr = "";
browser.stderr.on("data", (chunk) => (stderr += chunk));

// The pipe carries NUL-terminated JSON messages: fd 3 to Chromium, fd 4 from it.
const toBrowser = browser.stdio[3];
const fromBrowser = browser.stdio[4];
let nextId = 1;
const waiting = new Map();
let buffered = "";
fromBrowser.on("data", (chunk) => {
  buffered += chunk.toString("utf8");
  let end;
  while ((end = buffered.indexOf("\0")) >= 0) {
    const message = JSON.parse(buffered.slice(0, end));
    buffered = buffered.slice(end + 1);
    if (message.id && waiting.has(message.id)) {
      const { resolve: done, reject } = waiting.get(message.id);
      waiting.delete(message.id);
      if (message.error) reject(new Error(`${message.error.message} (${message.error.code})`));
      else done(message.result);
    } else if (message.method === "Runtime.consoleAPICalled") {
      console.log(`  [page] ${message.params.args.map((a) => a.value ?? a.description ?? "").join(" ")}`);
    }
  }
});

function send(method, params = {}, sessionId) {
  const id = nextId++;
  toBrowser.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
  return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let result;
try {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  await send("Runtime.enable", {}, sessionId);
  await send("Page.navigate", { url: PAGE }, sessionId);
  const deadline = Date.now() + TIMEOUT_MS;
  while (Date.now() < deadline) {
    const { result: value } = await send(
      "Runtime.evaluate",
      { expression: "window.result", returnByValue: true },
      sessionId,
    );
    if (value.value !== undefined) {
      result = value.value;
      break;
    }
    await sleep(200);
  }
} catch (error) {
  result = `FAIL: ${error.message}`;
} finally {
  const exited = new Promise((done) => browser.once("exit", done));
  browser.kill();
  await exited; // Chromium writes its profile until it exits
  rmSync(profile, { recursive: true, force: true, maxRetries: 3 });
}

if (result === "PASS") {
  console.log("browser call test: 1 passed, 0 failed");
} else {
  console.log(result ?? `FAIL: no result within ${TIMEOUT_MS} ms`);
  if (!result && stderr) console.log(stderr.slice(-2000));
  console.log("browser call test: 0 passed, 1 failed");
  process.exit(1);
}
