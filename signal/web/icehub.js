// icehub.js: the browser client of the icehub signaling hub. An ES module without
// dependencies and without a build step; types in icehub.d.ts next to it. It is one file of
// two parts (connect, then call) on purpose: developers copy or import a single file.
//
//   import {connect, call} from 'https://hub.example.org/icehub.js';
//   const hub = connect('wss://hub.example.org/ws', {key});
//   const c = call(hub, 'room-1', {stream});
//   c.on('track', ({stream}) => video.srcObject = stream);
//
// connect() keeps one WebSocket to the hub alive: it reconnects with exponential backoff and
// jitter, resumes the session with the hub's single-use token (same id, same rooms, missed
// messages replayed) and, when the hub starts a new session instead, joins its rooms again.
// call() runs a two-party RTCPeerConnection over a room with the W3C "perfect negotiation"
// pattern and restarts ICE when the path breaks. Both live in this one file so that it can be
// copied next to an application as it is.

const ROOM = /^[A-Za-z0-9_.-]{1,64}$/;

const HUB_DEFAULTS = {
  key: '',               // API key, sent as ?key= (browsers cannot set headers on WebSockets)
  minDelay: 250,         // first reconnect delay, ms; doubles per failed attempt
  maxDelay: 5000,        // reconnect delay cap, ms
  jitter: 0.5,           // each delay is shortened by up to this fraction, at random
  connectTimeout: 10000, // a connection without welcome after this long is abandoned, ms
  queueLimit: 256,       // messages kept while disconnected
  closeOnPageHide: true, // leave the rooms when the page goes away, so peers hear it at once
};

// Emitter is the small event interface of Hub and Call: on() returns an unsubscribe function.
class Emitter {
  #handlers = new Map();

