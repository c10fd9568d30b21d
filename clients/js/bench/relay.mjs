// Relay load with N app/runner pairs, plain or end-to-end encrypted (this package), for
// bench/e2e.py (make bench). Each pair keeps one round trip in flight (closed loop): the app sends
// `size` bytes, the runner sends them back, the app sends the next once they are back.
// Plain: the official socket.io-client with binary data, as a plain app and runner speak.
// E2E: the same through AppClient / RunnerClient (CPace handshake once per pair, then every
// message an XChaCha20-Poly1305 record, the outbox keeping it until its ack).
// argv[2]: JSON {url, mode: "plain"|"e2e", pairs, seconds, warmup, size}. Prints JSON lines:
// {"event":"measuring"} when the measured window opens, then one result line.
import { io } from "socket.io-client";
import { AppClient, RunnerClient, randomId } from "../src/index.js";

const cfg = { pairs: 100, seconds: 10, warmup: 2, size: 64, ...JSON.parse(process.argv[2] ?? "{}") };
const payload = new Uint8Array(cfg.size).map((_, i) => 32 + (i % 90));
let rounds = 0;
let errors = 0;
let measuring = false;
const latencies = [];

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const opts = { transports: ["websocket"], reconnection: false, forceNew: true };

/** @returns {Promise<() => void>} starts the loop of one plain pair */
async function plainPair(i) {
  const runner = io(cfg.url, opts);
  await new Promise((resolve) => runner.once("connect", resolve));
  const reg = await runner.timeout(20000).emitWithAck("runner:register", { runnerId: `bench-plain-${i}-${randomId().slice(0, 8)}` });
  if (!reg.success) throw new Error(JSON.stringify(reg));
  setInterval(() => runner.emit("runner:heartbeat", { runnerId: reg.runnerId }, () => {}), reg.heartbeatIntervalMs);
  runner.on("terminal:input", ({ appSessionId, data }) => {
    runner.emit("runner:output", { data, appSessionId }, (ack) => ack?.success || errors++);
  });
  const app = io(cfg.url, { ...opts, auth: { appSessionId: randomId() } });
  await new Promise((resolve) => app.once("connect", resolve));
  const pair = await app.timeout(20000).emitWithAck("app:pair", { pairingCode: reg.pairingCode });
  if (!pair.success) throw new Error(JSON.stringify(pair));
  let sent = 0;
  const send = () => {
    sent = performance.now();
    app.emit("app:command", { data: payload }, (ack) => ack?.success || errors++);
  };
  app.on("terminal:output", () => {
    if (measuring) {
      rounds++;
      latencies.push(performance.now() - sent);
    }
    send();
  });
  return send;
}

/** @returns {Promise<() => void>} starts the loop of one E2E pair */
async function e2ePair(i) {
  const runner = new RunnerClient({ url: cfg.url, runnerId: `bench-e2e-${i}-${randomId().slice(0, 8)}`, io: opts });
  runner.on("data", (app, bytes) => runner.send(app, bytes));
  runner.on("error", () => errors++);
  const code = await runner.connect();
  const app = new AppClient({ url: cfg.url, io: opts });
  app.on("error", () => errors++);
  app.on("integrity", () => errors++);
  await app.connect();
  await app.pair(code);
  let sent = 0;
  const send = () => {
    sent = performance.now();
    app.send(payload);
  };
  app.on("data", () => {
    if (measuring) {
      rounds++;
      latencies.push(performance.now() - sent);
    }
    send();
  });
  return send;
}

const make = cfg.mode === "e2e" ? e2ePair : plainPair;
const starts = [];
// Set up in small batches: the gateway limits nothing here, but a burst of handshakes is not
// what is measured.
for (let i = 0; i < cfg.pairs; i += 10) {
  starts.push(...(await Promise.all(Array.from({ length: Math.min(10, cfg.pairs - i) }, (_, k) => make(i + k)))));
}
for (const start of starts) start();
await new Promise((r) => setTimeout(r, cfg.warmup * 1000));
measuring = true;
print({ event: "measuring" });
const t0 = performance.now();
await new Promise((r) => setTimeout(r, cfg.seconds * 1000));
measuring = false;
const elapsed = (performance.now() - t0) / 1000;
print({ event: "measured" });
latencies.sort((a, b) => a - b);
const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null);
print({
  event: "result",
  mode: cfg.mode,
  pairs: cfg.pairs,
  size: cfg.size,
  seconds: elapsed,
  round_trips: rounds,
  ops_per_s: rounds / elapsed,
  p50_ms: q(0.5),
  p99_ms: q(0.99),
  errors,
});
process.exit(0);
