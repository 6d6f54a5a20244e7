// icehub status page: polls /api/status (sampled Prometheus counters) and /api/allocations
// and draws them. Every string from the server goes into the page as text (textContent,
// setAttribute), never as markup: usernames are chosen by whoever holds credentials.
'use strict';

const SVGNS = 'http://www.w3.org/2000/svg';
const W = 600, H = 110, WINDOW_MS = 10 * 60 * 1000, MIN_SPAN_MS = 30 * 1000;

const charts = [
  {id: 'allocations', title: 'TURN allocations', keys: ['allocations'], fmt: fmtCount},
  {id: 'relayed', title: 'Relayed', keys: ['to_peer_bps', 'to_client_bps'], legend: ['to peers', 'to clients'], fmt: fmtBits},
  {id: 'bindings', title: 'STUN Binding requests', keys: ['bindings_per_s'], fmt: fmtRate},
  {id: 'websockets', title: 'WebSocket connections', keys: ['websockets'], fmt: fmtCount},
  {id: 'rooms', title: 'Rooms', keys: ['rooms'], fmt: fmtCount},
];

const state = {t: [], values: {}, since: 0, interval: 2, metrics: {}};
window.icehubStatus = state; // for debugging and tests

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function buildCharts() {
  const box = document.getElementById('charts');
  for (const c of charts) {
    const card = el('article', 'card');
    card.id = 'chart-' + c.id;
    card.append(el('h2', '', c.title));
    c.now = el('div', 'now', '–');
    card.append(c.now);
    if (c.legend) {
      const lg = el('div', 'legend');
      c.legend.forEach((name, i) => {
        const item = el('span');
        item.append(el('b', 'l' + i), name + ' ');
        lg.append(item);
      });
      card.append(lg);
    }
    const wrap = el('div', 'chart');
    c.svg = svgEl('svg', {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': c.title});
    for (const y of [0.5, H / 2, H - 0.5]) c.svg.append(svgEl('line', {class: 'grid', x1: 0, x2: W, y1: y, y2: y}));
    c.lines = c.keys.map((_, i) => {
      const g = svgEl('g', {class: 'series', 'data-key': c.keys[i]});
      c.svg.append(g);
      return g;
    });
    c.max = el('span', 'max');
    c.span = el('span', 'span');
    wrap.append(c.svg, c.max, c.span);
    card.append(wrap);
    c.metric = el('p', 'metric');
    card.append(c.metric);
    box.append(card);
  }
}

function merge(s) {
  state.interval = s.interval_s || state.interval;
  for (const m of s.series) state.metrics[m.key] = m.metric + (m.label ? `{${m.label}}` : '');
  for (const k of Object.keys(s.values)) {
    state.values[k] = (state.values[k] || []).concat(s.values[k]);
  }
  state.t = state.t.concat(s.t);
  if (s.t.length) state.since = s.t[s.t.length - 1];
  // Keep ten minutes.
  const keep = state.t.findIndex(t => t >= state.since - WINDOW_MS);
  if (keep > 0) {
    state.t = state.t.slice(keep);
    for (const k of Object.keys(state.values)) state.values[k] = state.values[k].slice(keep);
  }
}

function draw() {
  const ts = state.t;
  if (!ts.length) return;
  const tmax = ts[ts.length - 1];
  const tmin = tmax - Math.max(tmax - ts[0], MIN_SPAN_MS);
  for (const c of charts) {
    const cols = c.keys.map(k => state.values[k] || []);
    let max = 0;
    for (const col of cols) for (const v of col) if (v !== null && v > max) max = v;
    const top = niceCeil(max);
    c.max.textContent = c.fmt(top);
    c.span.textContent = 'last ' + fmtAge((tmax - tmin) / 1000);
    cols.forEach((col, i) => {
      const g = c.lines[i];
      g.replaceChildren();
      let seg = [];
      const flush = () => {
        if (seg.length) g.append(svgEl('polyline', {class: 'line l' + i, points: seg.join(' ')}));
        seg = [];
      };
      col.forEach((v, j) => {
        if (v === null || v === undefined) { flush(); return; }
        const x = ((ts[j] - tmin) / (tmax - tmin)) * W;
        const y = H - (v / top) * (H - 4) - 2;
        seg.push(x.toFixed(1) + ',' + y.toFixed(1));
      });
      flush();
    });
    const last = cols.map(col => lastValue(col));
    c.now.replaceChildren();
    c.now.classList.toggle('two', last.length > 1);
    last.forEach((v, i) => {
      if (i > 0) c.now.append('  ');
      if (c.legend) c.now.append(el('span', 'dir', i === 0 ? '↑' : '↓'));
      c.now.append(el('span', 'l' + i, v === null ? '–' : c.fmt(v)));
    });
    c.metric.textContent = c.keys.map(k => state.metrics[k] || '').join(', ');
  }
}

function lastValue(col) {
  for (let i = col.length - 1; i >= 0; i--) if (col[i] !== null) return col[i];
  return null;
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function drawTable(a) {
  const body = document.querySelector('#allocs tbody');
  body.replaceChildren();
  for (const r of a.allocations || []) {
    const tr = el('tr');
    const user = el('td', 'user', r.user);
    user.setAttribute('title', r.user);
    tr.append(user,
      el('td', 'addr client', `${r.transport} ${r.client}`),
      el('td', 'addr relay', `${r.relay_transport} ${r.relay}`),
      labelled(el('td', 'num up', fmtBits(r.to_peer_bps)), '↑'),
      labelled(el('td', 'num down', fmtBits(r.to_client_bps)), '↓'),
      labelled(el('td', 'num age', fmtAge(r.age_s)), 'age'));
    body.append(tr);
  }
  const shown = (a.allocations || []).length;
  document.getElementById('alloc-total').textContent = a.total > shown ? `(${shown} of ${a.total})` : `(${a.total})`;
  document.getElementById('alloc-empty').hidden = shown > 0;
}

// labelled sets the label phones show before a cell (the table header is hidden there).
function labelled(td, label) {
  td.dataset.label = label;
  return td;
}

function fmtCount(v) { return Math.round(v).toLocaleString('en-US'); }

function fmtRate(v) { return fmtSI(v, 'req/s'); }

function fmtBits(v) { return fmtSI(v, 'bit/s'); }

function fmtSI(v, unit) {
  const steps = [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [f, p] of steps) {
    if (v >= f) return (v / f).toFixed(v / f < 10 ? 2 : 1) + ' ' + p + unit;
  }
  return (v < 10 && v % 1 ? v.toFixed(1) : Math.round(v)) + ' ' + unit;
}

function fmtAge(s) {
  if (s < 60) return Math.floor(s) + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min';
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return `${h} h ${String(m).padStart(2, '0')}`;
}

async function poll() {
  const st = document.getElementById('state');
  try {
    const [s, a] = await Promise.all([
      fetch('/api/status?since=' + state.since, {cache: 'no-store'}).then(checked),
      fetch('/api/allocations?n=20', {cache: 'no-store'}).then(checked),
    ]);
    merge(s);
    draw();
    drawTable(a);
    st.textContent = 'updated ' + new Date(s.now).toLocaleTimeString();
    state.updated = s.now;
  } catch (e) {
    st.textContent = 'not reaching the server (' + e.message + ')';
  }
  setTimeout(poll, state.interval * 1000);
}

function checked(r) {
  if (!r.ok) throw new Error('HTTP ' + r.status);
  return r.json();
}

buildCharts();
poll();
