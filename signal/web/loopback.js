'use strict';
// The tutorial's main.js, with the ICE configuration fetched from the hub: pc1 sends the
// camera, pc2 receives it, and candidates are handed across directly instead of through a
// signaling server.
const localVideo = document.getElementById('localvideo');
const remoteVideo = document.getElementById('remotevideo');
const btnStart = document.getElementById('start');
const btnCall = document.getElementById('call');
const btnHangup = document.getElementById('hangup');
const relayBox = document.getElementById('relay');
const logEl = document.getElementById('log');
const log = (...a) => logTo(logEl, ...a);

let localStream = null, pc1 = null, pc2 = null;

// Test hooks for headless browsers.
window.icehub = {
  state: 'idle', error: null, iceServers: null,
  selectedPairType: () => selectedPair(pc1),
  framesDecoded: () => framesDecoded(pc2),
  get pc1() { return pc1; }, get pc2() { return pc2; },
};

function setState(s) {
  window.icehub.state = s;
  document.getElementById('state').textContent = s;
  log('state', s);
}

function fail(err) {
  window.icehub.error = String(err && err.message || err);
  log('error', window.icehub.error);
  setState('failed');
}

async function start() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error('getUserMedia is not supported');
  }
  localStream = await navigator.mediaDevices.getUserMedia({audio: false, video: true});
  localVideo.srcObject = localStream;
  btnStart.disabled = true;
  btnCall.disabled = false;
  setState('started');
}

async function call() {
  btnCall.disabled = true;
  btnHangup.disabled = false;
  const {iceServers} = await fetchICEServers();
  window.icehub.iceServers = iceServers;
  const config = {iceServers, iceTransportPolicy: relayBox.checked ? 'relay' : 'all'};
  log('config', config.iceTransportPolicy, iceServers.map(s => s.urls).flat());
  pc1 = new RTCPeerConnection(config);
  pc2 = new RTCPeerConnection(config);
  pc1.onicecandidate = e => { if (e.candidate) pc2.addIceCandidate(e.candidate).catch(fail); };
  pc2.onicecandidate = e => { if (e.candidate) pc1.addIceCandidate(e.candidate).catch(fail); };
  pc2.ontrack = e => { remoteVideo.srcObject = e.streams[0]; };
  pc1.onconnectionstatechange = async () => {
    setState(pc1.connectionState);
    if (pc1.connectionState === 'connected') {
      const p = await selectedPair(pc1);
      document.getElementById('pair').textContent = p ? p.local + ' → ' + p.remote : '?';
    }
  };
  localStream.getTracks().forEach(t => pc1.addTrack(t, localStream));
  const offer = await pc1.createOffer({offerToReceiveAudio: 0, offerToReceiveVideo: 1});
  await pc1.setLocalDescription(offer);
  await pc2.setRemoteDescription(offer);
  const answer = await pc2.createAnswer();
  await pc2.setLocalDescription(answer);
  await pc1.setRemoteDescription(answer);
  setState('calling');
}

function hangup() {
  if (pc1) pc1.close();
  if (pc2) pc2.close();
  pc1 = pc2 = null;
  btnHangup.disabled = true;
  btnCall.disabled = false;
  setState('closed');
}

btnStart.onclick = () => start().catch(fail);
btnCall.onclick = () => call().catch(fail);
btnHangup.onclick = hangup;
relayBox.checked = params.get('relay') === '1';
if (params.get('autostart') === '1') start().then(call).catch(fail);
