// Types of icehub.js, the browser client of the icehub signaling hub. Hand-written; keep in
// step with icehub.js.

/** Any JSON value: what `send` relays and `message` delivers. */
export type JSONValue = null | boolean | number | string | JSONValue[] | {[key: string]: JSONValue};

/** Removes the listener that `on` added. */
export type Unsubscribe = () => void;

/** An error from the hub (or from this library) with the hub's stable code. */
export interface HubError extends Error {
  /** "full", "bad-room", "not-member", "too-many-rooms", "closed", ... */
  code: string;
  room?: string;
}

export interface HubOptions {
  /** API key, when the hub requires one (sent as ?key=). */
  key?: string;
  /** First reconnect delay in ms (default 250); doubles after every failed attempt. */
  minDelay?: number;
  /** Cap of the reconnect delay in ms (default 5000). */
  maxDelay?: number;
  /** Each delay is shortened by a random part up to this fraction (default 0.5). */
  jitter?: number;
  /** A connection that has not been welcomed after this many ms is dropped and retried (default 10000). */
  connectTimeout?: number;
  /** Messages kept while disconnected (default 256); `send` returns false beyond. */
  queueLimit?: number;
  /** Leave all rooms when the page is unloaded, so the others hear peer-left at once (default true). */
  closeOnPageHide?: boolean;
}

export type HubState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface HubEvents {
  /** Every state change. On "reconnecting": the close code and the delay before the next attempt. */
  state: {state: HubState; resumed?: boolean; code?: number; reason?: string; delay?: number; attempt?: number};
  /**
   * A session began. resumed: the hub kept the previous session (same id, same rooms, missed
   * messages follow). Otherwise the id is new and the library joins its rooms again.
   */
  welcome: {id: string; resumed: boolean; previousId: string | null; rooms: string[]};
  /** Credentials to use from now on (on every welcome and before the previous ones expire). */
  'ice-servers': {iceServers: RTCIceServer[]; ttl: number};
  /** This client is in room (again, after a new session); peers are the others there. */
  joined: {room: string; id: string; peers: string[]};
  left: {room: string};
  full: {room: string};
  'peer-joined': {room: string; id: string};
  /** stale: the peer was not there any more when a new session re-joined the room. */
  'peer-left': {room: string; id: string; stale?: boolean};
  message: {room: string; from: string; data: JSONValue};
  error: {code: string; message: string; request?: string; room?: string};
}

export declare class Hub {
  /** This session's peer id: the same after a resume, a new one after a new session. */
  readonly id: string | null;
  readonly state: HubState;
  /** The current RTCIceServer list, STUN and TURN with credentials. */
  readonly iceServers: RTCIceServer[];
  /** Lifetime of those credentials in seconds. */
  readonly ttl: number;
  /** Whether the last welcome resumed the previous session. */
  readonly resumed: boolean;
  /** Rooms this client is in (or is joining again after a reconnect). */
  readonly rooms: string[];

  on<K extends keyof HubEvents>(type: K, listener: (event: HubEvents[K]) => void): Unsubscribe;
  off<K extends keyof HubEvents>(type: K, listener: (event: HubEvents[K]) => void): void;

  /** Peer ids in room as far as this client knows. */
  peers(room: string): string[];
  /** Enters room; stays in it across reconnects until leave(). Rejects with a HubError (e.g. code "full"). */
  join(room: string): Promise<{room: string; id: string; peers: string[]}>;
  leave(room: string): Promise<void>;
  /**
   * Relays data to the others in room, or to peer `to` only. Queued while disconnected and
   * sent in order afterwards; false when the queue is full. Throws when not in room.
   */
  send(room: string, data: JSONValue, options?: {to?: string}): boolean;
  /** Asks for fresh credentials now. */
  refreshIceServers(): Promise<RTCIceServer[]>;
  /** Skips the rest of the reconnect delay. */
  reconnectNow(): void;
  /** Leaves every room and closes the connection for good. */
  close(): void;
}

/**
 * Connects to the hub: url is its WebSocket (wss://host/ws), its origin (https://host) or a
 * path on this page's host (default "/ws").
 */
