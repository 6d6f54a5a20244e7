// Shared by the demo pages: the page's URL parameters (room, key, relay, video, autostart)
// and a log panel.
export const params = new URLSearchParams(location.search);

export const $ = id => document.getElementById(id);

export function logTo(el, ...args) {
  const line = new Date().toISOString().slice(11, 23) + ' ' + args.map(a =>
    typeof a === 'string' ? a : JSON.stringify(a)).join(' ');
  el.textContent += line + '\n';
  el.scrollTop = el.scrollHeight;
}

// describePath renders a call.stats() / pair summary as "relay → relay (udp) · 12 ms".
export function describePath(s) {
  if (!s || !s.local) return '–';
  let text = `${s.local} → ${s.remote} (${s.relayProtocol || s.protocol})`;
  if (s.rtt != null) text += ` · ${s.rtt} ms`;
  if (s.receiveBitrate != null) text += ` · ↓ ${kbps(s.receiveBitrate)} ↑ ${kbps(s.sendBitrate)}`;
  return text;
}

const kbps = bps => bps == null ? '?' : Math.round(bps / 1000) + ' kbit/s';
