import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { settle } from "./fakes.js";
import { loggedIn } from "./logged-in.js";

const MESSAGE = { messageId: "m1", conversationId: "c1", seq: "1", sender: "alice", text: "hi", requestId: "" };

async function reconnect(context: Awaited<ReturnType<typeof loggedIn>>): Promise<void> {
  await context.clock.advance(context.clock.pending()[0] ?? 0);
  context.server.link.accept();
  await settle();
}

describe("messages", () => {
  it("send: SendMessage with a fresh requestId, to a subscriber or a conversation", async () => {
    const { wac, server } = await loggedIn();
    const sending = wac.messages.send({ to: "bob" }, "hi <b>bob</b>");
    await settle();
    const params = server.link.last("MessagesService.SendMessage").params as Record<string, string>;
    assert.equal(params.recipient, "bob");
    assert.equal(params.text, "hi <b>bob</b>");
    assert.match(params.requestId!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(wac.messages.pending.length, 1);
    await server.answer("MessagesService.SendMessage", { ...MESSAGE, requestId: params.requestId });
    assert.equal((await sending).messageId, "m1");
    assert.deepEqual(wac.messages.pending, []);

    const again = wac.messages.send({ conversationId: "c1" }, "more");
    await settle();
    const second = server.link.last("MessagesService.SendMessage").params as Record<string, string>;
    assert.equal(second.conversationId, "c1");
    assert.notEqual(second.requestId, params.requestId);
    await server.answer("MessagesService.SendMessage", MESSAGE);
    await again;
  });

  it("a send made while wac is out of reach is queued and sent, with the same requestId, once it is back", async () => {
    const context = await loggedIn({ requestTimeoutMs: 1_000 });
    const { wac, server, clock } = context;
    server.link.fail();
    await settle();
    assert.equal(wac.state, "suspended");
    let done = false;
    const sending = wac.messages.send({ to: "bob" }, "while away", { requestId: "r-1" });
    void sending.then(() => (done = true));
    // Past the request's own timeout: still queued, not failed.
    await clock.advance(1_000);
    await settle();
    assert.equal(done, false);
    assert.deepEqual(
      wac.messages.pending.map((p) => p.requestId),
      ["r-1"],
    );
    await reconnect(context);
    server.link.reply(server.link.last("EventsService.Subscribe").id, {});
    await settle();
    const sent = server.link.requests("MessagesService.SendMessage");
    assert.equal(sent.length, 1);
    assert.equal((sent[0]!.params as Record<string, string>).requestId, "r-1");
    await server.answer("MessagesService.SendMessage", { ...MESSAGE, requestId: "r-1" });
    assert.equal((await sending).requestId, "r-1");
    assert.deepEqual(wac.messages.pending, []);
  });

  it("a refusal fails the send and takes it out of the queue; the session's end fails the queued ones", async () => {
    const { wac, server } = await loggedIn();
    const refused = wac.messages.send({ to: "bob" }, "x".repeat(5000)).catch((e: Error) => e);
    await settle();
    server.link.replyError(server.link.last("MessagesService.SendMessage").id, 3, "text: is 5000 bytes of UTF-8", "INVALID_ARGUMENT");
    const error = (await refused) as { status?: string };
    assert.equal(error.status, "INVALID_ARGUMENT");
    assert.deepEqual(wac.messages.pending, []);

    // Unanswered when the session is revoked: it fails with the session's end.
    const queued = wac.messages.send({ to: "bob" }, "later").catch((e: Error) => e);
    await settle();
    server.event({ sessionRevoked: { sessionId: "s1", reason: "revoked" } });
    const ended = (await queued) as { status?: string };
    assert.equal(ended.status, "UNAUTHENTICATED");
    assert.deepEqual(wac.messages.pending, []);
  });

  it("re-emits chat's events", async () => {
    const { wac, server } = await loggedIn();
    const seen: string[] = [];
    wac.messages.on("received", (e) => seen.push(`received ${e.message?.text}`));
    wac.messages.on("read", (e) => seen.push(`read ${e.username} ${e.seq}`));
    wac.messages.on("deleted", (e) => seen.push(`deleted ${e.messageId}`));
    wac.messages.on("conversationChanged", (e) => seen.push(`changed ${e.conversation?.title}`));
    server.event({ messageReceived: { message: MESSAGE, conversation: { conversationId: "c1", type: "DIRECT" } } });
    server.event({ messageRead: { conversationId: "c1", username: "bob", messageId: "m1", seq: "1" } });
    server.event({ messageDeleted: { conversationId: "c1", messageId: "m1", seq: "1" } });
    server.event({ conversationChanged: { conversation: { conversationId: "g1", title: "Team" }, added: ["alice"] } });
    await settle();
    assert.deepEqual(seen, ["received hi", "read bob 1", "deleted m1", "changed Team"]);
  });

  it("typing: goes to wac at most every 3 s, stops once; a sent message lets it go again", async () => {
    const { wac, server, clock } = await loggedIn();
    const typing = wac.messages.typing("c1");
    await settle();
    assert.deepEqual(server.link.last("MessagesService.SetTyping").params, { conversationId: "c1", typing: true });
    await server.answer("MessagesService.SetTyping", {});
    await typing;
    // More keystrokes within 3 s: nothing more to wac.
    await wac.messages.typing("c1");
    await clock.advance(2_999);
    await wac.messages.typing("c1");
    assert.equal(server.link.requests("MessagesService.SetTyping").length, 1);
    await clock.advance(1);
    void wac.messages.typing("c1");
    await settle();
    assert.equal(server.link.requests("MessagesService.SetTyping").length, 2);
    await server.answer("MessagesService.SetTyping", {});
    // Stopping: once, and only after typing.
    void wac.messages.typing("c1", false);
    await settle();
    assert.deepEqual(server.link.last("MessagesService.SetTyping").params, { conversationId: "c1", typing: false });
    await server.answer("MessagesService.SetTyping", {});
    await wac.messages.typing("c1", false);
    assert.equal(server.link.requests("MessagesService.SetTyping").length, 3);

    // Sending a message ends it: the next keystroke says so at once.
    void wac.messages.typing("c1");
    await settle();
    await server.answer("MessagesService.SetTyping", {});
    const sending = wac.messages.send({ conversationId: "c1" }, "done");
    await settle();
    await server.answer("MessagesService.SendMessage", MESSAGE);
    await sending;
    void wac.messages.typing("c1");
    await settle();
    assert.equal(server.link.requests("MessagesService.SetTyping").length, 5);
  });

  it("typing events: shown for as long as wac says, from when they came; ended by false or a message", async () => {
    const { wac, server, clock } = await loggedIn();
    const seen: string[] = [];
    wac.messages.on("typing", (t) => seen.push(`${t.conversationId}: ${t.usernames.join(",")}`));
    // wac's clock is an hour off the page's: only the span counts.
    const typing = (username: string, on = true) =>
      server.event({
        time: "2020-01-01T00:00:00Z",
        typing: { conversationId: "c1", username, typing: on, expireTime: "2020-01-01T00:00:06Z" },
      });
    typing("bob");
    typing("carol");
    await settle();
    assert.deepEqual(wac.messages.typingIn("c1"), ["bob", "carol"]);
    await clock.advance(4_000);
    typing("bob"); // still typing: his 6 s start again
    await settle();
    await clock.advance(2_000);
    assert.deepEqual(wac.messages.typingIn("c1"), ["bob"]); // carol's 6 s are over
    typing("bob", false);
    await settle();
    assert.deepEqual(wac.messages.typingIn("c1"), []);
    typing("carol");
    await settle();
    server.event({ messageReceived: { message: { ...MESSAGE, sender: "carol" }, conversation: { conversationId: "c1" } } });
    await settle();
    assert.deepEqual(wac.messages.typingIn("c1"), []);
    assert.deepEqual(seen, ["c1: bob", "c1: bob,carol", "c1: bob", "c1: ", "c1: carol", "c1: "]);

    // The session's end: nobody types any more, and no timer is left behind.
    typing("bob");
    await settle();
    server.event({ sessionRevoked: { sessionId: "s1", reason: "revoked" } });
    await settle();
    assert.deepEqual(wac.messages.typingIn("c1"), []);
    assert.deepEqual(clock.pending(), []);
  });
});
