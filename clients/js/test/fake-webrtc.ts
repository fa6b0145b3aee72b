/** A fake of the browser's WebRTC, enough to drive the SDK's signalling. */
import type { WebRtcEnvironment } from "../src/calls/webrtc.js";

export class FakeTrack {
  enabled = true;
  stopped = false;
  readyState: "live" | "ended" = "live";
  private readonly listeners: Array<() => void> = [];
  constructor(readonly kind: "audio" | "video") {}
  stop(): void {
    this.stopped = true;
    this.readyState = "ended";
  }
  addEventListener(type: string, listener: () => void): void {
    if (type === "ended") this.listeners.push(listener);
  }
  /** The test's control: the source ended (the browser's "stop sharing"). */
  end(): void {
    this.readyState = "ended";
    for (const listener of this.listeners) listener();
  }
}

export class FakeStream {
  constructor(readonly tracks: FakeTrack[] = []) {}
  getTracks(): FakeTrack[] {
    return this.tracks;
  }
  addTrack(track: FakeTrack): void {
    this.tracks.push(track);
  }
}

class FakeTransceiver {
  direction: RTCRtpTransceiverDirection;
  currentDirection: RTCRtpTransceiverDirection | null = null;
  readonly sender: {
    track: FakeTrack | null;
    dtmf: { canInsertDTMF: boolean; tones: string[]; insertDTMF(t: string): void } | null;
    replaceTrack(track: FakeTrack | null): Promise<void>;
  };
  constructor(
    readonly kind: string,
    track: FakeTrack | null,
    direction: RTCRtpTransceiverDirection,
  ) {
    this.direction = direction;
    const tones: string[] = [];
    const sender: FakeTransceiver["sender"] = {
      track,
      dtmf: kind === "audio" ? { canInsertDTMF: true, tones, insertDTMF: (t: string) => tones.push(t) } : null,
      replaceTrack: async (next) => {
        sender.track = next;
      },
    };
    this.sender = sender;
  }
}

export class FakePeerConnection {
  static instances: FakePeerConnection[] = [];
  /** When set, every setLocalDescription gathers this candidate before it resolves (the earliest a browser could). */
  static gatherOnSetLocal: string | null = null;
  signalingState: RTCSignalingState = "stable";
  iceConnectionState: RTCIceConnectionState = "new";
  localDescription: RTCSessionDescriptionInit | null = null;
  remoteDescription: RTCSessionDescriptionInit | null = null;
  onicecandidate: ((event: { candidate: unknown }) => void) | null = null;
  ontrack: ((event: unknown) => void) | null = null;
  oniceconnectionstatechange: (() => void) | null = null;
  readonly transceivers: FakeTransceiver[] = [];
  readonly candidates: Array<RTCIceCandidateInit | undefined> = [];
  readonly offerOptions: Array<RTCOfferOptions | undefined> = [];
  closed = false;
  private count = 0;

  constructor(readonly configuration: RTCConfiguration) {
    FakePeerConnection.instances.push(this);
  }

  private sdp(kind: string): string {
    this.count += 1;
    const media = this.transceivers.map((t) => `m=${t.kind} 9 UDP/TLS/RTP/SAVPF 0\r\na=${t.direction}`);
    return [`v=0 ${kind} ${this.count}`, ...media].join("\r\n") + "\r\n";
  }

  async createOffer(options?: RTCOfferOptions): Promise<RTCSessionDescriptionInit> {
    this.offerOptions.push(options);
    return { type: "offer", sdp: this.sdp("offer") };
  }

  async createAnswer(): Promise<RTCSessionDescriptionInit> {
    if (this.signalingState !== "have-remote-offer") throw new Error("no remote offer");
    return { type: "answer", sdp: this.sdp("answer") };
  }

  async setLocalDescription(description: RTCSessionDescriptionInit): Promise<void> {
    if (description.type === "rollback") {
      this.signalingState = "stable";
      return;
    }
    this.localDescription = description;
    this.signalingState = description.type === "offer" ? "have-local-offer" : "stable";
    if (FakePeerConnection.gatherOnSetLocal) this.gather(FakePeerConnection.gatherOnSetLocal);
  }

  async setRemoteDescription(description: RTCSessionDescriptionInit): Promise<void> {
    if (description.type === "answer" && this.signalingState !== "have-local-offer") throw new Error("unexpected answer");
    this.remoteDescription = description;
    this.signalingState = description.type === "offer" ? "have-remote-offer" : "stable";
    if (description.type === "offer" && this.transceivers.length === 0) {
      // The offer's media sections become transceivers, as in a browser.
      for (const kind of description.sdp?.match(/m=(audio|video)/g) ?? []) {
        this.transceivers.push(new FakeTransceiver(kind.slice(2), null, "recvonly"));
      }
    }
  }

  async addIceCandidate(candidate?: RTCIceCandidateInit): Promise<void> {
    if (!this.remoteDescription) throw new Error("no remote description");
    this.candidates.push(candidate);
  }

  addTrack(track: FakeTrack): unknown {
    const free = this.transceivers.find((t) => t.kind === track.kind && !t.sender.track);
    if (free) {
      free.sender.track = track;
      free.direction = "sendrecv";
      return free.sender;
    }
    const transceiver = new FakeTransceiver(track.kind, track, "sendrecv");
    this.transceivers.push(transceiver);
    return transceiver.sender;
  }

  addTransceiver(kind: string, init?: { direction?: RTCRtpTransceiverDirection }): unknown {
    const transceiver = new FakeTransceiver(kind, null, init?.direction ?? "sendrecv");
    this.transceivers.push(transceiver);
    return transceiver;
  }

  getTransceivers(): FakeTransceiver[] {
    return this.transceivers;
  }

  getSenders(): FakeTransceiver["sender"][] {
    return this.transceivers.map((t) => t.sender);
  }

  close(): void {
    this.closed = true;
    this.signalingState = "closed";
  }

  // ---- the test's controls ----

  gather(candidate: string | null): void {
    this.onicecandidate?.({
      candidate: candidate === null ? null : { candidate, sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "uf" },
    });
  }

  setIceState(state: RTCIceConnectionState): void {
    this.iceConnectionState = state;
    this.oniceconnectionstatechange?.();
  }

  remoteTrack(kind: "audio" | "video", stream: FakeStream): void {
    this.ontrack?.({ track: new FakeTrack(kind), streams: [stream] });
  }
}

export function fakeWebRtc() {
  const mediaRequests: MediaStreamConstraints[] = [];
  const displayRequests: DisplayMediaStreamOptions[] = [];
  const env: WebRtcEnvironment = {
    RTCPeerConnection: FakePeerConnection as unknown as WebRtcEnvironment["RTCPeerConnection"],
    getUserMedia: async (constraints) => {
      mediaRequests.push(constraints);
      const tracks: FakeTrack[] = [];
      if (constraints.audio) tracks.push(new FakeTrack("audio"));
      if (constraints.video) tracks.push(new FakeTrack("video"));
      return new FakeStream(tracks) as unknown as MediaStream;
    },
    createMediaStream: () => new FakeStream() as unknown as MediaStream,
    getDisplayMedia: async (options) => {
      displayRequests.push(options);
      return new FakeStream([new FakeTrack("video")]) as unknown as MediaStream;
    },
  };
  return { env, mediaRequests, displayRequests };
}
