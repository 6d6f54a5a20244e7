// A two-party call through the hub with icehub.js: connect() keeps the signaling session
// alive, call() does the WebRTC part. Everything else here is showing what happens.
import {connect, call} from './icehub.js';
import {params, $, logTo, describePath} from './common.js';

const log = (...a) => logTo($('log'), ...a);
let hub = null, c = null, localStream = null, statsTimer = 0;

// For the browser console (and the browser tests): the session, the call, the chat so far.
window.demo = {get hub() { return hub; }, get call() { return c; }, chat: [], send: sendChat};

async function join() {
  const room = $('room').value.trim();
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
  hub = connect('/ws', {key: params.get('key') || ''});
  hub.on('state', e => { $('hubstate').textContent = e.state; log('hub', e); });
  hub.on('welcome', e => log(e.resumed ? 'session resumed' : 'new session', e.id));
  hub.on('peer-joined', e => log('peer joined', e.id));
  hub.on('peer-left', e => log('peer left', e.id));
  hub.on('ice-servers', e => log('TURN credentials for', e.ttl, 's'));
  hub.on('error', e => log('hub error', e));

  c = call(hub, room, {stream: localStream, relayOnly: $('relay').checked});
  c.on('state', ({state}) => { $('state').textContent = state; log('call', state); });
  c.on('track', ({stream}) => { $('remotevideo').srcObject = stream; });
  c.on('channel', setupChat);
  c.on('restart', e => log('ICE restart:', e.reason));
  c.on('error', err => log('call error', String(err)));
  statsTimer = setInterval(async () => { $('pair').textContent = describePath(await c.stats()); }, 1000);
}

function setupChat(ch) {
  ch.onopen = () => { $('text').disabled = $('send').disabled = false; log('chat open'); };
  ch.onclose = () => { $('text').disabled = $('send').disabled = true; };
  ch.onmessage = e => {
    window.demo.chat.push(e.data);
    logTo($('chatlog'), 'them: ' + e.data);
  };
}

function sendChat(text) {
  const ch = c && c.channel;
  if (!ch || ch.readyState !== 'open') return false;
  ch.send(text);
  logTo($('chatlog'), 'me: ' + text);
  return true;
}

function hangup() {
  clearInterval(statsTimer);
  c.close();
  hub.close();
  $('join').disabled = false;
  $('hangup').disabled = true;
  $('state').textContent = 'idle';
  $('pair').textContent = '–';
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
