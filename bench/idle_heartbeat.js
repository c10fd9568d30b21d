#!/usr/bin/env node
'use strict';
// Many idle runners on one gateway, each heartbeating every --every seconds, with the official
// socket.io-client (websocket transport, as users' runners connect). Run by bench/cluster_official.py
// with NODE_PATH pointing at the load kit's node_modules (socket.io-client 4.8).
//
//   node bench/idle_heartbeat.js --url http://127.0.0.1:PORT --clients 20000 --every 10
//        --hold 60 [--server-pid PID] [--connect-concurrency 200]
//
// Prints one JSON line on stdout: connections made, setup time, heartbeat acks and errors over
// the hold, and (with --server-pid) the server's RSS before, after setup and at the end, and
// its CPU % over the hold. Progress goes to stderr.
const fs = require('fs');
const { io } = require('socket.io-client');

const o = { clients: 20000, every: 10, hold: 60, connectConcurrency: 200 };
const names = { '--url': 'url', '--clients': 'clients', '--every': 'every', '--hold': 'hold',
  '--server-pid': 'serverPid', '--connect-concurrency': 'connectConcurrency' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const k = names[argv[i]];
  if (!k || i + 1 >= argv.length) { console.error(`bad argument ${argv[i]}`); process.exit(2); }
  o[k] = k === 'url' ? argv[i + 1] : Number(argv[i + 1]);
}
if (!o.url) { console.error('need --url'); process.exit(2); }

const log = (m) => process.stderr.write(`[idle-hb] ${m}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const CLK_TCK = 100;
const run = Math.random().toString(16).slice(2, 8);

function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : null;
}
function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

const sockets = [];
let errors = 0;
const errorKinds = {};
function countError(kind) { errors++; errorKinds[kind] = (errorKinds[kind] || 0) + 1; }

function call(s, ev, payload) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { countError(`timeout:${ev}`); resolve(null); }, 10000);
    s.emit(ev, payload, (res) => {
      clearTimeout(timer);
      if (!res || res.success !== true) countError(`${ev}:${res && res.error}`);
      resolve(res);
    });
  });
}

function connect() {
  return new Promise((resolve, reject) => {
    const s = io(o.url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 30000 });
    s.once('connect', () => resolve(s));
    s.once('connect_error', (e) => reject(e));
  });
}

async function main() {
  const pid = o.serverPid || null;
  const rssBefore = pid ? rssKiB(pid) : null;
  const t0 = Date.now();
  let next = 0;
  // Each runner beats every `every` seconds from its registration on, as a runner does (one
  // that stopped beating for heartbeat.timeout_s would be swept as offline).
  let acks = 0;
  let stopping = false;
  const timers = [];
  const beat = (s, id) => {
    if (stopping) return;
    call(s, 'runner:heartbeat', { runnerId: id }).then((r) => { if (r && r.success) acks++; });
  };
  const worker = async () => {
    while (next < o.clients) {
      const i = next++;
      const id = `idle-hb-${run}-${i}`;
      try {
        const s = await connect();
        const ack = await call(s, 'runner:register', { runnerId: id });
        if (ack && ack.success) {
          sockets.push({ s, id });
          timers.push(setInterval(() => beat(s, id), o.every * 1000));
        } else {
          s.disconnect(); // (counted as an error; a real runner would retry)
        }
      } catch (e) {
        countError(`connect:${e.message}`);
      }
      if (i % 2000 === 0) log(`${i} connected`);
    }
  };
  await Promise.all(Array.from({ length: o.connectConcurrency }, worker));
  const setupS = (Date.now() - t0) / 1000;
  const setupErrors = errors;
  log(`${sockets.length}/${o.clients} registered in ${setupS.toFixed(1)} s; heartbeating every ${o.every} s for ${o.hold} s`);
  // One full period to settle into the rhythm, then the measured hold.
  await sleep(o.every * 1000);
  const rssSetup = pid ? rssKiB(pid) : null;
  const cpu0 = pid ? cpuTicks(pid) : null;
  const acks0 = acks;
  const errors0 = errors;
  const h0 = Date.now();
  await sleep(o.hold * 1000);
  const wall = (Date.now() - h0) / 1000;
  const cpu1 = pid ? cpuTicks(pid) : null;
  const rssEnd = pid ? rssKiB(pid) : null;
  stopping = true;
  for (const t of timers) clearInterval(t);
  const res = {
    clients: o.clients,
    connected: sockets.length,
    every_s: o.every,
    setup_s: Math.round(setupS * 10) / 10,
    setup_errors: setupErrors,
    hold_s: Math.round(wall * 10) / 10,
    heartbeats_per_s: Math.round(((acks - acks0) / wall) * 10) / 10,
    hold_errors: errors - errors0,
    error_kinds: errorKinds,
    rss_before_kib: rssBefore,
    rss_after_setup_kib: rssSetup,
    rss_end_kib: rssEnd,
    server_cpu_pct: cpu0 !== null ? Math.round(((cpu1 - cpu0) / CLK_TCK / wall) * 1000) / 10 : null,
  };
  for (const { s } of sockets) s.disconnect();
  process.stdout.write(JSON.stringify(res) + '\n');
  process.exit(0);
}

main().catch((e) => { process.stdout.write(JSON.stringify({ failed: String(e) }) + '\n'); process.exit(1); });
