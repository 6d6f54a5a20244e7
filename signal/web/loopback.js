// The tutorial's main.js, with the ICE configuration from the hub (icehub.js getIceServers,
// i.e. GET /api/ice-servers): pc1 sends the camera, pc2 receives it, and candidates are handed
// across directly instead of through a signaling server.
import {getIceServers} from './icehub.js';
import {params, $, logTo, describePath} from './common.js';

const log = (...a) => logTo($('log'), ...a);
let localStream = null, pc1 = null, pc2 = null;

// For the browser console (and the browser tests).
window.demo = {
  state: 'idle', error: null, iceServers: null,
  selectedPair: () => selectedPair(pc1),
  framesDecoded: () => framesDecoded(pc2),
};

function setState(s) {
  window.demo.state = s;
  $('state').textContent = s;
  log('state', s);
}

function fail(err) {
  window.demo.error = String(err && err.message || err);
  log('error', window.demo.error);
  setState('failed');
}

async function start() {
  localStream = await navigator.mediaDevices.getUserMedia({audio: false, video: true});
  $('localvideo').srcObject = localStream;
  $('start').disabled = true;
  $('call').disabled = false;
  setState('started');
}

async function call() {
  $('call').disabled = true;
  $('hangup').disabled = false;
  const {iceServers} = await getIceServers(location.origin, {key: params.get('key') || ''});
  window.demo.iceServers = iceServers;
  const config = {iceServers, iceTransportPolicy: $('relay').checked ? 'relay' : 'all'};
  log('config', config.iceTransportPolicy, iceServers.map(s => s.urls).flat());
  pc1 = new RTCPeerConnection(config);
  pc2 = new RTCPeerConnection(config);
  pc1.onicecandidate = e => { if (e.candidate) pc2.addIceCandidate(e.candidate).catch(fail); };
  pc2.onicecandidate = e => { if (e.candidate) pc1.addIceCandidate(e.candidate).catch(fail); };
  pc2.ontrack = e => { $('remotevideo').srcObject = e.streams[0]; };
  pc1.onconnectionstatechange = async () => {
    setState(pc1.connectionState);
    if (pc1.connectionState === 'connected') $('pair').textContent = describePath(await selectedPair(pc1));
  };
  localStream.getTracks().forEach(t => pc1.addTrack(t, localStream));
  await pc1.setLocalDescription(await pc1.createOffer());
  await pc2.setRemoteDescription(pc1.localDescription);
  await pc2.setLocalDescription(await pc2.createAnswer());
  await pc1.setRemoteDescription(pc2.localDescription);
  setState('calling');
}

function hangup() {
  pc1?.close();
  pc2?.close();
  pc1 = pc2 = null;
  $('hangup').disabled = true;
  $('call').disabled = false;
  setState('closed');
}

// selectedPair returns the candidate types (host, srflx, prflx, relay) of the pair carrying
// pc's traffic, or null before there is one.
async function selectedPair(pc) {
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
  return {local: local.candidateType, remote: remote.candidateType, protocol: local.protocol, relayProtocol: local.relayProtocol};
}

async function framesDecoded(pc) {
  let n = 0;
  if (pc) (await pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0; });
  return n;
}

$('start').onclick = () => start().catch(fail);
$('call').onclick = () => call().catch(fail);
$('hangup').onclick = hangup;
$('relay').checked = params.get('relay') === '1';
if (params.get('autostart') === '1') start().then(call).catch(fail);
