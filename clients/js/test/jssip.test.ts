/**
 * The SIP stack on the real JsSIP, over an in-memory JsSIP.Socket where the
 * test plays the gateway: what goes on the wire (the bearer token in the
 * REGISTER, the fresh one in the re-REGISTER) is JsSIP's own doing, given
 * the SDK's configuration and hooks. JsSIP's timers are Node's, mocked here.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { jssipUaFactory } from "../src/sip/ua.js";
import { settle } from "./fakes.js";
import { loggedIn as loggedInOn } from "./logged-in.js";

/** A JsSIP.Socket in memory: what JsSIP sends is kept, the test answers. */
class MemorySocket {
  via_transport = "WSS";
  readonly sip_uri = "sip:wac.test;transport=ws";
  readonly sent: string[] = [];
  private connected = false;
  onconnect: () => void = () => {};
  ondisconnect: (error: boolean, code?: number, reason?: string) => void = () => {};
  ondata: <T>(data: T) => void = () => {};

  constructor(readonly url: string) {}

  connect(): void {
    // Later, as a WebSocket opens: JsSIP reads its register option only after connect() returns.
    setImmediate(() => {
      this.connected = true;
      this.onconnect();
    });
  }

  disconnect(): void {
    this.connected = false;
  }

  send(message: string): boolean {
    this.sent.push(String(message));
    return true;
  }

  isConnected(): boolean {
    return this.connected;
  }

  isConnecting(): boolean {
    return false;
  }

  /** The requests sent with this method, oldest first. */
  requests(method: string): string[] {
    return this.sent.filter((m) => m.startsWith(`${method} `));
  }

  /** Answers a request as a registrar does: the dialog headers back, the Contact with its expiry. */
  answer(request: string, status: number, phrase: string, extra: string[] = []): void {
    const headers = request.split("\r\n\r\n")[0]!.split("\r\n").slice(1);
    const copy = (name: string) => headers.filter((h) => h.toLowerCase().startsWith(`${name.toLowerCase()}:`));
    const to = copy("To")[0]!;
    const lines = [
      `SIP/2.0 ${status} ${phrase}`,
      ...copy("Via"),
      ...copy("From"),
      to.includes(";tag=") ? to : `${to};tag=gw1`,
      ...copy("Call-ID"),
      ...copy("CSeq"),
      ...extra,
      "Content-Length: 0",
    ];
    this.ondata(`${lines.join("\r\n")}\r\n\r\n`);
  }
}

function header(message: string, name: string): string | undefined {
  const line = message.split("\r\n").find((h) => h.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  return line?.slice(name.length + 1).trim();
}

async function loggedIn() {
  const sockets: MemorySocket[] = [];
  const { clock, network, wac, registrations } = await loggedInOn({
    gateway: { url: "wss://wac.test/sip", domain: "example.test", registerExpires: 600 },
    createSipUa: jssipUaFactory((url) => {
      const socket = new MemorySocket(url);
      sockets.push(socket);
      return socket;
    }),
  });
  await settle();
  const socket = sockets[0];
  assert.ok(socket, "JsSIP opened its socket");
  const refresh = async (token: string) => {
    await clock.advance(14 * 60_000);
    await settle();
    const request = network.current.last("IdentityService.RefreshSession");
    network.current.reply(request.id, {
      sessionId: "s1",
      accessToken: token,
      refreshToken: `r-${token}`,
      expireTime: new Date(clock.now() + 15 * 60_000).toISOString(),
    });
    await settle();
  };
  return { wac, socket, registrations, refresh };
}

describe("sip: on the real JsSIP", () => {
  beforeEach(() => mock.timers.enable({ apis: ["setTimeout"] }));
  afterEach(() => mock.timers.reset());

  it("REGISTERs with the access token as the bearer, and re-REGISTERs with the refreshed one", async () => {
    const { wac, socket, registrations, refresh } = await loggedIn();
    assert.equal(socket.url, "wss://wac.test/sip");
    const [register] = socket.requests("REGISTER");
    assert.ok(register, "a REGISTER was sent");
    assert.match(register, /^REGISTER sip:example\.test SIP\/2\.0\r\n/);
    assert.equal(header(register, "Authorization"), "Bearer a1");
    assert.match(header(register, "To") ?? "", /<sip:alice@example\.test>/);
    assert.equal(header(register, "Expires"), "600");
    socket.answer(register, 200, "OK", [`Contact: ${header(register, "Contact")}`]);
    await settle();
    assert.deepEqual(wac.sipRegistration, { state: "registered" });

    await refresh("a2");
    assert.equal(socket.requests("REGISTER").length, 1, "a refresh alone sends nothing");
    mock.timers.tick(600_000); // JsSIP's re-REGISTER timer, somewhere in the first half
    await settle();
    const again = socket.requests("REGISTER");
    assert.equal(again.length, 2, "one re-REGISTER");
    assert.equal(header(again[1]!, "Authorization"), "Bearer a2");
    assert.deepEqual(registrations, [{ state: "registering" }, { state: "registered" }]);
  });

  it("sends a REGISTER the gateway refused (401) again with the refreshed token", async () => {
    const { wac, socket, refresh } = await loggedIn();
    const [register] = socket.requests("REGISTER");
    socket.answer(register!, 401, "Unauthorized", ['WWW-Authenticate: Bearer realm="example.test", error="invalid_token"']);
    await settle();
    assert.deepEqual(wac.sipRegistration, { state: "failed", reason: "Authentication Error", status: 401 });
    await refresh("a2");
    const again = socket.requests("REGISTER");
    assert.equal(again.length, 2);
    assert.equal(header(again[1]!, "Authorization"), "Bearer a2");
    socket.answer(again[1]!, 200, "OK", [`Contact: ${header(again[1]!, "Contact")}`]);
    await settle();
    assert.deepEqual(wac.sipRegistration, { state: "registered" });
  });
});
