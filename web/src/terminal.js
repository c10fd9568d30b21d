// The browser terminal: pairs with a runner by its code, then is an xterm.js terminal on the
// runner's shell (examples/runner.py --pty). Keystrokes go out as binary app:command, the
// window size as app:resize, output comes back as terminal:output with a seq; after a lost
// connection the page reconnects and resumes from the last seq it wrote (auth.lastSeq), so
// nothing is shown twice or lost. The Terminal is window.term, for tests and extensions.

import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { Unicode11Addon } from '@xterm/addon-unicode11';
import { WebLinksAddon } from '@xterm/addon-web-links';
import { WebglAddon } from '@xterm/addon-webgl';
import { io } from 'socket.io-client';
import '@xterm/xterm/css/xterm.css';
import './terminal.css';
import { applyModifiers, keySequence } from './keys.js';
import { createChannel, parseCode } from './channel.js';

const STORE_KEY = 'pairing-terminal';
const FONT_KEY = 'pairing-terminal-font-size';
const encoder = new TextEncoder();
const $ = (id) => document.getElementById(id);

const ui = {
  state: $('state'),
  tools: $('tools'),
  form: $('pair'),
  code: $('code'),
  pairButton: $('pair-button'),
  pairError: $('pair-error'),
  terminal: $('terminal'),
  host: $('term-host'),
  keys: $('keys'),
  keysToggle: $('keys-toggle'),
};

const term = new Terminal({
  allowProposedApi: true, // the unicode11 addon's activeVersion
  cursorBlink: true,
  convertEol: false,
  fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, "Liberation Mono", monospace',
  fontSize: Number(localStorage.getItem(FONT_KEY)) || (matchMedia('(pointer: coarse)').matches ? 13 : 15),
  scrollback: 5000,
  theme: { background: '#11111b', foreground: '#cdd6f4', cursor: '#f5e0dc', selectionBackground: '#585b70' },
});
const fit = new FitAddon();
term.loadAddon(fit);
term.loadAddon(new Unicode11Addon());
term.unicode.activeVersion = '11';
term.loadAddon(new WebLinksAddon((event, uri) => {
  const opened = window.open(uri, '_blank', 'noopener,noreferrer');
  if (opened) opened.opener = null;
}));
window.term = term;

/** What tests and curious people can read: the state line's facts, as data. */
const status = {
  state: 'idle', renderer: 'none', attempts: 0, connects: 0, lastSeq: 0, runnerId: null,
  e2e: false,
};
window.pairingTerminal = status;

