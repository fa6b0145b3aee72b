// The demo softphone: plain DOM code on top of the SDK, to read alongside
// clients/js/README.md. Everything it does goes through one Wac instance.
//
// Query parameters: ?transport=auto|websocket|http (the SDK's option) and
// ?user=NAME (fills the login form), ?gateway=wss://HOST/sip (a SIP over
// WebSocket gateway for numbers and SIP addresses, instead of the one wac
// announces at login; its domain is ?sipDomain=DOMAIN, by default this page's
// host name).
//
// For tests and the curious, window.wacDemo holds the Wac instance (`wac`),
// the call shown in the call panel (`call`, kept after it ends), and each
// call's end (`ended`: {callId, direction, peer, reason, endedBy}); the
// conference this tab is in (`conference`, kept after it ends: its
// `peerConnection` publishes, each of its `participants` has its own) and
// each conference's end (`conferencesEnded`: {conferenceId, reason, endedBy});
// `startChat(username)` opens the chat with a user (see "messages" below).
import { Wac, WacError } from "/sdk/wac.js";

const params = new URLSearchParams(location.search);
const TRANSPORTS = ["auto", "websocket", "http"];
const transport = TRANSPORTS.includes(params.get("transport")) ? params.get("transport") : "auto";

const STATUS_TEXT = {
  AVAILABLE: "Available",
  AWAY: "Away",
  BUSY: "Busy",
  DO_NOT_DISTURB: "Do not disturb",
  OFFLINE: "Offline",
};
const END_TEXT = {
  COMPLETED: "Call ended",
  REJECTED: "Declined",
  BUSY: "Busy",
  CANCELLED: "Cancelled",
  NO_ANSWER: "No answer",
  ANSWERED_ELSEWHERE: "Answered on another device",
  FAILED: "Call failed",
  UNAVAILABLE: "Not reachable",
  OPERATOR: "Ended by an operator",
};
const CONNECTION_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  suspended: "Reconnecting…",
  disconnected: "Disconnected",
};
const USERNAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const PHONE_NUMBER = /^\+?[\d\s().-]{3,}$/;

const GATEWAY_TEXT = {
  registering: "Gateway: registering…",
  registered: "Gateway: registered",
  unregistered: "Gateway: not registered",
  failed: "Gateway: refused",
};
const gateway = gatewayOption();

const wac = new Wac({
  transport,
  deviceName: browserName(),
  // Per tab: a reload keeps the session, and two tabs can be two users.
  storage: sessionStorage,
  // ?gateway= wins over the gateway wac announces at login (the usual way).
  ...(gateway ? { gateway } : {}),
});

const demo = { wac, call: null, ended: [], dial, answer, conference: null, conferencesEnded: [], startConference, joinConference, startChat, openConversation };
window.wacDemo = demo;

// ---- DOM helpers ----

const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

