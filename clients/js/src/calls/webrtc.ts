/**
 * The browser's WebRTC API as the SDK uses it, gathered in one object so
 * that it can be swapped for a fake in tests and looked up only when a call
 * starts (the SDK loads in places without WebRTC, e.g. Node).
 */
import { Status, WacError } from "../errors.js";
import type { IceCandidate } from "../gen/wac.js";

export interface WebRtcEnvironment {
  RTCPeerConnection: new (configuration: RTCConfiguration) => RTCPeerConnection;
  getUserMedia(constraints: MediaStreamConstraints): Promise<MediaStream>;
  /** Makes a remote stream when a track arrives without one. */
  createMediaStream(): MediaStream;
  /** The screen, a window or a tab, for a conference's screen share; absent where the browser cannot. */
  getDisplayMedia?(options: DisplayMediaStreamOptions): Promise<MediaStream>;
}

export function browserWebRtc(): WebRtcEnvironment {
  const scope = globalThis as {
    RTCPeerConnection?: WebRtcEnvironment["RTCPeerConnection"];
    MediaStream?: new () => MediaStream;
    navigator?: { mediaDevices?: MediaDevices };
  };
  const PeerConnection = scope.RTCPeerConnection;
  const devices = scope.navigator?.mediaDevices;
  if (!PeerConnection || !devices) {
    throw new WacError(Status.FAILED_PRECONDITION, "WebRTC is not available here (RTCPeerConnection, mediaDevices)");
  }
  return {
    RTCPeerConnection: PeerConnection,
    getUserMedia: (constraints) => devices.getUserMedia(constraints),
    createMediaStream: () => new scope.MediaStream!(),
    ...(typeof devices.getDisplayMedia === "function" ? { getDisplayMedia: (options) => devices.getDisplayMedia(options) } : {}),
  };
}

/** An RTCIceCandidate as the proto's IceCandidate, leaving out what is unset. */
export function candidateToProto(candidate: RTCIceCandidateInit): IceCandidate {
  const proto: IceCandidate = { candidate: candidate.candidate ?? "" };
  if (candidate.sdpMid) proto.sdpMid = candidate.sdpMid;
  if (candidate.sdpMLineIndex !== null && candidate.sdpMLineIndex !== undefined) {
    proto.sdpMLineIndex = candidate.sdpMLineIndex;
  }
  if (candidate.usernameFragment) proto.usernameFragment = candidate.usernameFragment;
  return proto;
}

/**
 * The proto's IceCandidate as RTCIceCandidateInit. proto3 JSON leaves out
 * zero values, so a missing sdpMLineIndex is 0 (and the browser needs sdpMid
 * or sdpMLineIndex to place the candidate).
 */
export function candidateFromProto(candidate: IceCandidate): RTCIceCandidateInit {
  const init: RTCIceCandidateInit = {
    candidate: candidate.candidate ?? "",
    sdpMLineIndex: candidate.sdpMLineIndex ?? 0,
  };
  if (candidate.sdpMid) init.sdpMid = candidate.sdpMid;
  if (candidate.usernameFragment) init.usernameFragment = candidate.usernameFragment;
  return init;
}

/** Whether an SDP puts the other side's sending on hold: every media section sendonly or inactive. */
export function sdpIsHold(sdp: string): boolean {
  const sections = sdp.split(/\r?\nm=/).slice(1);
  if (sections.length === 0) return false;
  return sections.every((section) => /\r?\na=(sendonly|inactive)\b/.test(`\n${section}`));
}
