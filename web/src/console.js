// The operator console: asks for the operator token, then polls the console's data endpoints
// (Authorization: Bearer <token>) and renders them as tables. Every value is set as text.

import './console.css';

const POLL_MS = 2000;
const TOKEN_KEY = 'pairing-console-token';
const $ = (id) => document.getElementById(id);
const ui = {
  state: $('state'), login: $('login'), token: $('token'), error: $('login-error'), data: $('data'),
};

let token = sessionStorage.getItem(TOKEN_KEY);
let timer = null;

function setState(text) { ui.state.textContent = text; }

const time = (ms) => (ms ? new Date(ms).toLocaleString() : '');
function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text == null ? '' : String(text);
  if (className) td.className = className;
  return td;
}

function fill(tableId, rows, columns, emptyText) {
  const body = $(tableId).tBodies[0];
  const out = [];
  for (const row of rows) {
    const tr = document.createElement('tr');
    for (const col of columns) tr.appendChild(col(row));
    out.push(tr);
  }
  if (!out.length) {
    const tr = document.createElement('tr');
    const td = cell(emptyText, 'empty');
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    tr.appendChild(td);
    out.push(tr);
  }
  body.replaceChildren(...out);
}

async function get(path) {
  const res = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (res.status === 401) throw Object.assign(new Error('The operator token is wrong.'), { auth: true });
  if (res.status === 429) throw Object.assign(new Error('Too many wrong tokens from here: wait a minute.'), { auth: true });
  if (!res.ok) throw new Error(`${path} answered ${res.status}`);
  return res.json();
}

async function refresh() {
  try {
    const [runners, pairings, replicas, history] = await Promise.all([
      get('/console/api/runners'), get('/console/api/pairings'),
      get('/console/api/replicas'), get('/console/api/history'),
    ]);
    ui.login.hidden = true;
    ui.data.hidden = false;
    $('runners-count').textContent = `(${runners.total})`;
    fill('runners', runners.runners, [
      (r) => cell(r.runnerId, 'mono'),
      (r) => cell(r.replica ?? 'unknown', 'mono'),
      (r) => cell(r.since ? `${time(r.since)} (${ago(r.since)})` : 'not reported yet'),
      (r) => cell(ago(r.lastHeartbeat)),
      (r) => cell(r.apps.length ? r.apps.join(', ') : 'none', 'mono'),
    ], 'No runner is online.');
    $('pairings-count').textContent = `(${pairings.pairings.length})`;
    fill('pairings', pairings.pairings, [
      (p) => cell(p.app, 'mono'),
      (p) => cell(p.runnerId, 'mono'),
      (p) => cell(time(p.pairedAt)),
    ], 'No pairing.');
    fill('replicas', replicas.replicas, [
      (r) => cell(r.replicaId, 'mono'),
      (r) => cell(r.status, r.status === 'up' ? 'status-up' : 'status-down'),
      (r) => cell(r.store ? 'ok' : 'unreachable'),
      (r) => cell(r.fanout ? 'ok' : 'down'),
      (r) => cell(r.apps),
      (r) => cell(r.runners),
      (r) => cell(time(r.startedAt)),
      (r) => cell(ago(r.reportedAt)),
    ], 'No replica has reported.');
    fill('history', history.entries, [
      (e) => cell(time(e.at)),
      (e) => cell(e.event),
      (e) => cell(e.runnerId, 'mono'),
      (e) => cell(e.app, 'mono'),
      (e) => cell(e.reason),
      (e) => cell(e.address, 'mono'),
    ], 'Nothing yet.');
    setState(`Live: updated ${new Date().toLocaleTimeString()}, every ${POLL_MS / 1000} s.`);
    schedule();
  } catch (err) {
    if (err.auth) {
      forget();
      ui.error.textContent = err.message;
      setState('Enter the operator token.');
    } else {
      setState(`Could not update (${err.message}); retrying.`);
      schedule();
    }
  }
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(refresh, document.visibilityState === 'visible' ? POLL_MS : POLL_MS * 5);
}

function forget() {
  clearTimeout(timer);
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  ui.login.hidden = false;
  ui.data.hidden = true;
}

ui.login.addEventListener('submit', (event) => {
  event.preventDefault();
  const typed = ui.token.value.trim();
  if (!typed) return;
  token = typed;
  sessionStorage.setItem(TOKEN_KEY, token);
  ui.token.value = '';
  ui.error.textContent = '';
  setState('Loading...');
  refresh();
});
$('logout').addEventListener('click', () => { forget(); setState('Enter the operator token.'); ui.token.focus(); });
document.addEventListener('visibilitychange', () => { if (token && document.visibilityState === 'visible') refresh(); });

if (token) refresh();
else ui.token.focus();
