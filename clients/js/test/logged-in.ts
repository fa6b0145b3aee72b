import type { Session } from "../src/gen/wac.js";
import type { SipRegistration } from "../src/sip/stack.js";
import { Wac, type WacOptions } from "../src/wac.js";
import { fakeWebRtc } from "./fake-webrtc.js";
import { FakeClock, FakeNetwork, settle } from "./fakes.js";

/**
 * alice logged in on a Wac over a fake network and fake WebRTC, her event
 * stream open: what every call test starts from. ``options`` override the
 * Wac's; ``lifetimeMs`` is her access token's, ``announced`` what the
 * server's Session adds (a SIP gateway). ``server`` answers as wac would.
 */
export async function loggedIn(
  options: Partial<WacOptions> = {},
  lifetimeMs = 15 * 60_000,
  announced: Partial<Session> = {},
) {
  const clock = new FakeClock();
  const network = new FakeNetwork();
  const { env, mediaRequests, displayRequests } = fakeWebRtc();
  const wac = new Wac({
    url: "https://wac.test",
    clock,
    random: () => 0,
    createTransport: network.factory,
    webrtc: env,
    ...options,
  });
  const registrations: SipRegistration[] = [];
  wac.on("sipRegistration", (r) => registrations.push(r));
  const login = wac.login("alice", "secret");
  network.current.accept();
  await settle();
  const session: Session = {
    sessionId: "s1",
    accessToken: "a1",
    refreshToken: "r1",
    expireTime: new Date(clock.now() + lifetimeMs).toISOString(),
    subscriber: { username: "alice" },
    ...announced,
  };
  network.current.reply(network.current.last("IdentityService.Login").id, session);
  await login;
  await settle();
  network.current.reply(network.current.last("EventsService.Subscribe").id, {});
  let seq = 0;
  const server = {
    get link() {
      return network.current;
    },
    event(payload: object) {
      network.current.event({ seq: String(++seq), ...payload });
    },
    async answer(method: string, result: unknown = {}) {
      await settle();
      const request = network.current.last(method);
      network.current.reply(request.id, result);
      await settle();
      return request.params;
    },
  };
  return { clock, network, wac, server, mediaRequests, displayRequests, registrations };
}
