'use strict';
// Shared by the demo pages: URL parameters, API URLs that carry ?key=, and candidate-pair
// inspection through getStats().
const params = new URLSearchParams(location.search);

function withKey(path) {
  const u = new URL(path, location.href);
  const key = params.get('key');
  if (key) u.searchParams.set('key', key);
  return u;
}

async function fetchICEServers() {
  const resp = await fetch(withKey('/api/ice-servers'));
  if (!resp.ok) throw new Error('/api/ice-servers: ' + resp.status);
  return resp.json();
}

// selectedPair returns the local and remote candidate types (host, srflx, prflx, relay) of
// the candidate pair carrying pc's traffic, or null before there is one.
async function selectedPair(pc) {
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach(s => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) stats.forEach(s => {
    if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.selected || s.nominated)) pair = s;
  });
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
  return {
    local: local && local.candidateType, remote: remote && remote.candidateType,
    localAddress: local && (local.address + ':' + local.port),
    remoteAddress: remote && (remote.address + ':' + remote.port),
    protocol: local && local.protocol, relayProtocol: local && local.relayProtocol,
  };
}

async function framesDecoded(pc) {
  if (!pc) return 0;
  let n = 0;
  (await pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') n += s.framesDecoded || 0;
  });
  return n;
}

function logTo(el, ...args) {
  const line = new Date().toISOString().slice(11, 23) + ' ' + args.map(a =>
    typeof a === 'string' ? a : JSON.stringify(a)).join(' ');
  el.textContent += line + '\n';
  el.scrollTop = el.scrollHeight;
}