/** Makes an element: el("button", {type: "button", onclick}, "Call"). Text is never parsed as HTML. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

function describe(error) {
  if (error instanceof WacError) return `${error.message} (${error.status})`;
  return error instanceof Error ? error.message : String(error);
}

let errorTimer = null;
function showError(error) {
  const banner = byTestId("error");
  banner.textContent = describe(error);
  banner.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => (banner.hidden = true), 10_000);
  console.warn("wac demo:", error);
}

function clearError() {
  byTestId("error").hidden = true;
}

/** Runs an action from a button or form; its failure goes to the banner. */
async function act(action) {
  try {
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

function browserName() {
  const agent = navigator.userAgent;
  const name = /Firefox\//.test(agent) ? "Firefox" : /Edg\//.test(agent) ? "Edge" : /Chrom/.test(agent) ? "Chrome" : /Safari\//.test(agent) ? "Safari" : "a browser";
  return `${name} (wac demo)`;
}

const me = () => wac.session?.subscriber?.username ?? "";

/** The SIP gateway from ?gateway= and ?sipDomain=, or null. */
function gatewayOption() {
  const url = params.get("gateway");
  if (!url) return null;
  if (!/^wss?:\/\/[^/]/.test(url)) {
    console.warn("wac demo: ?gateway= must be a ws: or wss: URL; calling without a gateway");
    return null;
  }
  return { url, domain: params.get("sipDomain") || location.hostname };
}

// ---- connection and session ----

function renderConnection() {
  const node = byTestId("connection-state");
  node.dataset.state = wac.state;
  node.dataset.transport = wac.transport;
  const over = wac.state === "connected" ? ` · ${wac.transport === "http" ? "HTTP" : "WebSocket"}` : "";
  node.querySelector(".label").textContent = CONNECTION_TEXT[wac.state] + over;
}

/** The gateway registration indicator: hidden without a gateway, or logged out. */
function renderGateway() {
  const node = byTestId("gateway-state");
  const registration = wac.sipRegistration;
  node.hidden = !registration || !wac.session;
  if (!registration) return;
  node.dataset.state = registration.state;
  const why = registration.state === "failed" ? [registration.status, registration.reason].filter(Boolean).join(" ") : "";
  node.querySelector(".label").textContent = GATEWAY_TEXT[registration.state] + (why ? ` (${why})` : "");
}

wac.on("state", renderConnection);
wac.on("fallback", renderConnection);
wac.on("sipRegistration", renderGateway);
wac.on("sessionEnded", ({ reason }) => {
  if (reason !== "logout") showLogin(`Your session ended (${reason}). Please log in again.`);
});
wac.on("error", (error) => console.warn("wac:", error));

async function login(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const button = byTestId("login-submit");
  const message = byTestId("login-error");
  message.hidden = true;
  button.disabled = true;
  try {
    await wac.login(form.username.value.trim(), form.password.value);
    form.password.value = "";
    await enterPhone();
  } catch (error) {
    message.textContent = describe(error);
    message.hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function enterPhone() {
  clearError();
  document.getElementById("login-view").hidden = true;
  document.getElementById("phone-view").hidden = false;
  document.querySelector(".whoami").hidden = false;
  const name = wac.session?.subscriber?.displayName;
  byTestId("me").textContent = name && name !== me() ? `${name} (${me()})` : me();
  renderGateway();
  renderCall();
  await Promise.all([act(loadMyPresence), act(loadContacts), act(loadHistory), act(loadConversations)]);
}

function showLogin(message) {
  for (const call of [...ringing.keys()]) removeIncoming(call);
  for (const id of [...invitations.keys()]) removeInvitation(id);
  renderConference();
  document.getElementById("phone-view").hidden = true;
  document.querySelector(".whoami").hidden = true;
  document.getElementById("login-view").hidden = false;
  renderGateway();
  const note = byTestId("login-error");
  note.textContent = message ?? "";
  note.hidden = !message;
  const username = byTestId("login-username");
  if (!username.value && params.get("user")) username.value = params.get("user");
  (username.value ? byTestId("login-password") : username).focus();
}

async function logout() {
  await wac.logout();
  showLogin();
}

// ---- presence ----

/** The last presence seen per username (from reads and from events). */
const presences = new Map();

async function loadMyPresence() {
  const mine = await wac.presence.get(me());
  if (mine) onPresence(mine);
}

async function setPresence(event) {
  event.preventDefault();
  const form = event.currentTarget;
  await act(async () => onPresence(await wac.presence.set(form.status.value, form.note.value.trim())));
}

function onPresence(presence) {
  if (!presence?.username) return;
  presences.set(presence.username, presence);
  if (presence.username === me()) {
    const form = byTestId("presence-form");
    const status = presence.status ?? "OFFLINE";
    // The aggregate of all my devices. A call makes it BUSY for a while: that
    // is not what this device published, so the selector keeps its choice.
    if (presence.reason !== "IN_CALL" && document.activeElement !== form.status && status in STATUS_TEXT) {
      form.status.value = status;
    }
    byTestId("my-presence").textContent = `Others see: ${presenceText(presence)}`;
  }
  const selector = `[data-subscriber="${CSS.escape(presence.username)}"] [data-testid="presence-dot"]`;
  for (const dot of document.querySelectorAll(selector)) paintDot(dot, presence);
}

function presenceText(presence) {
  if (!presence) return "presence not shared with you";
  const status = presence.status ?? "OFFLINE";
  let text = STATUS_TEXT[status] ?? status;
  if (presence.reason === "IN_CALL") text += " (in a call)";
  if (presence.note) text += ` — ${presence.note}`;
  return text;
}

function paintDot(dot, presence) {
  dot.dataset.status = presence?.status ?? "UNKNOWN";
  const text = presenceText(presence);
  dot.setAttribute("aria-label", text);
  dot.title = text;
  const label = dot.parentElement?.querySelector(".presence-text");
  if (label) label.textContent = text;
}

wac.on("presence", onPresence);

// ---- contacts ----

let contacts = [];
const selected = new Set(); // usernames ticked for a conference

async function loadContacts() {
  contacts = await wac.contacts.all();
  renderContacts();
  const usernames = [...new Set(contacts.map((c) => c.subscriber).filter(Boolean))];
  if (usernames.length) for (const presence of await wac.presence.get(usernames)) onPresence(presence);
}

function renderContacts() {
  // Selected contacts that were deleted are no longer selected.
  for (const username of [...selected]) if (!contacts.some((c) => c.subscriber === username)) selected.delete(username);
  renderSelection();
  const list = byTestId("contacts-list");
  list.replaceChildren(
    ...[...contacts]
      .sort((a, b) => Number(Boolean(b.favorite)) - Number(Boolean(a.favorite)))
      .map(contactItem),
  );
  byTestId("contacts-empty").hidden = contacts.length > 0;
  renderDirectoryButtons();
}

function contactItem(contact) {
  const target = contact.subscriber || contact.phoneNumbers?.[0];
  const detail = contact.subscriber ? `@${contact.subscriber}` : contact.phoneNumbers?.join(", ") || contact.emails?.join(", ") || "";
  const dot = el("span", { class: "dot", role: "img", "data-testid": "presence-dot" });
  const select = contact.subscriber
    ? el("input", {
        type: "checkbox",
        "data-testid": "contact-select",
        "aria-label": `Invite ${contact.displayName || contact.subscriber} to a conference`,
        checked: selected.has(contact.subscriber),
        onchange: (event) => {
          if (event.currentTarget.checked) selected.add(contact.subscriber);
          else selected.delete(contact.subscriber);
          renderSelection();
        },
      })
    : null;
  const item = el(
    "li",
    { "data-testid": "contact", dataset: { contactId: contact.contactId, subscriber: contact.subscriber || undefined } },
    select,
    contact.subscriber ? dot : el("span", { class: "dot none", "aria-hidden": "true" }),
    el(
      "div",
      { class: "who" },
      el("span", { class: "name" }, contact.displayName || contact.subscriber || "?"),
      el("span", { class: "detail" }, detail),
      contact.subscriber ? el("span", { class: "presence-text" }) : null,
    ),
    el(
      "div",
      { class: "actions" },
      target ? el("button", { type: "button", "data-testid": "contact-call", onclick: () => act(() => dial(target)) }, "Call") : null,
      contact.subscriber
        ? el("button", { type: "button", "data-testid": "contact-chat", onclick: () => act(() => startChat(contact.subscriber)) }, "Chat")
        : null,
      el(
        "button",
        {
          type: "button",
          class: "icon",
          "data-testid": "contact-favorite",
          "aria-pressed": String(Boolean(contact.favorite)),
          "aria-label": `Favorite: ${contact.displayName}`,
          onclick: () => act(() => toggleFavorite(contact)),
        },
        contact.favorite ? "★" : "☆",
      ),
      el(
        "button",
        {
          type: "button",
          class: "icon",
          "data-testid": "contact-delete",
          "aria-label": `Delete ${contact.displayName}`,
          onclick: () => act(() => deleteContact(contact)),
        },
        "✕",
      ),
    ),
  );
  if (contact.subscriber) paintDot(dot, presences.get(contact.subscriber));
  return item;
}

async function addContact(fields) {
  const created = await wac.contacts.create(fields);
  contacts = [...contacts.filter((c) => c.contactId !== created.contactId), created];
  renderContacts();
  // Their presence shows if they have added you (the "contacts" policy is
  // the subject's consent); otherwise it arrives when they do.
  if (created.subscriber) onPresence((await wac.presence.get(created.subscriber)) ?? { username: created.subscriber });
  return created;
}

async function addContactByHand(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const fields = { displayName: form.displayName.value.trim() };
  if (form.subscriber.value.trim()) fields.subscriber = form.subscriber.value.trim();
  if (form.phone.value.trim()) fields.phoneNumbers = [form.phone.value.trim()];
  const created = await act(() => addContact(fields));
  if (created) form.reset();
}

async function toggleFavorite(contact) {
  const updated = await wac.contacts.update({ contactId: contact.contactId, favorite: !contact.favorite }, ["favorite"]);
  contacts = contacts.map((c) => (c.contactId === updated.contactId ? updated : c));
  renderContacts();
}

async function deleteContact(contact) {
  await wac.contacts.delete(contact.contactId);
  contacts = contacts.filter((c) => c.contactId !== contact.contactId);
  renderContacts();
}

// Another device of mine changed my contacts: simplest is to read them again.
wac.on("contactChanged", () => act(loadContacts));
// Events were lost while away: reload what they would have told.
wac.on("resync", () => {
  act(loadMyPresence);
  act(loadContacts);
  act(catchUpChat);
});

// ---- directory ----

let directoryEntries = [];

async function searchDirectory(event) {
  event.preventDefault();
  const query = event.currentTarget.query.value.trim();
  if (!query) return;
  await act(async () => showDirectory((await wac.contacts.search(query, { pageSize: 20 })).entries ?? [], query));
}

function showDirectory(entries, query) {
  directoryEntries = entries;
  const list = byTestId("directory-results");
  if (!entries.length) {
    list.replaceChildren(el("li", { class: "muted" }, `Nobody found for “${query}”.`));
    return;
  }
  list.replaceChildren(
    ...entries.map((entry) => {
      const target = entry.subscriber || entry.phoneNumbers?.[0];
      const detail = [entry.subscriber ? `@${entry.subscriber}` : "", entry.department, entry.phoneNumbers?.[0]].filter(Boolean).join(" · ");
      return el(
        "li",
        { "data-testid": "directory-entry", dataset: { entryId: entry.entryId, subscriber: entry.subscriber || undefined } },
        el("div", { class: "who" }, el("span", { class: "name" }, entry.displayName || entry.subscriber || "?"), el("span", { class: "detail" }, detail)),
        el(
          "div",
          { class: "actions" },
          target ? el("button", { type: "button", "data-testid": "directory-call", onclick: () => act(() => dial(target)) }, "Call") : null,
          entry.subscriber && entry.subscriber !== me()
            ? el("button", { type: "button", "data-testid": "directory-chat", onclick: () => act(() => startChat(entry.subscriber)) }, "Chat")
            : null,
          el("button", { type: "button", "data-testid": "directory-add", onclick: () => act(() => addFromDirectory(entry)) }, "Add"),
        ),
      );
    }),
  );
  renderDirectoryButtons();
}

/** "Add" becomes "Added" for entries already in the contacts. */
function renderDirectoryButtons() {
  for (const item of byTestId("directory-results").querySelectorAll('[data-testid="directory-entry"]')) {
    const entry = directoryEntries.find((e) => e.entryId === item.dataset.entryId);
    const known = entry && contacts.some((c) => (entry.subscriber ? c.subscriber === entry.subscriber : c.displayName === entry.displayName));
    const button = byTestId("directory-add", item);
    button.disabled = Boolean(known);
    button.textContent = known ? "Added" : "Add";
  }
}

function addFromDirectory(entry) {
  const fields = { displayName: entry.displayName || entry.subscriber };
  if (entry.subscriber) fields.subscriber = entry.subscriber;
  if (entry.phoneNumbers?.length) fields.phoneNumbers = entry.phoneNumbers;
  if (entry.emails?.length) fields.emails = entry.emails;
  return addContact(fields);
}

// ---- calls ----

let current = null; // the call in the call panel
const ringing = new Map(); // incoming calls not answered yet → their list item
let clockTimer = null;

/**
 * What to call for what was typed: a tel:/sip: URI as it is; a number or a
 * name through the contacts and the directory (a wac user's number reaches
 * them in the browser); else a username as it is.
 */
async function resolveTarget(text) {
  const typed = text.trim();
  if (/^(tel|sips?):/i.test(typed)) return typed;
  const lower = typed.toLowerCase();
  const contact = contacts.find((c) => c.subscriber === lower || c.displayName?.toLowerCase() === lower);
  if (contact?.subscriber) return contact.subscriber;
  if (contact?.phoneNumbers?.length) return telUri(contact.phoneNumbers[0]);
  const isNumber = PHONE_NUMBER.test(typed);
  if (USERNAME.test(typed) && !isNumber) return typed;
  const { entries = [] } = await wac.contacts.search(typed, { pageSize: 10 });
  const people = entries.filter((e) => e.subscriber);
  const exact = people.find((e) => e.displayName?.toLowerCase() === lower || e.subscriber === lower);
  if (exact) return exact.subscriber;
  if (people.length === 1) return people[0].subscriber;
  if (isNumber) return telUri(typed);
  if (people.length > 1) {
    showDirectory(entries, typed);
    throw new Error(`Several people match “${typed}”: pick one in the directory.`);
  }
  throw new Error(`Nobody called “${typed}” in the directory.`);
}

function telUri(number) {
  return `tel:${number.replace(/[\s().-]/g, "")}`;
}

/** Places a call from the dial box, the contacts, the directory or the history. */
async function dial(text, { video = byTestId("dial-video").checked } = {}) {
  if (current && current.state !== "ended") await current.hangup();
  clearError();
  const target = await resolveTarget(text);
  showPending(target);
  try {
    const call = await wac.call(target, { audio: true, video });
    track(call);
    show(call);
    return call;
  } catch (error) {
    showPending(null);
    throw error;
  }
}

async function dialFromForm(event) {
  event.preventDefault();
  await act(() => dial(event.currentTarget.target.value));
}

wac.on("incomingCall", (call) => {
  track(call);
  if (byTestId("auto-answer").checked && (!current || current.state === "ended")) {
    act(() => answer(call));
    return;
  }
  const video = Boolean(call.info.media?.video);
  const item = el(
    "li",
    { class: "card ringing", "data-testid": "incoming-call", dataset: { callId: call.id, caller: call.peer } },
    el("p", {}, el("b", { "data-testid": "incoming-caller" }, call.callerDisplayName || call.peer), ` is calling${video ? " (video)" : ""}…`),
    el("button", { type: "button", class: "primary", "data-testid": "answer", onclick: () => act(() => answer(call)) }, "Answer"),
    el("button", { type: "button", class: "danger", "data-testid": "reject", onclick: () => act(() => reject(call)) }, "Decline"),
  );
  ringing.set(call, item);
  byTestId("incoming-calls").append(item);
});

function removeIncoming(call) {
  ringing.get(call)?.remove();
  ringing.delete(call);
}

async function answer(call) {
  removeIncoming(call);
  if (current && current !== call && current.state !== "ended") await current.hangup();
  show(call);
  await call.answer({ audio: true, video: Boolean(call.info.media?.video) });
  renderCall();
}

async function reject(call) {
  removeIncoming(call);
  await call.reject();
  await loadHistory();
}

async function hangup() {
  if (!current) return;
  await current.hangup();
  await loadHistory(); // the call ended here at once; the server has recorded it now
}

/** Before CreateCall answers there is no Call object yet: show who is being called. */
function showPending(target) {
  const panel = byTestId("call-panel");
  if (target === null) {
    renderCall();
    return;
  }
  current = null;
  panel.dataset.state = "calling";
  delete panel.dataset.endReason;
  byTestId("call-peer").textContent = nameOf(target);
  byTestId("call-status").textContent = "Calling…";
}

/** Follows a call from its start (placed, or offered to this device) to its end. */
function track(call) {
  const ifShown = (action) => (...args) => call === current && action(...args);
  call.on("state", ifShown(renderCall));
  call.on("remoteHold", ifShown(renderCall));
  call.on("remoteStream", ifShown((stream) => playIn(byTestId("remote-video"), stream)));
  call.on("ended", (info) => onEnded(call, info));
  if (call.ended) onEnded(call, call.ended); // ended at once: nobody to reach
}

function onEnded(call, info) {
  removeIncoming(call);
  if (demo.ended.some((e) => e.callId === call.id && e.direction === call.direction)) return;
  demo.ended.push({ callId: call.id, direction: call.direction, peer: call.peer, reason: info.reason, endedBy: info.endedBy ?? "" });
  if (call === current) renderCall();
  // A local end is recorded once its request is answered (see hangup and reject).
  if (info.endedBy !== me() && wac.session) act(loadHistory);
}

/** Puts a call in the call panel. */
function show(call) {
  current = call;
  demo.call = call;
  if (call.remoteStream) playIn(byTestId("remote-video"), call.remoteStream);
  watchMedia(call);
  renderCall();
}

/** The peer connection exists once the call is placed or answered. */
function watchMedia(call) {
  if (call.peerConnection) {
    call.peerConnection.addEventListener("connectionstatechange", renderCall);
    return;
  }
  if (call.state !== "ended") setTimeout(() => watchMedia(call), 100);
}

function playIn(video, stream) {
  if (video.srcObject !== stream) video.srcObject = stream;
  // Autoplay with sound needs a user gesture; clicking Call or Answer was one.
  video.play?.().catch(() => {});
}

function renderCall() {
  const panel = byTestId("call-panel");
  const call = current;
  const state = call?.state ?? "idle";
  panel.dataset.state = state;
  const media = call?.peerConnection?.connectionState ?? "new";
  panel.dataset.media = state === "ended" ? "closed" : media;
  if (call) panel.dataset.via = call.via;
  if (call?.ended) panel.dataset.endReason = call.ended.reason;
  else delete panel.dataset.endReason;
  byTestId("call-peer").textContent = call ? call.callerDisplayName || nameOf(call.peer) : "No call";
  byTestId("call-status").textContent = callStatus(call, media);

  const live = state === "active";
  const button = (id, enabled, text) => {
    const node = byTestId(id);
    node.disabled = !enabled;
    if (text) node.textContent = text;
  };
  button("mute", live, live && call.isMuted("audio") ? "Unmute" : "Mute");
  button("camera", live && hasTrack(call, "video"), live && call.isMuted("video") ? "Camera on" : "Camera off");
  button("hold", live, live && call.onHold ? "Resume" : "Hold");
  button("hangup", state === "calling" || state === "ringing" || live);
  byTestId("mute").setAttribute("aria-pressed", String(live && call.isMuted("audio")));
  byTestId("camera").setAttribute("aria-pressed", String(live && call.isMuted("video")));
  byTestId("hold").setAttribute("aria-pressed", String(live && call.onHold));

  const local = byTestId("local-video");
  const stream = state === "ended" ? null : call?.localStream ?? null;
  if (local.srcObject !== stream) local.srcObject = stream;
  if (!call || state === "ended") byTestId("remote-video").srcObject = null;
  panel.classList.toggle("has-video", Boolean(stream && hasTrack(call, "video")) || live);

  clearInterval(clockTimer);
  if (live) clockTimer = setInterval(() => (byTestId("call-status").textContent = callStatus(current, current?.peerConnection?.connectionState)), 1000);
}

function callStatus(call, media) {
  if (!call) return "Idle";
  if (call.state === "ended") {
    const { reason, endedBy } = call.ended ?? {};
    const by = endedBy && endedBy !== me() && endedBy !== "wac" ? ` by ${endedBy}` : "";
    const sip = call.ended?.sipStatus ? `, SIP ${call.ended.sipStatus}` : "";
    return `${END_TEXT[reason] ?? reason}${by} (${reason}${sip})`;
  }
  if (call.state === "calling") return "Calling…";
  if (call.state === "ringing") return call.direction === "outgoing" ? "Ringing…" : "Answering…";
  const parts = [media === "connected" ? `In call ${elapsed(call)}` : "Connecting media…"];
  if (call.onHold) parts.push("on hold");
  if (call.remoteOnHold) parts.push(`${call.peer} put you on hold`);
  if (call.isMuted("audio")) parts.push("muted");
  return parts.join(" · ");
}

function elapsed(call) {
  const since = Date.parse(call.info.answerTime ?? "");
  if (Number.isNaN(since)) return "";
  const seconds = Math.max(0, Math.round((Date.now() - since) / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/** A username as the contacts or the directory name it. */
function nameOf(username) {
  const known = contacts.find((c) => c.subscriber === username) ?? directoryEntries.find((e) => e.subscriber === username);
  return known?.displayName || username;
}

function hasTrack(call, kind) {
  return Boolean(call?.localStream?.getTracks().some((t) => t.kind === kind));
}

async function toggleHold() {
  if (!current) return;
  byTestId("hold").disabled = true; // until the other side answered the new offer
  try {
    await (current.onHold ? current.resume() : current.hold());
  } finally {
    renderCall();
  }
}

function toggleMute(kind) {
  if (!current) return;
  if (current.isMuted(kind)) current.unmute(kind);
  else current.mute(kind);
  renderCall();
}

// ---- conferences ----

let conference = null; // the conference in the conference panel
const invitations = new Map(); // conference id → its invitation's list item
const tiles = new Map(); // username ("" for this device) → its tile in the grid

function renderSelection() {
  const names = [...selected].map(nameOf);
  byTestId("conference-selection").textContent = names.length
    ? `Inviting: ${names.join(", ")}`
    : "Tick contacts (☐ beside their names) to invite them.";
}

/** Creates a conference with the ticked contacts and joins it. */
async function startConference(title, invitees = [...selected], { video = byTestId("conference-with-video").checked } = {}) {
  if (!invitees.length) throw new Error("Tick at least one contact to invite.");
  const info = await wac.conferences.create({ title, invitees, media: video ? "AUDIO_VIDEO" : "AUDIO" });
  return joinConference(info.conferenceId, info);
}

async function startFromForm(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const started = await act(() => startConference(form.title.value.trim()));
  if (started) {
    form.reset();
    selected.clear();
    renderContacts();
  }
}

/** Joins a conference (leaving the one this tab is in); the camera too if the conference has video. */
async function joinConference(conferenceId, info = {}) {
  removeInvitation(conferenceId);
  if (conference && conference.state !== "ended") await conference.leave().catch(showError);
  clearError();
  const panel = byTestId("conference-panel");
  panel.dataset.state = "joining";
  byTestId("conference-title").textContent = info.title || "Conference";
  byTestId("conference-status").textContent = "Joining…";
  try {
    const joined = await wac.conferences.join(conferenceId, { audio: true });
    showConference(joined);
    act(loadHistory); // the conference's entry, open
    return joined;
  } catch (error) {
    renderConference(); // back to the last conference's end, or idle
    throw error;
  }
}

function showConference(joined) {
  conference = joined;
  demo.conference = joined;
  for (const tile of tiles.values()) tile.remove();
  tiles.clear();
  const mine = (listener) => (...args) => joined === conference && listener(...args);
  joined.on("participantJoined", mine(renderConference));
  joined.on("participantLeft", mine(renderConference));
  joined.on("participantStream", mine(renderConference));
  joined.on("state", mine(renderConference));
  joined.on("updated", mine(renderConference));
  joined.on("screenShare", mine(renderConference)); // the browser's "Stop sharing" too
  joined.on("error", (error) => console.warn("wac demo: conference:", error));
  joined.on("ended", (info) => {
    demo.conferencesEnded.push({ conferenceId: joined.id, reason: info.reason, endedBy: info.endedBy ?? "" });
    if (joined === conference) renderConference();
    if (wac.session) act(loadHistory); // the conference's entry, as it stands now
  });
  renderConference();
}

function renderConference() {
  const panel = byTestId("conference-panel");
  const c = conference;
  const state = c?.state ?? "idle";
  panel.dataset.state = state;
  if (c) panel.dataset.conferenceId = c.id;
  if (c?.ended) panel.dataset.endReason = c.ended.reason;
  else delete panel.dataset.endReason;
  byTestId("conference-title").textContent = c ? c.info.title || "Conference" : "Conference";
  byTestId("conference-status").textContent = conferenceStatus(c);

  const live = state === "joined";
  const button = (id, enabled, text, pressed) => {
    const node = byTestId(id);
    node.disabled = !enabled;
    node.textContent = text;
    node.setAttribute("aria-pressed", String(Boolean(pressed)));
  };
  const hasVideo = Boolean(c?.localStream?.getTracks().some((t) => t.kind === "video"));
  button("conference-mute", live, live && c.isMuted("audio") ? "Unmute" : "Mute", live && c.isMuted("audio"));
  button("conference-camera", live && hasVideo, live && c.isMuted("video") ? "Camera on" : "Camera off", live && c.isMuted("video"));
  button("conference-share", live, live && c.screenSharing ? "Stop sharing" : "Share screen", live && c.screenSharing);
  button("conference-leave", state === "joined" || state === "reconnecting", "Leave");
  button("conference-end", (state === "joined" || state === "reconnecting") && c.info.creator === me(), "End for everyone");
  renderGrid(state === "ended" || !c ? null : c);
}

function conferenceStatus(c) {
  if (!c) return "Not in a conference";
  if (c.state === "ended") {
    const { reason, endedBy, error } = c.ended ?? {};
    const text = { left: "You left", ended: "The conference ended", kicked: "You were taken out", error: "Lost the conference" }[reason] ?? reason;
    const by = endedBy && endedBy !== me() ? ` by ${endedBy}` : "";
    return `${text}${by}${error ? `: ${describe(error)}` : ""}`;
  }
  if (c.state === "joining") return "Joining…";
  if (c.state === "reconnecting") return "Reconnecting…";
  const others = c.participants.size;
  const parts = [others ? `With ${others} other${others === 1 ? "" : "s"}` : "Waiting for the others…"];
  if (c.isMuted("audio")) parts.push("muted");
  if (c.screenSharing) parts.push("sharing the screen");
  return parts.join(" · ");
}

/** One tile per participant, this device's first; a tile's video element is kept while its participant stays. */
function renderGrid(c) {
  const wanted = new Map();
  if (c) {
    wanted.set("", { label: "You", stream: c.screenStream ?? c.localStream, local: true });
    for (const [username, participant] of c.participants) wanted.set(username, { label: nameOf(username), stream: participant.stream, local: false });
  }
  for (const [key, tile] of tiles) {
    if (wanted.has(key)) continue;
    tile.remove();
    tiles.delete(key);
  }
  const grid = byTestId("conference-grid");
  for (const [key, { label, stream, local }] of wanted) {
    let tile = tiles.get(key);
    if (!tile) {
      const video = el("video", { autoplay: true, playsinline: true, "data-testid": "conference-video", "aria-label": `${label}'s video` });
      video.muted = local; // never play this device's own microphone back
      const dataset = { username: key || me(), local: String(local) };
      tile = el("figure", { class: local ? "tile local" : "tile", "data-testid": "conference-tile", dataset }, video, el("figcaption", {}, label));
      tiles.set(key, tile);
      grid.append(tile);
    }
    tile.querySelector("figcaption").textContent = label;
    tile.classList.toggle("screen", local && Boolean(c?.screenSharing));
    tile.dataset.hasStream = String(Boolean(stream));
    const video = tile.querySelector("video");
    if (stream) playIn(video, stream);
    else video.srcObject = null;
  }
}

async function toggleScreen() {
  if (!conference) return;
  try {
    if (conference.screenSharing) await conference.stopScreenShare();
    else await conference.shareScreen();
  } finally {
    renderConference();
  }
}

function toggleConferenceMedia(kind) {
  if (!conference) return;
  const muted = conference.isMuted(kind);
  if (kind === "audio") conference.mute(!muted);
  else conference.cameraOff(!muted);
  renderConference();
}

wac.conferences.on("invited", ({ conference: info, creatorDisplayName }) => {
  const id = info?.conferenceId;
  if (!id || invitations.has(id) || conference?.id === id) return;
  const video = info.media === "AUDIO_VIDEO";
  const item = el(
    "li",
    { class: "card ringing", "data-testid": "conference-invitation", dataset: { conferenceId: id, creator: info.creator ?? "" } },
    el(
      "p",
      {},
      el("b", { "data-testid": "conference-inviter" }, creatorDisplayName || nameOf(info.creator ?? "")),
      " invites you to ",
      el("b", { "data-testid": "conference-invitation-title" }, `“${info.title ?? ""}”`),
      video ? " (video)" : "",
    ),
    el("button", { type: "button", class: "primary", "data-testid": "conference-join", onclick: () => act(() => joinConference(id, info)) }, "Join"),
    el("button", { type: "button", "data-testid": "conference-dismiss", onclick: () => removeInvitation(id) }, "Dismiss"),
  );
  invitations.set(id, item);
  byTestId("conference-invitations").append(item);
});

// An invitation to a conference that ended is gone.
wac.conferences.on("ended", ({ conference: info }) => removeInvitation(info?.conferenceId));

function removeInvitation(id) {
  invitations.get(id)?.remove();
  invitations.delete(id);
}

// ---- history ----

async function loadHistory() {
  const { calls = [] } = await wac.request("CallsService.ListCalls", { pageSize: 15 });
  const rows = calls.map(historyRow);
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No calls yet.")));
  byTestId("call-history").replaceChildren(...rows);
}

function historyRow(info) {
  if (info.via === "CONFERENCE") return conferenceRow(info);
  const outgoing = info.caller === me();
  const peer = (outgoing ? info.callee : info.caller) ?? "";
  const when = new Date(info.createTime ?? Date.now());
  let result = info.state === "ENDED" ? END_TEXT[info.endReason] ?? info.endReason : info.state === "ACTIVE" ? "In progress" : "Ringing";
  if (info.endReason === "COMPLETED" && info.duration) result += ` · ${Math.round(parseFloat(info.duration))} s`;
  return el(
    "tr",
    { "data-testid": "history-row", dataset: { callId: info.callId, reason: info.endReason ?? info.state, via: info.via === "SIP" ? "sip" : "wapi" } },
    el("td", {}, timeCell(when)),
    el("td", {}, el("span", { class: "direction", "aria-label": outgoing ? "outgoing" : "incoming" }, outgoing ? "↗ " : "↙ "), nameOf(peer), info.media?.video ? " (video)" : ""),
    el("td", {}, result),
    el("td", {}, el("button", { type: "button", class: "link", onclick: () => act(() => dial(peer)) }, "Call back")),
  );
}

/** A conference in the history: its title (text, never HTML), who came, and a way back in while it is open. */
function conferenceRow(info) {
  const summary = info.conference ?? {};
  const when = new Date(info.createTime ?? Date.now());
  const came = (summary.attendees ?? []).map(nameOf).join(", ");
  let result = info.state === "ENDED" ? (info.endReason === "NO_ANSWER" ? "Nobody joined" : END_TEXT[info.endReason] ?? info.endReason) : "Open";
  if (info.state === "ENDED" && info.duration && info.endReason !== "NO_ANSWER") result += ` · ${Math.round(parseFloat(info.duration))} s`;
  if (came) result += ` · ${came}`;
  const rejoin = info.state === "ACTIVE"
    ? el("button", { type: "button", class: "link", onclick: () => act(() => joinConference(info.callId, summary)) }, "Join")
    : "";
  return el(
    "tr",
    { "data-testid": "history-row", dataset: { callId: info.callId, reason: info.endReason ?? info.state, via: "conference" } },
    el("td", {}, timeCell(when)),
    el("td", {}, el("span", { class: "direction", "aria-label": "conference" }, "👥 "), summary.title ?? "Conference", info.media?.video ? " (video)" : ""),
    el("td", {}, result),
    el("td", {}, rejoin),
  );
}

function timeCell(when) {
  const today = when.toDateString() === new Date().toDateString();
  return el("time", { datetime: when.toISOString() }, today ? when.toLocaleTimeString() : when.toLocaleString());
}

// ---- messages ----
//
// The conversations with unread badges; one thread open at a time, its
// messages oldest first, each text put in as text (never as HTML). A send
// shows at once as "sending" and stays queued by the SDK while wac is out
// of reach; a tick says wac took it, two that the other side read it.

const conversations = new Map(); // id → the Conversation as ListConversations gave it
let thread = null; // {conversationId?, to?, title}: the open thread (a new chat has no id until its first message)
let threadMessages = []; // the open thread's messages, oldest first: {message, state}
const peerRead = new Map(); // conversation id → the highest seq another member read

async function loadConversations() {
  const { conversations: listed = [] } = await wac.messages.conversations({ pageSize: 50 });
  conversations.clear();
  for (const conversation of listed) conversations.set(conversation.conversationId, conversation);
  renderConversations();
}

function conversationTitle(conversation) {
  if (conversation.type === "GROUP") return conversation.title || "Group";
  if (conversation.type === "SYSTEM") return "From your operator";
  return nameOf(conversation.peer ?? "");
}

function renderConversations() {
  const items = [...conversations.values()].map((conversation) => {
    const unread = conversation.unreadCount ?? 0;
    const open = thread?.conversationId === conversation.conversationId;
    return el(
      "li",
      {
        "data-testid": "chat-conversation",
        dataset: { conversationId: conversation.conversationId, peer: conversation.peer || undefined },
        "aria-current": String(open),
        onclick: () => act(() => openConversation(conversation.conversationId)),
      },
      el(
        "div",
        { class: "who" },
        el("span", { class: "name" }, conversationTitle(conversation)),
        el("span", { class: "last" }, conversation.lastMessage?.text ?? ""),
      ),
      unread && !open ? el("span", { class: "badge", "data-testid": "chat-unread", "aria-label": `${unread} unread` }, String(unread)) : null,
    );
  });
  byTestId("chat-conversations").replaceChildren(...items);
  byTestId("chat-empty").hidden = items.length > 0 || Boolean(thread);
}

/** Opens the chat with a user: its one-to-one conversation, or a new one made by the first message. */
async function startChat(username) {
  const peer = /^\+[\d\s().-]+$/.test(username) ? `tel:${username.replace(/[\s().-]/g, "")}` : username;
  const known = [...conversations.values()].find((c) => c.type === "DIRECT" && (c.peer === username || c.peer === peer));
  if (known) return openConversation(known.conversationId);
  thread = { to: username, title: nameOf(username) };
  threadMessages = [];
  renderThread();
  byTestId("chat-text").focus();
}

async function openConversation(conversationId) {
  const conversation = conversations.get(conversationId) ?? (await wac.messages.conversation(conversationId));
  conversations.set(conversationId, conversation);
  thread = { conversationId, title: conversationTitle(conversation) };
  const { messages = [] } = await wac.messages.history(conversationId, { pageSize: 50 });
  threadMessages = messages.reverse().map((message) => ({ message, state: "sent" }));
  renderThread();
  renderConversations();
  await markThreadRead();
}

/**
 * Events were lost while away (longer than wac keeps them): the list again,
 * and the open thread's messages after the last one it shows, page by page.
 */
async function catchUpChat() {
  await loadConversations();
  const opened = thread;
  if (!opened?.conversationId) return;
  const afterSeq = threadMessages.reduce((seq, m) => Math.max(seq, Number(m.message.seq ?? 0)), 0);
  let pageToken;
  do {
    const page = await wac.messages.history(opened.conversationId, { afterSeq, pageSize: 100, ...(pageToken ? { pageToken } : {}) });
    if (opened !== thread) return;
    for (const message of page.messages ?? []) {
      if (!threadMessages.some((m) => m.message.messageId === message.messageId)) threadMessages.push({ message, state: "sent" });
    }
    pageToken = page.nextPageToken;
  } while (pageToken);
  renderThread();
  await markThreadRead();
}

async function markThreadRead() {
  const last = [...threadMessages].reverse().find((m) => m.state === "sent" && m.message.sender !== me());
  const conversation = conversations.get(thread?.conversationId);
  if (!last || !conversation || !conversation.unreadCount) return;
  const read = await wac.messages.markRead(conversation.conversationId, last.message.messageId);
  conversations.set(read.conversationId, { ...conversation, ...read });
  renderConversations();
}

function renderThread() {
  const panel = byTestId("chat-thread");
  panel.hidden = !thread;
  if (!thread) return;
  renderTyping();
  panel.dataset.conversationId = thread.conversationId ?? "";
  byTestId("chat-thread-title").textContent = thread.title;
  const readUpTo = peerRead.get(thread.conversationId) ?? 0;
  byTestId("chat-messages").replaceChildren(
    ...threadMessages.map(({ message, state }) => {
      const mine = message.sender === me() || state === "sending";
      const read = mine && state === "sent" && Number(message.seq) <= readUpTo;
      return el(
        "li",
        {
          "data-testid": "chat-message",
          class: [mine ? "mine" : "", message.system ? "system" : ""].join(" ").trim() || undefined,
          dataset: { seq: message.seq ?? "", sender: message.sender ?? "", state },
        },
        el("span", { class: "text", "data-testid": "chat-message-text" }, message.text ?? ""),
        el(
          "span",
          { class: "meta" },
          mine ? "" : `${message.system ? "operator" : nameOf(message.sender)} · `,
          new Date(message.createTime ?? Date.now()).toLocaleTimeString(),
          mine
            ? el("span", { class: "tick", "data-testid": "chat-tick", dataset: { read: String(read) }, "aria-label": state === "sending" ? "sending" : read ? "read" : "sent" }, state === "sending" ? " …" : read ? " ✓✓" : " ✓")
            : null,
        ),
      );
    }),
  );
  byTestId("chat-messages").lastElementChild?.scrollIntoView?.({ block: "nearest" });
}

/** "bob is typing…" under the open thread, from the SDK's typing state. */
function renderTyping() {
  const line = byTestId("chat-typing");
  const typers = thread?.conversationId ? wac.messages.typingIn(thread.conversationId) : [];
  line.hidden = typers.length === 0;
  line.textContent = typers.length ? `${typers.map(nameOf).join(", ")} ${typers.length > 1 ? "are" : "is"} typing…` : "";
}

/** Each keystroke in the thread's box: the SDK tells wac at most every 3 s; an emptied box stops it. */
function typedInThread(event) {
  if (!thread?.conversationId) return; // a new chat has no conversation until its first message
  const active = event.currentTarget.value.trim() !== "";
  wac.messages.typing(thread.conversationId, active).catch(() => {}); // a lost typing sign is harmless
}

/** Makes a group of the ticked contacts (the conference panel's selection) and opens it. */
async function startGroup(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const members = [...selected];
  if (!members.length) throw new Error("Tick at least one contact to chat with.");
  const group = await wac.messages.createGroup(form.title.value.trim(), members);
  form.reset();
  conversations.set(group.conversationId, group);
  await openConversation(group.conversationId);
}

async function sendFromForm(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const text = form.text.value;
  if (!thread || !text.trim()) return;
  form.reset();
  const target = thread.conversationId ? { conversationId: thread.conversationId } : { to: thread.to };
  const entry = { message: { text, sender: me(), createTime: new Date().toISOString() }, state: "sending" };
  const opened = thread;
  threadMessages.push(entry);
  renderThread();
  try {
    const message = await wac.messages.send(target, text);
    entry.message = message;
    entry.state = "sent";
    if (opened === thread && !thread.conversationId) {
      thread.conversationId = message.conversationId; // the first message made the conversation
      await loadConversations();
    }
  } catch (error) {
    threadMessages.splice(threadMessages.indexOf(entry), 1);
    showError(error);
  }
  if (opened === thread) renderThread();
}

wac.messages.on("received", ({ message, conversation }) => {
  if (!message) return;
  const known = conversations.get(message.conversationId);
  const open = thread?.conversationId === message.conversationId;
  if (open && !threadMessages.some((m) => m.message.messageId === message.messageId)) {
    threadMessages.push({ message, state: "sent" });
    renderThread();
  }
  if (!known) {
    act(loadConversations);
    return;
  }
  const mine = message.sender === me();
  conversations.set(message.conversationId, {
    ...known,
    ...(conversation?.title ? { title: conversation.title } : {}),
    lastMessage: message,
    unreadCount: (known.unreadCount ?? 0) + (mine ? 0 : 1),
  });
  renderConversations();
  if (open && !mine) act(markThreadRead); // read as it arrives in the open thread
});

wac.messages.on("read", ({ conversationId, username, seq }) => {
  if (username === me()) {
    act(loadConversations); // read on another device of mine: the badge follows
    return;
  }
  peerRead.set(conversationId, Math.max(peerRead.get(conversationId) ?? 0, Number(seq)));
  if (thread?.conversationId === conversationId) renderThread();
});

wac.messages.on("deleted", ({ conversationId, messageId }) => {
  if (thread?.conversationId === conversationId) {
    threadMessages = threadMessages.filter((m) => m.message.messageId !== messageId);
    renderThread();
  }
  act(loadConversations);
});

wac.messages.on("conversationChanged", () => act(loadConversations));

wac.messages.on("typing", ({ conversationId }) => {
  if (thread?.conversationId === conversationId) renderTyping();
});

// ---- wiring ----

byTestId("login-form").addEventListener("submit", login);
byTestId("logout").addEventListener("click", () => act(logout));
byTestId("presence-form").addEventListener("submit", setPresence);
byTestId("presence-status").addEventListener("change", () => byTestId("presence-form").requestSubmit());
byTestId("contact-form").addEventListener("submit", addContactByHand);
byTestId("directory-form").addEventListener("submit", searchDirectory);
byTestId("dial-form").addEventListener("submit", dialFromForm);
byTestId("mute").addEventListener("click", () => toggleMute("audio"));
byTestId("camera").addEventListener("click", () => toggleMute("video"));
byTestId("hold").addEventListener("click", () => act(toggleHold));
byTestId("hangup").addEventListener("click", () => act(hangup));
byTestId("history-refresh").addEventListener("click", () => act(loadHistory));
byTestId("chat-refresh").addEventListener("click", () => act(loadConversations));
byTestId("chat-form").addEventListener("submit", sendFromForm);
byTestId("chat-text").addEventListener("input", typedInThread);
byTestId("chat-group-form").addEventListener("submit", (event) => act(() => startGroup(event)));
// A username, or a number or sip: URI: wac sends those through the SIP gateway.
byTestId("chat-to-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const to = event.currentTarget.to.value.trim();
  event.currentTarget.reset();
  if (to) act(() => startChat(to));
});
byTestId("conference-form").addEventListener("submit", startFromForm);
byTestId("conference-mute").addEventListener("click", () => toggleConferenceMedia("audio"));
byTestId("conference-camera").addEventListener("click", () => toggleConferenceMedia("video"));
byTestId("conference-share").addEventListener("click", () => act(toggleScreen));
byTestId("conference-leave").addEventListener("click", () => act(() => conference?.leave()));
byTestId("conference-end").addEventListener("click", () => act(() => conference && wac.conferences.end(conference.id)));

renderConnection();
if (wac.resume()) act(enterPhone);
else showLogin();