function saved() {
  try { return JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null'); } catch { return null; }
}
function save(value) {
  if (value) sessionStorage.setItem(STORE_KEY, JSON.stringify(value));
  else sessionStorage.removeItem(STORE_KEY);
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(24)); // 192 bits, works on plain HTTP
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function setState(text, tone = '') {
  ui.state.textContent = text;
  ui.state.className = 'state' + (tone ? ' ' + tone : '');
  status.state = text;
}

function notice(text) {
  term.write(`\r\n\x1b[2m[${text}]\x1b[0m\r\n`);
}

// -- session: the appSessionId (a bearer credential: this tab's sessionStorage only) --------

let session = saved() ?? { appSessionId: randomId(), runnerId: null, e2e: null };
let socket = null;
let channel = null; // how terminal bytes are carried: plain, or end-to-end encrypted
let opened = false;

const hooks = {
  onNotice: notice,
  onExit: (code) => notice(`the shell exited with status ${code}; type to start a new one`),
  onFatal: (message) => {
    socket?.emit('app:unpair', {});
    notice(message);
    unpaired(message);
  },
};
const ids = () => ({ appSessionId: session.appSessionId, runnerId: session.runnerId });
const connectedText = () =>
  `Connected to runner ${session.runnerId}${channel?.e2e ? ' (end-to-end encrypted)' : ''}`;

function connect() {
  if (socket) return socket;
  socket = io({
    path: '/socket.io/',
    autoConnect: false,
    transports: ['websocket', 'polling'],
    tryAllTransports: true,
    reconnectionDelay: 500,
    reconnectionDelayMax: 5000,
    // Called on every (re)connect: resume from the last output written. An encrypted
    // session that has shown nothing yet (just paired, or re-keying after a reload) asks for
    // no replay: held frames of an earlier handshake would be taken for this one's.
    auth: (cb) => cb(session.runnerId && (status.lastSeq > 0 || !(session.e2e || channel?.e2e))
      ? { appSessionId: session.appSessionId, lastSeq: status.lastSeq }
      : { appSessionId: session.appSessionId }),
  });
  socket.on('connect', () => {
    status.attempts = 0;
    status.connects += 1;
    channel?.connected(socket);
    if (session.runnerId) {
      setState(connectedText(), 'ok');
      sendSize();
      confirmPaired();
    } else {
      setState('Connected', 'ok');
    }
  });
  socket.on('disconnect', (reason) => {
    channel?.disconnected();
    if (reason === 'io server disconnect') {
      setState('Disconnected: this session was opened elsewhere (another tab?). Reload to take it back.', 'bad');
      return;
    }
    if (reason === 'io client disconnect') return;
    setState(navigator.onLine === false ? 'Offline: waiting for the network' : 'Connection lost: reconnecting...', 'warn');
  });
  socket.on('connect_error', (err) => {
    if (!socket.active) setState(`Cannot connect: ${err.message}`, 'bad');
  });
  socket.io.on('reconnect_attempt', (attempt) => {
    status.attempts = attempt;
    setState(navigator.onLine === false
      ? `Offline: waiting for the network (attempt ${attempt})`
      : `Reconnecting..., attempt ${attempt}`, 'warn');
  });
  socket.on('terminal:output', (msg) => {
    if (!msg || typeof msg !== 'object') return;
    const seq = msg.seq;
    if (Number.isInteger(seq)) {
      if (seq <= status.lastSeq) return; // already written: a replay overlapping live output
      status.lastSeq = seq;
    }
    channel?.receive(msg.data);
  });
  socket.on('terminal:gap', (msg) => {
    if (Number.isInteger(msg?.toSeq)) status.lastSeq = Math.max(status.lastSeq, msg.toSeq);
    if (channel?.e2e) channel.gap(); // the records' counters say how many were lost
    else notice(`${msg?.missed ?? 'some'} messages of output were lost while disconnected`);
  });
  socket.on('pairing:unpaired', (msg) => {
    const why = msg?.reason === 'RUNNER_OFFLINE' ? 'went offline' : 'disconnected';
    notice(`runner ${msg?.runnerId ?? ''} ${why}`);
    unpaired(`The runner ${why}. Pair again with its new code.`);
  });
  socket.connect();
  return socket;
}

/** After a reconnect: is the pairing still there (an embedded store may have restarted)? */
function confirmPaired() {
  socket.timeout(10000).emit('app:status', {}, (err, ack) => {
    if (!err && ack?.success && !ack.paired && session.runnerId) {
      unpaired('The gateway no longer knows this pairing. Pair again.');
    }
  });
}

/** A connection that died without a close (a phone asleep, a network change) is found at the
 * next ping; on `online` or when the page comes back, find out now and reconnect at once.
 * While the browser says it is offline, no attempt is made (they could only fail). */
function reconnectNow() {
  socket.io.reconnection(true);
  socket.disconnect();
  socket.connect(); // a fresh attempt now, not after the backoff's delay
}
function checkLink() {
  if (!socket || navigator.onLine === false) return;
  if (!socket.connected) { reconnectNow(); return; }
  socket.timeout(3000).emit('app:status', {}, (err) => {
    if (err && socket) reconnectNow();
  });
}
window.addEventListener('online', checkLink);
window.addEventListener('offline', () => {
  if (!socket) return;
  socket.io.reconnection(false);
  setState('Offline: waiting for the network', 'warn');
});
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') checkLink();
});

// -- pairing ---------------------------------------------------------------------------------

ui.form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const parsed = parseCode(ui.code.value);
  if (!parsed) {
    ui.pairError.textContent = 'Type the code the runner printed (letters, digits and -).';
    return;
  }
  ui.pairError.textContent = '';
  ui.pairButton.disabled = true;
  setState('Pairing...');
  try {
    const sock = connect();
    const ack = await sock.timeout(15000).emitWithAck('app:pair', { pairingCode: parsed.nameplate });
    if (!ack?.success) {
      ui.pairError.textContent = pairError(ack);
      setState(sock.connected ? 'Connected' : 'Not connected', sock.connected ? 'ok' : '');
      return;
    }
    session = { appSessionId: ack.appSessionId || session.appSessionId, runnerId: ack.runnerId, e2e: null };
    status.lastSeq = 0;
    term.reset();
    showTerminal();
    channel?.close();
    channel = createChannel(parsed, sock, term, hooks, ids());
    status.e2e = channel.e2e;
    if (channel.e2e) setState(`Paired with runner ${ack.runnerId}: checking the code with it...`);
    try {
      await channel.ready;
    } catch (err) {
      sock.emit('app:unpair', {});
      unpaired(err.message);
      return;
    }
    session.e2e = channel.stored();
    save(session);
    status.runnerId = ack.runnerId;
    setState(connectedText(), 'ok');
    ui.code.value = '';
    sendSize();
  } catch (err) {
    ui.pairError.textContent = err?.message?.includes('timed out')
      ? 'The gateway did not answer in time. Try again.'
      : `Pairing failed: ${err?.message ?? err}`;
    setState(socket?.connected ? 'Connected' : 'Not connected');
  } finally {
    ui.pairButton.disabled = false;
  }
});

