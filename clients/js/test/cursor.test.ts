import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EventCursor } from "../src/transport/cursor.js";

describe("EventCursor", () => {
  it("starts at afterSeq 0 and follows accepted events", () => {
    const cursor = new EventCursor();
    assert.equal(cursor.afterSeq, "0");
    assert.equal(cursor.accept("1"), true);
    assert.equal(cursor.accept("2"), true);
    assert.equal(cursor.afterSeq, "2");
  });

  it("drops duplicates and older events", () => {
    const cursor = new EventCursor();
    cursor.accept("5");
    assert.equal(cursor.accept("5"), false);
    assert.equal(cursor.accept("3"), false);
    assert.equal(cursor.accept("6"), true);
    assert.equal(cursor.afterSeq, "6");
  });

  it("compares int64 seqs exactly beyond 2^53", () => {
    const cursor = new EventCursor();
    assert.equal(cursor.accept("9007199254740993"), true);
    assert.equal(cursor.accept("9007199254740992"), false);
    assert.equal(cursor.accept("9007199254740994"), true);
    assert.equal(cursor.afterSeq, "9007199254740994");
  });

  it("delivers events without a seq but does not move", () => {
    const cursor = new EventCursor();
    cursor.accept("4");
    assert.equal(cursor.accept(undefined), true);
    assert.equal(cursor.accept("garbage"), true);
    assert.equal(cursor.afterSeq, "4");
  });

  it("forgets its position on reset, accepting any seq after", () => {
    const cursor = new EventCursor();
    cursor.accept("100");
    cursor.reset();
    assert.equal(cursor.afterSeq, "0");
    assert.equal(cursor.accept("7"), true);
  });
});
