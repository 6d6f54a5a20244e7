'use strict';
// A two-party call through the hub. The peer already in the room makes the offer when it
// hears peer-joined, as in the tutorial's flow; descriptions and candidates travel as
// `message` frames addressed `to` the other peer.
const $ = id => document.getElementById(id);
const logEl = $('log');
const log = (...a) => logTo(logEl, ...a);

let ws = null, pc = null, dc = null, localStream = null;
let iceServers = [], remoteId = null, pendingCandidates = [];

// Test hooks for headless browsers.
const hub = window.icehub = {
  state: 'idle', id: null, room: null, peers: [], remote: null, pcState: null, dcOpen: false,
  iceServers: null, lastMessage: null, messages: [], errors: [], frames: [],
  selectedPairType: () => selectedPair(pc),
  framesDecoded: () => framesDecoded(pc),
  send: text => sendChat(text),
};

function setState(s) {
  hub.state = s;
  $('state').textContent = s;
  log('state', s);
}

function wsSend(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

function signal(data) {
  wsSend({type: 'message', room: hub.room, to: remoteId, data});
}

async function join() {
  const room = $('room').value.trim();
  if (!/^[A-Za-z0-9_.\-]{1,64}$/.test(room)) { setState('bad room name'); return; }
  hub.room = room;
  $('join').disabled = true;
  $('hangup').disabled = false;
  if ($('video').checked && !localStream) {
    try {
      localStream = await navigator.mediaDevices.getUserMedia({audio: false, video: true});
      $('localvideo').srcObject = localStream;
    } catch (err) {
      log('no camera:', String(err));
    }
  }
  const u = withKey('/ws');
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  ws = new WebSocket(u);
  setState('connecting');
  ws.onmessage = e => onFrame(JSON.parse(e.data)).catch(err => { log('error', String(err)); hub.errors.push(String(err)); });
  ws.onclose = e => { log('ws closed', e.code, e.reason); if (hub.state !== 'closed') setState('disconnected'); };
}

async function onFrame(f) {
  hub.frames.push(f.type);
  if (f.type !== 'message') log('<', f);
  switch (f.type) {
  case 'welcome':
    hub.id = f.id;
    iceServers = hub.iceServers = f.iceServers;
    wsSend({type: 'join', room: hub.room});
    break;
  case 'ice-servers':
    // Renewed credentials: new allocations (ICE restarts) will use them.
    iceServers = hub.iceServers = f.iceServers;
    if (pc) pc.setConfiguration({...pc.getConfiguration(), iceServers});
    break;
  case 'joined':
    hub.peers = f.peers;
    setState(f.peers.length ? 'waiting for offer' : 'waiting for peer');
    if (f.peers.length) remoteId = hub.remote = f.peers[0];
    break;
  case 'full':
    setState('room full');
    break;
  case 'peer-joined':
    if (pc) break; // already in a call: two parties only
    remoteId = hub.remote = f.id;
    await makeOffer();
    break;
  case 'peer-left':
    if (f.id === remoteId) { closePC(); setState('peer left'); }
    break;
  case 'message':
    if (!remoteId) remoteId = hub.remote = f.from;
    if (f.from === remoteId) await onSignal(f.data);
    break;
  case 'error':
    hub.errors.push(f.code);
    break;
  }
}

function newPC() {
  pc = new RTCPeerConnection({iceServers, iceTransportPolicy: $('relay').checked ? 'relay' : 'all'});
  pc.onicecandidate = e => { if (e.candidate) signal({candidate: e.candidate.toJSON()}); };
  pc.ontrack = e => { $('remotevideo').srcObject = e.streams[0]; };
  pc.ondatachannel = e => setupChannel(e.channel);
  pc.onconnectionstatechange = async () => {
    hub.pcState = pc.connectionState;
    setState(pc.connectionState);
    if (pc.connectionState === 'connected') {
      const p = await selectedPair(pc);
      $('pair').textContent = p ? p.local + ' → ' + p.remote + ' (' + p.remoteAddress + ')' : '?';
    }
  };
  return pc;
}

async function makeOffer() {
  newPC();
  if (localStream) localStream.getTracks().forEach(t => pc.addTrack(t, localStream));
  else pc.addTransceiver('video', {direction: 'recvonly'});
  setupChannel(pc.createDataChannel('chat'));
  await pc.setLocalDescription(await pc.createOffer());
  signal({description: pc.localDescription.toJSON()});
  setState('offered');
}

async function onSignal(data) {
  if (data.description) {
    const d = data.description;
    if (d.type === 'offer') {
      if (!pc) newPC();
      await pc.setRemoteDescription(d);
      // Tracks are added after the offer so they reuse its transceivers.
      if (localStream) localStream.getTracks().forEach(t => pc.addTrack(t, localStream));
      await pc.setLocalDescription(await pc.createAnswer());
      signal({description: pc.localDescription.toJSON()});
      setState('answered');
    } else if (pc) {
      await pc.setRemoteDescription(d);
    }
    for (const c of pendingCandidates.splice(0)) await pc.addIceCandidate(c);
  } else if (data.candidate) {
    // Candidates can outrun the description they belong to.
    if (pc && pc.remoteDescription) await pc.addIceCandidate(data.candidate);
    else pendingCandidates.push(data.candidate);
  }
}

function setupChannel(ch) {
  dc = ch;
  dc.onopen = () => { hub.dcOpen = true; $('text').disabled = $('send').disabled = false; log('chat open'); };
  dc.onclose = () => { hub.dcOpen = false; $('text').disabled = $('send').disabled = true; };
  dc.onmessage = e => {
    hub.lastMessage = e.data;
    hub.messages.push(e.data);
    logTo($('chatlog'), 'them: ' + e.data);
  };
}

function sendChat(text) {
  if (!dc || dc.readyState !== 'open') return false;
  dc.send(text);
  logTo($('chatlog'), 'me: ' + text);
  return true;
}

function closePC() {
  if (dc) dc.close();
  if (pc) pc.close();
  pc = dc = null;
  remoteId = hub.remote = null;
  pendingCandidates = [];
  hub.dcOpen = false;
  hub.pcState = null;
}

function hangup() {
  closePC();
  if (ws) ws.close(1000, 'bye');
  ws = null;
  $('join').disabled = false;
  $('hangup').disabled = true;
  setState('closed');
}

$('join').onclick = () => join().catch(err => log('error', String(err)));
$('hangup').onclick = hangup;
$('chat').onsubmit = e => {
  e.preventDefault();
  if (sendChat($('text').value)) $('text').value = '';
};
if (params.has('room')) $('room').value = params.get('room');
$('relay').checked = params.get('relay') === '1';
if (params.has('video')) $('video').checked = params.get('video') !== '0';
if (params.get('autostart') === '1') join().catch(err => log('error', String(err)));