function pairError(ack) {
  switch (ack?.error) {
    case 'INVALID_CODE': return 'Unknown or expired code. Check it, or restart the runner for a new one.';
    case 'RUNNER_OFFLINE': return 'That runner is offline.';
    case 'RATE_LIMITED': return 'Too many wrong codes: wait a minute and try again.';
    case 'UNAVAILABLE': return 'The gateway cannot reach its store right now; try again.';
    default: return ack?.message ? `Refused: ${ack.message}` : 'Refused.';
  }
}

function unpaired(message) {
  channel?.close();
  channel = null;
  session = { appSessionId: session.appSessionId, runnerId: null, e2e: null };
  status.runnerId = null;
  save(null);
  ui.form.hidden = false;
  ui.pairError.textContent = message;
  ui.tools.hidden = true;
  ui.keys.hidden = true;
  setState('Not paired');
}

ui.code.addEventListener('input', () => { ui.pairError.textContent = ''; });

// -- the terminal ----------------------------------------------------------------------------

/** WebGL where the browser draws it with a GPU; xterm's DOM renderer otherwise: software WebGL
 * (SwiftShader, llvmpipe) draws slower than the DOM. `?renderer=dom` or `?renderer=webgl`
 * chooses. After a lost WebGL context the DOM renderer takes over. */
function wantWebgl() {
  const asked = new URLSearchParams(location.search).get('renderer');
  if (asked === 'dom' || asked === 'webgl') return asked === 'webgl';
  const gl = document.createElement('canvas').getContext('webgl2', { failIfMajorPerformanceCaveat: true });
  if (!gl) return false;
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const name = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : '';
  gl.getExtension('WEBGL_lose_context')?.loseContext();
  return !/swiftshader|llvmpipe|softpipe|software/i.test(name);
}

function loadRenderer() {
  status.renderer = 'dom';
  if (!wantWebgl()) return;
  try {
    const webgl = new WebglAddon();
    webgl.onContextLoss(() => { webgl.dispose(); status.renderer = 'dom'; });
    term.loadAddon(webgl);
    status.renderer = 'webgl';
  } catch {
    status.renderer = 'dom';
  }
}

function showTerminal() {
  ui.form.hidden = true;
  ui.terminal.hidden = false;
  ui.tools.hidden = false;
  ui.keys.hidden = !keysWanted();
  ui.keysToggle.setAttribute('aria-pressed', String(!ui.keys.hidden));
  if (!opened) {
    term.open(ui.host);
    loadRenderer();
    opened = true;
    new ResizeObserver(() => scheduleFit()).observe(ui.host);
  }
  scheduleFit();
  term.focus();
}

let fitPending = false;
function scheduleFit() {
  if (fitPending) return;
  fitPending = true;
  requestAnimationFrame(() => {
    fitPending = false;
    if (!ui.terminal.hidden) fit.fit();
  });
}

function sendSize() {
  if (!socket?.connected || !session.runnerId || !opened) return;
  if (channel?.resize) channel.resize(term.cols, term.rows);
  else socket.emit('app:resize', { cols: term.cols, rows: term.rows });
}
term.onResize(() => sendSize());

// Keystrokes, with the keys bar's sticky Control and Alt applied to the next one.
const mods = { ctrl: false, alt: false };
function send(data) {
  if (!channel || !session.runnerId) return;
  const out = applyModifiers(data, mods.ctrl, mods.alt);
  if (mods.ctrl || mods.alt) releaseMods();
  channel.send(encoder.encode(out));
}
term.onData(send);
term.onBinary((data) => {
  if (!channel || !session.runnerId) return;
  channel.send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff));
});