export declare function connect(url?: string, options?: HubOptions): Hub;

/** GET /api/ice-servers of the hub at url (its origin or any URL on it). */
export declare function getIceServers(url?: string, options?: {key?: string}): Promise<{iceServers: RTCIceServer[]; ttl: number}>;

export interface CallOptions {
  /** Fix this side's role in offer collisions (the two sides must differ); by default it is decided for you. */
  polite?: boolean;
  /** Media only through TURN (iceTransportPolicy "relay"). */
  relayOnly?: boolean;
  /** The local media to send. */
  stream?: MediaStream | null;
  /** Open a negotiated data channel, call.channel (default true). */
  data?: boolean;
  /** Further RTCConfiguration fields; iceServers always come from the hub. */
  config?: RTCConfiguration;
  /** Restart ICE after this many ms in "disconnected" (default 3000); "failed" restarts at once. */
  restartDelay?: number;
  /** An offer unanswered for this many ms is rolled back and made again (default 10000). */
  offerTimeout?: number;
}

export type CallState = 'waiting' | RTCPeerConnectionState;

export interface CallRemote {
  /** The other call's id. */
  sid: string;
  /** Its current hub peer id; null while unknown (after a new session on either side). */
  id: string | null;
  /** Its hub session ended (peer-left); the call keeps the connection until it comes back. */
  gone: boolean;
}

export interface CallEvents {
  state: {state: CallState};
  track: {track: MediaStreamTrack; streams: readonly MediaStream[]; stream: MediaStream};
  /** A new data channel (one per RTCPeerConnection). */
  channel: RTCDataChannel;
  /** The other party, or null after it hung up. */
  remote: CallRemote | null;
  /**
   * An ICE restart began; reason: "failed", "disconnected", "new hub session",
   * "credentials expiring", "requested", or "still <state>" for a retry.
   */
  restart: {reason: string};
  error: Error;
}

export interface CallStats {
  state: RTCPeerConnectionState;
  /** Candidate types of the selected pair: "host", "srflx", "prflx" or "relay". */
  local: string | null;
  remote: string | null;
  localAddress: string | null;
  remoteAddress: string | null;
  /** "udp" or "tcp"; relayProtocol is how this side reaches its TURN server. */
  protocol: string | null;
  relayProtocol: string | null;
  /** Current round-trip time of the pair, ms. */
  rtt: number | null;
  /** Bits per second since the previous stats() call (null on the first). */
  sendBitrate: number | null;
  receiveBitrate: number | null;
  availableOutgoingBitrate: number | null;
  framesDecoded: number;
  framesPerSecond: number;
  iceRestarts: number;
}

export declare class Call {
  /** This call's id; unlike the hub peer id it survives new hub sessions. */
  readonly sid: string;
  readonly pc: RTCPeerConnection | null;
  readonly channel: RTCDataChannel | null;
  /** The remote tracks, for a <video>'s srcObject. */
  readonly remoteStream: MediaStream | null;
  readonly remote: CallRemote | null;
  readonly state: CallState | 'closed';
  /** Whether this side yields in an offer collision. */
  readonly polite: boolean;
  /** What negotiation did so far: offers made, collisions met, ICE restarts, connections created. */
  readonly counters: {
    pcs: number; offers: number; answers: number; collisions: number;
    ignoredOffers: number; rollbacks: number; iceRestarts: number;
  };

  on<K extends keyof CallEvents>(type: K, listener: (event: CallEvents[K]) => void): Unsubscribe;
  off<K extends keyof CallEvents>(type: K, listener: (event: CallEvents[K]) => void): void;
  /** Summary of getStats() for the page to show. */
  stats(): Promise<CallStats | null>;
  restartIce(): void;
  /** Hangs up: the other side hears it and waits for a new party. The hub stays connected. */
  close(): void;
}

/**
 * A two-party call in room (joined if needed) with perfect negotiation, trickle ICE, renewed
 * credentials and ICE restarts. Both sides call it; either may start first.
 */
export declare function call(hub: Hub, room: string, options?: CallOptions): Call;
