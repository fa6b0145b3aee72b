import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { backoffDelay, DEFAULT_BACKOFF } from "../src/transport/backoff.js";

const options = { initialMs: 500, maxMs: 30_000, multiplier: 2, jitter: 0.5 };

describe("backoffDelay", () => {
  it("doubles the ceiling per attempt", () => {
    const top = (attempt: number) => backoffDelay(attempt, options, () => 0);
    assert.deepEqual([0, 1, 2, 3, 4].map(top), [500, 1000, 2000, 4000, 8000]);
  });

  it("is capped", () => {
    assert.equal(backoffDelay(20, options, () => 0), 30_000);
    assert.equal(backoffDelay(1000, options, () => 0), 30_000);
  });

  it("jitters between half the ceiling and the ceiling", () => {
    assert.equal(backoffDelay(3, options, () => 1), 2000);
    assert.equal(backoffDelay(3, options, () => 0.5), 3000);
    for (let i = 0; i < 200; i++) {
      const delay = backoffDelay(3, options);
      assert.ok(delay >= 2000 && delay <= 4000, `${delay}`);
    }
  });

  it("has no jitter when told so, and clamps a silly jitter", () => {
    assert.equal(backoffDelay(2, { ...options, jitter: 0 }, () => 1), 2000);
    assert.equal(backoffDelay(2, { ...options, jitter: 7 }, () => 1), 0);
  });

  it("defaults to 500 ms doubling up to 30 s", () => {
    assert.deepEqual(DEFAULT_BACKOFF, options);
  });
});