// Copy and paste that work on plain HTTP too: the Clipboard API where the page is a secure
// context, else the selection copied through a hidden textarea, and pasting left to the
// browser's own paste (Ctrl+Shift+V, the context menu, a long press), which xterm receives.
function copySelection() {
  const text = term.getSelection();
  if (!text) return false;
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).catch(() => legacyCopy(text));
  } else {
    legacyCopy(text);
  }
  return true;
}
function legacyCopy(text) {
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'xterm-helper-textarea';
  document.body.appendChild(area);
  area.select();
  try { document.execCommand('copy'); } finally { area.remove(); term.focus(); }
}
term.attachCustomKeyEventHandler((event) => {
  if (event.type !== 'keydown') return true;
  const key = event.key.toLowerCase();
  if (event.ctrlKey && event.shiftKey && key === 'c') { copySelection(); event.preventDefault(); return false; }
  if (event.ctrlKey && event.shiftKey && key === 'v') return false; // the browser pastes
  return true;
});
$('copy').addEventListener('click', () => {
  if (!copySelection()) notice('select text first, then Copy');
  term.focus();
});
const pasteButton = $('paste');
if (navigator.clipboard?.readText && window.isSecureContext) {
  pasteButton.addEventListener('click', async () => {
    try { term.paste(await navigator.clipboard.readText()); } catch { notice('the browser refused to paste; use Ctrl+Shift+V'); }
    term.focus();
  });
} else {
  pasteButton.hidden = true; // no Clipboard API on plain HTTP: the browser's own paste works
}

// Font size: buttons (and the browser's own zoom, which the page does not disable).
function setFontSize(size) {
  const next = Math.min(32, Math.max(8, size));
  term.options.fontSize = next;
  localStorage.setItem(FONT_KEY, String(next));
  scheduleFit();
}
$('font-down').addEventListener('click', () => { setFontSize(term.options.fontSize - 1); term.focus(); });
$('font-up').addEventListener('click', () => { setFontSize(term.options.fontSize + 1); term.focus(); });
$('leave').addEventListener('click', () => {
  socket?.emit('app:unpair', {});
  notice('left');
  unpaired('Left the runner.');
});

// -- the keys bar ----------------------------------------------------------------------------

function keysWanted() {
  const stored = sessionStorage.getItem('pairing-terminal-keys');
  if (stored !== null) return stored === '1';
  return matchMedia('(pointer: coarse)').matches || navigator.maxTouchPoints > 0;
}
ui.keysToggle.addEventListener('click', () => {
  ui.keys.hidden = !ui.keys.hidden;
  ui.keysToggle.setAttribute('aria-pressed', String(!ui.keys.hidden));
  sessionStorage.setItem('pairing-terminal-keys', ui.keys.hidden ? '0' : '1');
  scheduleFit();
  term.focus();
});

function releaseMods() {
  mods.ctrl = mods.alt = false;
  for (const b of ui.keys.querySelectorAll('[data-mod]')) b.setAttribute('aria-pressed', 'false');
}
// Pressing a bar key must not take the focus from the terminal (the soft keyboard stays up).
ui.keys.addEventListener('mousedown', (event) => event.preventDefault());
ui.keys.addEventListener('click', (event) => {
  const button = event.target.closest('button');
  if (!button) return;
  const mod = button.dataset.mod;
  if (mod) {
    mods[mod] = !mods[mod];
    button.setAttribute('aria-pressed', String(mods[mod]));
  } else if (button.dataset.key) {
    send(keySequence(button.dataset.key, term.modes.applicationCursorKeysMode));
  } else if (button.dataset.text) {
    send(button.dataset.text);
  }
  term.focus();
});

// The soft keyboard shrinks the visual viewport (iOS does not resize the layout): follow it,
// so that the terminal and the keys bar stay above the keyboard.
if (window.visualViewport) {
  const follow = () => {
    document.documentElement.style.setProperty('--app-height', `${window.visualViewport.height}px`);
    scheduleFit();
  };
  window.visualViewport.addEventListener('resize', follow);
  follow();
}

// A reload of this tab (or a phone that dropped it from memory) resumes the pairing.
if (session.runnerId) {
  status.runnerId = session.runnerId;
  showTerminal();
  const sock = connect();
  channel = createChannel({ nameplate: null, secret: null }, sock, term, hooks, ids(), session.e2e);
  status.e2e = channel.e2e;
  setState('Reconnecting...', 'warn');
} else {
  save(null);
  ui.code.focus();
}