  on(type, fn) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this.#handlers.get(type)?.delete(fn);
  }

  emit(type, detail) {
    for (const fn of [...(this.#handlers.get(type) || [])]) {
      // A throwing listener is reported but must not break the hub's frame handling.
      try { fn(detail); } catch (err) { setTimeout(() => { throw err; }); }
    }
  }
}

// hubURL accepts ws(s)://host/ws, http(s)://host (the hub's pages) or a path on this page's host.
function hubURL(url) {
  const u = new URL(url || '/ws', globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/') u.pathname = '/ws';
  return u;
}

/** connect opens a self-healing session with the hub at url. */
export function connect(url, options = {}) {
  return new Hub(url, options);
}

export class Hub extends Emitter {
  id = null;          // this session's peer id; the same after a resume, new after a new session
  state = 'connecting'; // connecting | connected | reconnecting | closed
  iceServers = [];    // current RTCIceServer list, renewed by the hub before it expires
  ttl = 0;            // lifetime of those credentials, seconds
  resumed = false;    // whether the last welcome resumed the previous session

  #url; #o; #ws = null; #token = null; #window = 0; #lostAt = 0;
  #attempt = 0; #timer = 0; #connectTimer = 0;
  #rooms = new Map();   // room -> {joined, peers: Set, stale: Set|null, waiters: []}
  #leaving = new Map(); // room -> resolve functions of leave() calls
  #queue = [];          // message frames waiting for a connection or a (re)join
  #iceWaiters = [];

  constructor(url, options = {}) {
    super();
    this.#url = hubURL(url);
    this.#o = {...HUB_DEFAULTS, ...options};
    globalThis.addEventListener?.('online', () => this.reconnectNow());
    if (this.#o.closeOnPageHide) {
      globalThis.addEventListener?.('pagehide', e => { if (!e.persisted) this.close(); });
    }
    this.#dial();
  }

  /** Rooms this client is in, or is joining again after a reconnect. */
  get rooms() { return [...this.#rooms.keys()]; }

  /** Peer ids in room, as far as this client knows. */
  peers(room) { return [...(this.#rooms.get(room)?.peers || [])]; }

  /** join enters room; resolves with {room, id, peers} or rejects (code "full", "bad-room"...). */
  join(room) {
    if (!ROOM.test(room)) return Promise.reject(hubError('bad-room', 'room must be 1-64 characters of A-Z a-z 0-9 _ . -', room));
    let r = this.#rooms.get(room);
    if (r?.joined) return Promise.resolve({room, id: this.id, peers: [...r.peers]});
    if (!r) {
      r = {joined: false, peers: new Set(), stale: null, waiters: []};
      this.#rooms.set(room, r);
      if (this.state === 'connected') this.#write({type: 'join', room});
    }
    return new Promise((resolve, reject) => r.waiters.push({resolve, reject}));
  }

  /** leave leaves room; resolves when the hub confirms, at once when not connected. */
  leave(room) {
    const r = this.#rooms.get(room);
    if (!r) return Promise.resolve();
    this.#rooms.delete(room);
    r.waiters.forEach(w => w.reject(hubError('left', 'left the room before joining it', room)));
    this.#queue = this.#queue.filter(f => f.room !== room);
    if (this.state !== 'connected') return Promise.resolve();
    this.#write({type: 'leave', room});
    return new Promise(resolve => {
      if (!this.#leaving.has(room)) this.#leaving.set(room, []);
      this.#leaving.get(room).push(resolve);
    });
  }

  /**
   * send relays data (any JSON value) to the others in room, or only to peer `to`. While the
   * connection is down, up to queueLimit messages wait and go out, in order, once it is back.
   * Returns false when the message was dropped because that queue is full.
   */
  send(room, data, {to} = {}) {
    if (!this.#rooms.has(room)) throw hubError('not-member', 'join the room before sending to it', room);
    const f = {type: 'message', room, data};
    if (to) f.to = to;
    if (this.#writable() && this.#rooms.get(room).joined && this.#queue.length === 0) {
      this.#write(f);
      return true;
    }
    if (this.#queue.length >= this.#o.queueLimit) return false;
    this.#queue.push(f);
    return true;
  }

  /** refreshIceServers asks for fresh credentials now (the hub also pushes them unasked). */
  refreshIceServers() {
    return new Promise(resolve => {
      this.#iceWaiters.push(resolve);
      if (this.state === 'connected') this.#write({type: 'ice-servers'});
    });
  }

  /** reconnectNow skips the remaining backoff delay (e.g. when the app knows the network is back). */
  reconnectNow() {
    if (this.state !== 'reconnecting' || this.#ws) return;
    clearTimeout(this.#timer);
    this.#dial();
  }

  /** close leaves every room (so the others hear peer-left at once) and stops reconnecting. */
  close() {
    if (this.state === 'closed') return;
    clearTimeout(this.#timer);
    clearTimeout(this.#connectTimer);
    if (this.state === 'connected') for (const room of this.#rooms.keys()) this.#write({type: 'leave', room});
    const ws = this.#ws;
    this.#ws = null;
    this.#token = null;
    if (ws) ws.close(1000, 'bye');
    for (const [room, r] of this.#rooms) r.waiters.forEach(w => w.reject(hubError('closed', 'hub connection closed', room)));
    this.#rooms.clear();
    this.#queue = [];
    this.#setState('closed');
  }

  #dial() {
    const u = new URL(this.#url);
    if (this.#o.key) u.searchParams.set('key', this.#o.key);
    // The token is worth sending only inside the hub's resume window.
    if (this.#token && Date.now() - this.#lostAt < this.#window * 1000) u.searchParams.set('resume', this.#token);
    const ws = this.#ws = new WebSocket(u);
    this.#connectTimer = setTimeout(() => ws.close(), this.#o.connectTimeout);
    ws.onmessage = e => {
      if (ws !== this.#ws) return;
      let f;
      try { f = JSON.parse(e.data); } catch { return; }
      this.#frame(f);
    };
    ws.onclose = e => { if (ws === this.#ws) this.#lost(e.code, e.reason); };
  }

  #lost(code, reason) {
    clearTimeout(this.#connectTimer);
    this.#ws = null;
    if (code === 4000) this.#token = null; // the session was resumed by another connection
    if (this.state === 'connected') this.#lostAt = Date.now();
    for (const [room, resolves] of this.#leaving) {
      resolves.forEach(r => r());
      this.#leaving.delete(room);
    }
    // Exponential backoff with jitter, so that clients cut off together do not return together.
    const base = Math.min(this.#o.maxDelay, this.#o.minDelay * 2 ** this.#attempt++);
    const delay = Math.round(base * (1 - this.#o.jitter * Math.random()));
    this.#timer = setTimeout(() => this.#dial(), delay);
    this.#setState('reconnecting', {code, reason, delay, attempt: this.#attempt});
  }

  // writable tells whether frames can be written now. A socket the server has begun to close is
  // not: what the browser is given then is silently dropped, so messages wait in the queue.
  #writable() {
    return this.state === 'connected' && this.#ws?.readyState === WebSocket.OPEN;
  }

  #write(f) {
    this.#ws.send(JSON.stringify(f));
  }

  #setState(state, detail = {}) {
    this.state = state;
    this.emit('state', {state, ...detail});
  }

  #frame(f) {
    const r = this.#rooms.get(f.room);
    switch (f.type) {
    case 'welcome': return this.#welcome(f);
    case 'joined':
      if (r) this.#joined(f.room, r, f.peers || []); // else left meanwhile: the leave follows
      return;
    case 'full':
      if (r) {
        this.#rooms.delete(f.room);
        r.waiters.forEach(w => w.reject(hubError('full', 'room is full', f.room)));
      }
      this.emit('full', {room: f.room});
      return;
    case 'left':
      this.#leaving.get(f.room)?.forEach(resolve => resolve());
      this.#leaving.delete(f.room);
      this.emit('left', {room: f.room});
      return;
    case 'peer-joined':
      r?.peers.add(f.id);
      this.emit('peer-joined', {room: f.room, id: f.id});
      return;
    case 'peer-left':
      r?.peers.delete(f.id);
      this.emit('peer-left', {room: f.room, id: f.id});
      return;
    case 'message':
      this.emit('message', {room: f.room, from: f.from, data: f.data});
      return;
    case 'ice-servers':
      this.#setIce(f.iceServers, f.ttl);
      return;
    case 'error':
      if (f.request === 'join' && r && !r.joined) {
        if (f.code === 'already-joined') {
          this.#joined(f.room, r, [...r.peers]);
        } else {
          this.#rooms.delete(f.room);
          r.waiters.forEach(w => w.reject(hubError(f.code, f.message, f.room)));
        }
      }
      this.emit('error', {code: f.code, message: f.message, request: f.request, room: f.room});
      return;
    }
  }

  #joined(room, r, peers) {
    r.joined = true;
    r.peers = new Set(peers);
    // After a new session the ids we knew may be gone: tell the app like the hub would have.
    for (const id of r.stale || []) if (!r.peers.has(id)) this.emit('peer-left', {room, id, stale: true});
    r.stale = null;
    const ev = {room, id: this.id, peers: [...r.peers]};
    this.emit('joined', ev);
    r.waiters.splice(0).forEach(w => w.resolve(ev));
    this.#flush();
  }

  #welcome(f) {
    clearTimeout(this.#connectTimer);
    const previousId = this.id;
    this.id = f.id;
    this.#token = f.resume || null;
    this.#window = f.resume_window || 0;
    this.resumed = !!f.resumed;
    this.#attempt = 0;
    this.#setIce(f.iceServers, f.ttl);
    const kept = new Set(this.resumed ? f.rooms || [] : []);
    for (const [room, r] of this.#rooms) {
      if (kept.has(room)) {
        if (!r.joined) this.#joined(room, r, [...r.peers]); // its "joined" was lost with the connection
        continue;
      }
      if (r.joined) r.stale = r.peers;
      r.joined = false;
      r.peers = new Set();
      this.#write({type: 'join', room});
    }
    // Rooms left while the connection was down are still ours on the hub.
    for (const room of kept) if (!this.#rooms.has(room)) this.#write({type: 'leave', room});
    this.state = 'connected';
    this.emit('welcome', {id: f.id, resumed: this.resumed, previousId, rooms: [...kept]});
    this.emit('state', {state: 'connected', resumed: this.resumed});
    this.#flush();
  }

  #setIce(iceServers, ttl) {
    if (!Array.isArray(iceServers)) return;
    this.iceServers = iceServers;
    this.ttl = ttl || 0;
    this.#iceWaiters.splice(0).forEach(resolve => resolve(iceServers));
    this.emit('ice-servers', {iceServers, ttl: this.ttl});
  }

  // flush sends queued messages in order, stopping at the first whose room is not joined yet.
  #flush() {
    this.#queue = this.#queue.filter(f => this.#rooms.has(f.room));
    while (this.#queue.length && this.#writable() && this.#rooms.get(this.#queue[0].room).joined) {
      this.#write(this.#queue.shift());
    }
  }
}

function hubError(code, message, room) {
  const err = new Error(message);
  err.code = code;
  err.room = room;
  return err;
}

/** getIceServers fetches {iceServers, ttl} from the hub's HTTP API, for pages without a session. */
export async function getIceServers(url, {key} = {}) {
  const u = new URL('/api/ice-servers', new URL(url || '/', globalThis.location?.href));
  u.protocol = u.protocol.replace(/^ws/, 'http');
  if (key) u.searchParams.set('key', key);
  const resp = await fetch(u);
  if (!resp.ok) throw new Error(`${u.pathname}: HTTP ${resp.status}`);
  return resp.json();
}

// ---------------------------------------------------------------------------------------------
// call(): a two-party RTCPeerConnection over a hub room.
//
// Signaling data travels as hub messages {call: {sid, to, ...}}: sid is the sending call's own
// id, which stays the same when its hub session (and so its peer id) is replaced. Calls first
// greet each other (hello, answered by an ack) so that nobody sends an offer into an empty
// room; then both sides negotiate freely and the perfect negotiation pattern (W3C WebRTC §10.7)
// settles collisions: the polite side rolls its offer back, the impolite side ignores the other.

const CALL_DEFAULTS = {
  polite: undefined,  // fix this side's role; by default the call with the smaller sid is polite
  relayOnly: false,   // iceTransportPolicy "relay": media only through the TURN server
  stream: null,       // MediaStream whose tracks are sent
  data: true,         // open a negotiated data channel (call.channel) on every connection
  config: {},         // further RTCConfiguration fields
  restartDelay: 3000, // restart ICE after this long in "disconnected", ms
  offerTimeout: 10000, // an offer unanswered this long is taken back and made again, ms
};

const BROKEN = ['disconnected', 'failed', 'closed'];

/** call starts a two-party call in room: it joins the room and waits for the other side. */
export function call(hub, room, options = {}) {
  return new Call(hub, room, options);
}

export class Call extends Emitter {
  sid = randomId();  // this call's id, stable across hub sessions
  pc = null;         // the current RTCPeerConnection; replaced only for a different party
  channel = null;    // negotiated RTCDataChannel "icehub" (options.data)
  remoteStream = null; // MediaStream collecting the remote tracks
  remote = null;     // {sid, id, gone}: the other call, its current hub peer id (null: unknown)
  state = 'waiting'; // waiting, then RTCPeerConnection.connectionState, or closed
  counters = {pcs: 0, offers: 0, answers: 0, collisions: 0, ignoredOffers: 0, rollbacks: 0, iceRestarts: 0};

  #hub; #room; #o; #off = [];
  #makingOffer = false; #ignoreOffer = false; #answerPending = false;
  #inbox = Promise.resolve(); // received signaling, handled one message at a time
  #next = null;               // a party that greeted us while we were busy with another
  #greeted = false; #rejoin = false; #needRestart = false; #deferred = false;
  #early = [];                // remote candidates that arrived before their description
  #offering = null;           // our setLocalDescription(offer) in progress
  #gathered = new Set();      // ICE ufrags of ours that have produced a candidate
  #gatherWaiters = [];
  #discTimer = 0; #retryTimer = 0; #retries = 0; #offerTimer = 0; #last = null;
  #credTimer = 0; #credExpiry = 0; #credsDue = false; // see watchCredentials

  constructor(hub, room, options = {}) {
    super();
    this.#hub = hub;
    this.#room = room;
    this.#o = {...CALL_DEFAULTS, ...options};
    const here = fn => ev => { if (ev.room === room) fn(ev); };
    this.#off = [
      hub.on('message', here(m => { if (m.data && m.data.call) this.#serial(() => this.#receive(m)); })),
      hub.on('welcome', w => this.#session(w)),
      hub.on('joined', here(() => { if (this.#rejoin) { this.#rejoin = false; this.#hello(false); } })),
      hub.on('peer-left', here(p => { if (this.remote && p.id === this.remote.id) this.#remoteLeft(); })),
      hub.on('ice-servers', () => this.#applyIceServers()),
    ];
    hub.join(room).then(() => { if (this.state !== 'closed') this.#hello(false); }, err => this.#error(err));
  }

  /** Whether this side yields in an offer collision. */
  get polite() {
    return this.#o.polite ?? (!!this.remote && this.sid < this.remote.sid);
  }

  /** restartIce restarts ICE now (it also happens on its own when the path fails). */
  restartIce() { this.#restart('requested'); }

  /** close ends the call: the other side hears "bye" and waits for a new party. */
  close() {
    if (this.state === 'closed') return;
    if (this.remote?.id && this.#hub.rooms.includes(this.#room)) this.#signal({bye: 1});
    this.#off.forEach(off => off());
    this.#closePC();
    this.remote = this.#next = null;
    this.#setState('closed');
  }

  /**
   * stats summarises getStats(): the selected candidate pair's types and addresses, its RTT in
   * ms, the send and receive bitrates (bits/s) since the previous stats() call, and video frames.
   */
  async stats() {
    const pc = this.pc;
    if (!pc) return null;
    const {report, pair, local, remote} = await selectedPair(pc);
    let sent = 0, received = 0, framesDecoded = 0, framesPerSecond = 0;
    report.forEach(s => {
      if (s.type === 'transport') {
        sent += s.bytesSent || 0;
        received += s.bytesReceived || 0;
      } else if (s.type === 'inbound-rtp' && s.kind === 'video') {
        framesDecoded += s.framesDecoded || 0;
        framesPerSecond += s.framesPerSecond || 0;
      }
    });
    if (!sent && !received && pair) ({bytesSent: sent = 0, bytesReceived: received = 0} = pair);
    const now = performance.now(), last = this.#last;
    this.#last = {pc, now, sent, received};
    const rate = (b, a) => last && last.pc === pc && now > last.now && b >= a ? Math.round((b - a) * 8000 / (now - last.now)) : null;
    return {
      state: pc.connectionState,
      local: local?.candidateType ?? null,
      remote: remote?.candidateType ?? null,
      localAddress: local ? `${local.address}:${local.port}` : null,
      remoteAddress: remote ? `${remote.address}:${remote.port}` : null,
      protocol: local?.protocol ?? null,
      relayProtocol: local?.relayProtocol ?? null,
      rtt: pair?.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : null,
      sendBitrate: rate(sent, last?.sent),
      receiveBitrate: rate(received, last?.received),
      availableOutgoingBitrate: pair?.availableOutgoingBitrate ?? null,
      framesDecoded,
      framesPerSecond,
      iceRestarts: this.counters.iceRestarts,
    };
  }

  #serial(fn) {
    this.#inbox = this.#inbox.then(fn).catch(err => this.#error(err));
  }

  #setState(state) {
    this.state = state;
    this.emit('state', {state});
  }

  #error(err) {
    this.emit('error', err);
  }

  #signal(msg) {
    const r = this.remote;
    const data = {call: {sid: this.sid, ...(r ? {to: r.sid} : {}), ...msg}};
    try {
      this.#hub.send(this.#room, data, r?.id ? {to: r.id} : {});
    } catch (err) {
      this.#error(err);
    }
  }

  #hello(ack) {
    this.#greeted = true;
    this.#signal(ack ? {hello: 1, ack: 1} : {hello: 1});
  }

  // A new hub session means a new peer id on our side and lost in-flight messages: greet the
  // other side again once the room is re-joined, and restart ICE when it answers.
  #session(w) {
    if (w.resumed || this.state === 'closed') return;
    if (this.#greeted) this.#rejoin = true;
    if (!this.remote) return;
    this.remote.id = null;
    if (this.pc) this.#needRestart = true;
  }

  #remoteLeft() {
    // Its hub session is over, but media may still flow: keep the connection until the
    // same call comes back (with a new id) or another party greets us.
    this.remote.id = null;
    this.remote.gone = true;
    this.emit('remote', {...this.remote});
  }

  async #receive(m) {
    const c = m.data.call;
    if (typeof c.sid !== 'string' || c.sid === this.sid || this.state === 'closed') return;
    if (c.to && c.to !== this.sid) return;
    if (!this.remote || c.sid !== this.remote.sid) {
      if (!c.hello) return; // the rest of a conversation we are not part of
      const busy = this.remote && !this.remote.gone && this.pc && !BROKEN.includes(this.pc.connectionState);
      if (busy) {
        this.#next = {sid: c.sid, id: m.from};
        return;
      }
      this.#adopt(c.sid, m.from, !c.ack);
      return;
    }
    if (this.remote.id !== m.from) {
      this.remote.id = m.from;
      this.remote.gone = false;
      this.emit('remote', {...this.remote});
      await this.#rebound();
    }
    if (c.hello && !c.ack) this.#hello(true);
    if (c.bye) return this.#ended();
    if (c.description) return this.#description(c.description);
    if (c.candidate) return this.#candidate(c.candidate);
  }

  // adopt makes (sid, id) the other party, with a fresh connection.
  #adopt(sid, id, ack) {
    this.#closePC();
    this.remote = {sid, id, gone: false};
    this.#next = null;
    this.emit('remote', {...this.remote});
    if (ack) this.#hello(true);
    this.#newPC();
  }

  // rebound runs when the other side is reachable under a new id: an offer of ours may have
  // gone to its old session, so take it back; then restart ICE or send what was held back.
  async #rebound() {
    const pc = this.pc;
    if (!pc) return;
    if (pc.signalingState === 'have-local-offer' && !this.#makingOffer) {
      await pc.setLocalDescription({type: 'rollback'});
      this.#deferred = true;
    }
    if (this.#needRestart) this.#restart('new hub session');
    if (this.#deferred) await this.#negotiate();
  }

  #ended() {
    this.#closePC();
    this.remote = null;
    this.emit('remote', null);
    this.#setState('waiting');
    const next = this.#next;
    if (next) this.#adopt(next.sid, next.id, true);
  }

  #newPC() {
    const pc = this.pc = new RTCPeerConnection(this.#config());
    this.counters.pcs++;
    this.#makingOffer = this.#ignoreOffer = this.#answerPending = false;
    this.#needRestart = this.#deferred = false;
    this.#retries = 0;
    this.#early = [];
    this.#gathered = new Set();
    const stream = this.remoteStream = new MediaStream();
    pc.onnegotiationneeded = () => { if (pc === this.pc) this.#negotiate(); };
    pc.onicecandidate = ({candidate}) => {
      if (pc !== this.pc) return;
      if (candidate) {
        this.#gathered.add(candidate.usernameFragment);
        this.#signal({candidate: candidate.toJSON()});
      }
      this.#gatherWaiters.splice(0).forEach(resolve => resolve());
    };
    pc.ontrack = ({track, streams}) => {
      stream.addTrack(track);
      this.emit('track', {track, streams, stream});
    };
    pc.onconnectionstatechange = () => { if (pc === this.pc) this.#pcState(pc.connectionState); };
    const local = this.#o.stream;
    if (local) for (const t of local.getTracks()) pc.addTrack(t, local);
    if (this.#o.data) {
      this.channel = pc.createDataChannel('icehub', {negotiated: true, id: 0});
      this.emit('channel', this.channel);
    }
    this.#watchCredentials();
    this.#setState(pc.connectionState);
  }

  #config() {
    const c = {...this.#o.config, iceServers: this.#hub.iceServers};
    if (this.#o.relayOnly) c.iceTransportPolicy = 'relay';
    return c;
  }

  #applyIceServers() {
    // Renewed credentials: the TURN allocations of any later ICE gathering use them.
    if (!this.pc || this.pc.signalingState === 'closed') return;
    try {
      this.pc.setConfiguration({...this.pc.getConfiguration(), iceServers: this.#hub.iceServers});
    } catch (err) {
      this.#error(err);
    }
    if (this.#credsDue) this.#credentialsDue(this.pc);
  }

  // watchCredentials arms a timer for shortly before the TURN credentials that the current ICE
  // gathering used expire. The TURN server refuses to refresh an allocation or its permissions
  // under an expired username, so a call relayed that long would break: before that, it
  // restarts ICE onto allocations made with the renewed credentials.
  #watchCredentials() {
    clearTimeout(this.#credTimer);
    this.#credsDue = false;
    this.#credExpiry = credentialsExpiry(this.#hub.iceServers);
    this.#armCredentials(this.pc);
  }

  #armCredentials(pc) {
    if (!pc || !this.#credExpiry) return;
    const wait = this.#credExpiry - this.#credMargin() - Date.now();
    this.#credTimer = setTimeout(() => this.#credentialsDue(pc), Math.min(Math.max(wait, 0), 2 ** 31 - 1));
  }

  #credMargin() {
    return Math.min(60000, this.#hub.ttl * 100); // a tenth of the lifetime, at most a minute
  }

  async #credentialsDue(pc) {
    if (pc !== this.pc) return;
    if (Date.now() < this.#credExpiry - this.#credMargin()) return this.#armCredentials(pc); // timers cap at 24 days
    if (!(credentialsExpiry(this.#hub.iceServers) > this.#credExpiry)) {
      this.#credsDue = true; // not renewed yet: the hub's next ice-servers brings us back here
      return;
    }
    this.#credsDue = false;
    const {local} = await selectedPair(pc);
    if (pc !== this.pc) return;
    if (local?.candidateType === 'relay') this.#restart('credentials expiring');
    else this.#watchCredentials(); // no allocation carries the call: follow the new credentials
  }

  async #negotiate() {
    const pc = this.pc;
    if (!pc || this.#makingOffer || pc.signalingState !== 'stable') return;
    if (!this.remote?.id) { // nobody to send the offer to yet: wait until the other side speaks
      this.#deferred = true;
      return;
    }
    this.#deferred = false;
    try {
      this.#makingOffer = true;
      await (this.#offering = pc.setLocalDescription());
      if (pc !== this.pc) return;
      const d = pc.localDescription;
      if (d.type === 'offer') {
        this.counters.offers++;
        this.#watchOffer(pc, d.sdp);
      }
      this.#signal({description: d.toJSON()});
    } catch (err) {
      this.#error(err);
    } finally {
      this.#makingOffer = false;
    }
  }

  // watchOffer takes an offer back if no answer came (it was lost with a hub session) and
  // makes it again, so the two sides never wait for each other forever.
  #watchOffer(pc, sdp) {
    clearTimeout(this.#offerTimer);
    this.#offerTimer = setTimeout(() => this.#serial(async () => {
      if (pc !== this.pc || pc.signalingState !== 'have-local-offer' || pc.localDescription.sdp !== sdp) return;
      await pc.setLocalDescription({type: 'rollback'});
      await this.#negotiate();
    }), this.#o.offerTimeout);
  }

  async #description(d) {
    const pc = this.pc;
    if (d.type === 'answer' && pc.signalingState !== 'have-local-offer' && !this.#makingOffer) return; // stale
    const ready = !this.#makingOffer && (pc.signalingState === 'stable' || this.#answerPending);
    const collision = d.type === 'offer' && !ready;
    this.#ignoreOffer = !this.polite && collision;
    if (collision) this.counters[this.#ignoreOffer ? 'ignoredOffers' : 'rollbacks']++;
    if (collision) this.counters.collisions++;
    if (this.#ignoreOffer) return;
    if (collision) await this.#letGatheringStart(pc);
    this.#answerPending = d.type === 'answer';
    try {
      await pc.setRemoteDescription(d); // rolls our own offer back on a collision
    } finally {
      this.#answerPending = false;
    }
    await this.#applyEarly();
    if (d.type === 'offer') {
      await pc.setLocalDescription();
      this.counters.answers++;
      this.#signal({description: pc.localDescription.toJSON()});
    }
  }

  // letGatheringStart holds a rollback back until our offer's ICE gathering has begun (its
  // first candidate, at most a second): Chromium (seen in 156) rolling back an offer whose
  // gathering had not started yet never gathers on that connection again, ICE restarts included.
  async #letGatheringStart(pc) {
    await this.#offering?.catch(() => {});
    const deadline = performance.now() + 1000;
    while (pc.signalingState === 'have-local-offer' && !this.#gathered.has(localUfrag(pc)) &&
        pc.iceGatheringState !== 'complete' && performance.now() < deadline) {
      await new Promise(resolve => {
        this.#gatherWaiters.push(resolve);
        setTimeout(resolve, deadline - performance.now());
      });
    }
  }

  async #candidate(candidate) {
    const pc = this.pc;
    const ufrag = remoteUfrag(pc);
    if (ufrag && (!candidate.usernameFragment || candidate.usernameFragment === ufrag)) {
      try {
        await pc.addIceCandidate(candidate);
      } catch (err) {
        this.#error(err);
      }
      return;
    }
    // A candidate for a description not applied (yet): the polite side's offer that we
    // ignored may come back as its answer with the same ICE credentials, and browsers do not
    // gather those candidates again. Keep them until a description claims them.
    this.#early.push(candidate);
    if (this.#early.length > 64) this.#early.shift();
  }

  // applyEarly adds the kept candidates that belong to the remote description just applied.
  async #applyEarly() {
    const ufrag = remoteUfrag(this.pc);
    const mine = this.#early.filter(c => c.usernameFragment === ufrag);
    this.#early = this.#early.filter(c => c.usernameFragment !== ufrag);
    for (const c of mine) await this.pc.addIceCandidate(c).catch(err => this.#error(err));
  }

  #pcState(s) {
    this.#setState(s);
    clearTimeout(this.#discTimer);
    if (s === 'connected') {
      this.#retries = 0;
      clearTimeout(this.#retryTimer);
    } else if (s === 'failed') {
      this.#broken('failed');
    } else if (s === 'disconnected') {
      this.#discTimer = setTimeout(() => this.#broken('disconnected'), this.#o.restartDelay);
    }
  }

  // broken handles a connection that stopped working: hand over to a party waiting for us,
  // or restart ICE with the one we have.
  #broken(why) {
    const pc = this.pc;
    if (!pc || !BROKEN.includes(pc.connectionState)) return;
    const next = this.#next;
    if (next) return this.#serial(() => this.#adopt(next.sid, next.id, true));
    this.#restart(why);
  }

  #restart(why) {
    const pc = this.pc;
    if (!pc || pc.signalingState === 'closed') return;
    if (!this.remote?.id) { // the offer would go nowhere; restart once the other side speaks
      this.#needRestart = true;
      return;
    }
    this.#needRestart = false;
    this.counters.iceRestarts++;
    this.emit('restart', {reason: why});
    pc.restartIce();
    this.#watchCredentials(); // the restart gathers with the credentials the hub gave last
    // Try again, waiting longer each time, while the connection does not come back.
    clearTimeout(this.#retryTimer);
    const wait = Math.min(30000, 10000 * 2 ** this.#retries++);
    this.#retryTimer = setTimeout(() => {
      if (pc === this.pc && pc.connectionState !== 'connected') this.#restart('still ' + pc.connectionState);
    }, wait);
  }

  #closePC() {
    clearTimeout(this.#discTimer);
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#offerTimer);
    clearTimeout(this.#credTimer);
    this.channel?.close();
    this.pc?.close();
    this.pc = this.channel = this.remoteStream = null;
    this.#last = null;
  }
}

// selectedPair finds the candidate pair carrying pc's traffic and its two candidates.
async function selectedPair(pc) {
  const report = await pc.getStats();
  let pair = null;
  report.forEach(s => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  if (!pair) report.forEach(s => { // browsers without transport stats
    if (!pair && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
  });
  return {report, pair, local: pair && report.get(pair.localCandidateId), remote: pair && report.get(pair.remoteCandidateId)};
}

// credentialsExpiry is when the first TURN REST username ("<unix expiry>:<user>") expires, ms.
function credentialsExpiry(iceServers) {
  const t = Math.min(...iceServers.filter(s => s.username).map(s => parseInt(s.username, 10)).filter(n => n > 0));
  return Number.isFinite(t) ? t * 1000 : null;
}

const ufragOf = desc => /a=ice-ufrag:(\S+)/.exec(desc?.sdp || '')?.[1] || null;
const remoteUfrag = pc => ufragOf(pc.remoteDescription);
const localUfrag = pc => ufragOf(pc.localDescription);

function randomId() {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return btoa(String.fromCharCode(...b)).replace(/\+/g, '-').replace(/\//g, '_');
}
