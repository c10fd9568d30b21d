// The full pairing scenario driven by the official JavaScript client, socket.io-client 4.x.
//
// Started by tests/clients/test_js_client.py and tests/scenarios/test_nginx.py as
//   node scenario.mjs '<json config>'
// with config keys:
//   runnerUrl, appUrl      where the runner and the app connect (a gateway or a load balancer)
//   resumeUrl              where the app reconnects to resume (default appUrl)
//   transports             socket.io-client's `transports`, e.g. ["websocket"] or
//                          ["polling", "websocket"] (long-polling, then upgrade)
//   upgrade                false to forbid the upgrade (long-polling only); default true
//   runnerId, appSessionId identities to use
//   runnerLocalAddress, appLocalAddress   optional source addresses (127.x.y.z) for the
//                          runner's and the app's connections, so that a load balancer
//                          hashing on the client address sees two different clients
//   burst                  commands sent without waiting for acks (order check), default 20
//   timeoutMs              per step, default 10000
//
// It prints one JSON object per line on stdout: {"step": name, ...what it saw}. The Python
// test asserts on those; this script only sequences the steps (it needs the pairing code
// from one ack for the next step) and stops at the first step that times out or throws,
// printing {"step": "error", "at": name, "message": text} and exiting with status 1.

import http from "node:http";
import { createRequire } from "node:module";
import { io } from "socket.io-client";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const TIMEOUT = cfg.timeoutMs ?? 10000;
const BURST = cfg.burst ?? 20;
const SERVER_EVENTS = [
  "pairing:paired",
  "pairing:app_unpaired",
  "pairing:unpaired",
  "terminal:input",
  "terminal:output",
];

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const require = createRequire(import.meta.url);
out({
  step: "versions",
  node: process.version,
  "socket.io-client": require("socket.io-client/package.json").version,
  "engine.io-client": require("engine.io-client/package.json").version,
});

/** One socket.io-client connection that queues every server event it receives. */
class Peer {
  constructor(name, url, { auth, localAddress } = {}) {
    this.name = name;
    this.queues = new Map();
    this.waiters = new Map();
    this.agent = localAddress ? new http.Agent({ keepAlive: true, localAddress }) : undefined;
    this.socket = io(url, {
      transports: cfg.transports ?? ["websocket"],
      upgrade: cfg.upgrade ?? true,
      reconnection: false,
      forceNew: true,
      timeout: TIMEOUT,
      auth,
      agent: this.agent,
    });
    this.initialTransport = null;
    this.socket.io.on("open", () => {
      this.initialTransport = this.socket.io.engine.transport.name;
    });
    for (const event of SERVER_EVENTS) {
      this.socket.on(event, (data) => this.push(event, data));
    }
  }

  push(event, data) {
    const waiting = this.waiters.get(event);
    if (waiting?.length) {
      waiting.shift()(data);
      return;
    }
    if (!this.queues.has(event)) this.queues.set(event, []);
    this.queues.get(event).push(data);
  }

  /** The next `event` from the server (queued or future), or a rejection after TIMEOUT. */
  next(event) {
    const queued = this.queues.get(event);
    if (queued?.length) return Promise.resolve(queued.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: no ${event} within ${TIMEOUT} ms`)),
        TIMEOUT,
      );
      if (!this.waiters.has(event)) this.waiters.set(event, []);
      this.waiters.get(event).push((data) => {
        clearTimeout(timer);
        resolve(data);
      });
    });
  }

  pending(event) {
    return this.queues.get(event)?.length ?? 0;
  }

  /** Resolves once connected (and, when the upgrade is allowed and websocket is among the
   * transports, once upgraded); reports which transports were used. */
  async connected() {
    await new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("connect_error", (err) =>
        reject(new Error(`${this.name}: connect_error ${err.message}`)),
      );
    });
    const engine = this.socket.io.engine;
    const wantsUpgrade =
      (cfg.upgrade ?? true) && (cfg.transports ?? []).includes("websocket");
    if (wantsUpgrade && engine.transport.name !== "websocket") {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`${this.name}: no upgrade within ${TIMEOUT} ms`)),
          TIMEOUT,
        );
        engine.once("upgrade", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return {
      initialTransport: this.initialTransport,
      transport: engine.transport.name,
      engineId: engine.id,
    };
  }

  ack(event, payload) {
    return this.socket.timeout(TIMEOUT).emitWithAck(event, payload);
  }

  close() {
    this.socket.disconnect();
    this.agent?.destroy();
  }
}

/** Like Promise.all, but a rejection becomes {error} in place (never unhandled). */
function settled(promises) {
  return Promise.all(promises.map((p) => p.catch((err) => ({ error: String(err) }))));
}

let current = "start";
async function step(name, fn) {
  current = name;
  const result = await fn();
  out({ step: name, ...result });
  return result;
}

const peers = [];
function peer(name, url, opts) {
  const p = new Peer(name, url, opts);
  peers.push(p);
  return p;
}

async function main() {
  const runnerId = cfg.runnerId;
  const appSessionId = cfg.appSessionId;

  const runner = peer("runner", cfg.runnerUrl, { localAddress: cfg.runnerLocalAddress });
  await step("runner_connected", () => runner.connected());
  const reg = await step("register", async () => ({
    ack: await runner.ack("runner:register", { runnerId }),
  }));

  // A runner heartbeats at the interval the register ack names; errors are reported.
  const heartbeatErrors = [];
  const beat = setInterval(async () => {
    try {
      const ack = await runner.ack("runner:heartbeat", { runnerId });
      if (!ack.success) heartbeatErrors.push(ack);
    } catch (err) {
      heartbeatErrors.push({ error: String(err) });
    }
  }, reg.ack.heartbeatIntervalMs);

  const app = peer("app", cfg.appUrl, {
    auth: { appSessionId },
    localAddress: cfg.appLocalAddress,
  });
  await step("app_connected", () => app.connected());

  await step("pair_bad_code", async () => ({
    ack: await app.ack("app:pair", { pairingCode: "ZZZZ-NOT-A-CODE" }),
  }));
  await step("pair", async () => ({
    ack: await app.ack("app:pair", { pairingCode: reg.ack.pairingCode }),
  }));
  await step("runner_paired", async () => ({ data: await runner.next("pairing:paired") }));

  // One command and its output, with the acks of both sides.
  await step("command", async () => ({
    ack: await app.ack("app:command", { data: "uname -a" }),
  }));
  const input = await step("runner_input", async () => ({
    data: await runner.next("terminal:input"),
  }));
  await step("output", async () => ({
    ack: await runner.ack("runner:output", {
      data: `ran: ${input.data.data}`,
      appSessionId: input.data.appSessionId,
    }),
  }));
  await step("app_output", async () => ({ data: await app.next("terminal:output") }));

  // A burst sent without waiting for acks must arrive in order, both ways.
  await step("burst", async () => {
    const sent = Array.from({ length: BURST }, (_, i) => `line ${i}`);
    const commandAcks = settled(sent.map((data) => app.ack("app:command", { data })));
    const inputs = [];
    for (let i = 0; i < BURST; i += 1) inputs.push((await runner.next("terminal:input")).data);
    const outputAcks = settled(
      inputs.map((data) => runner.ack("runner:output", { data: `out ${data}` })),
    );
    const outputs = [];
    for (let i = 0; i < BURST; i += 1) outputs.push((await app.next("terminal:output")).data);
    return {
      sent,
      inputs,
      outputs,
      commandAcks: await commandAcks,
      outputAcks: await outputAcks,
    };
  });

  await step("status_paired", async () => ({ ack: await app.ack("app:status", {}) }));

  await step("unpair", async () => ({ ack: await app.ack("app:unpair", {}) }));
  await step("runner_app_unpaired", async () => ({
    data: await runner.next("pairing:app_unpaired"),
  }));
  await step("status_unpaired", async () => ({ ack: await app.ack("app:status", {}) }));
  await step("command_unpaired", async () => ({
    ack: await app.ack("app:command", { data: "ls" }),
  }));

  // Codes are single-use: register again for a fresh one, then pair again.
  const reg2 = await step("register_again", async () => ({
    ack: await runner.ack("runner:register", { runnerId }),
  }));
  await step("pair_again", async () => ({
    ack: await app.ack("app:pair", { pairingCode: reg2.ack.pairingCode }),
  }));
  await step("runner_paired_again", async () => ({
    data: await runner.next("pairing:paired"),
  }));

  // The app goes away and comes back with the same appSessionId: still paired.
  app.close();
  const resumed = peer("resumed", cfg.resumeUrl ?? cfg.appUrl, {
    auth: { appSessionId },
    localAddress: cfg.resumeLocalAddress ?? cfg.appLocalAddress,
  });
  await step("resumed_connected", () => resumed.connected());
  await step("status_resumed", async () => ({ ack: await resumed.ack("app:status", {}) }));
  await step("resumed_command", async () => ({
    ack: await resumed.ack("app:command", { data: "whoami" }),
  }));
  await step("resumed_input", async () => ({ data: await runner.next("terminal:input") }));
  await step("resumed_output", async () => {
    await runner.ack("runner:output", { data: "ran: whoami" });
    return { data: await resumed.next("terminal:output") };
  });

  // The runner disconnects: the app is told, once, and is no longer paired.
  clearInterval(beat);
  await step("heartbeats", async () => ({ errors: heartbeatErrors }));
  runner.close();
  await step("unpaired", async () => ({ data: await resumed.next("pairing:unpaired") }));
  await step("status_after_runner_gone", async () => ({
    ack: await resumed.ack("app:status", {}),
  }));
  await step("leftovers", async () => ({
    unpaired: resumed.pending("pairing:unpaired"),
    output: resumed.pending("terminal:output"),
    input: runner.pending("terminal:input"),
  }));
  resumed.close();
  out({ step: "done" });
}

let status = 0;
try {
  await main();
} catch (err) {
  out({ step: "error", at: current, message: String(err?.stack ?? err) });
  status = 1;
}
for (const p of peers) p.close();
// Exit now rather than when every timer has run out (stdout to a pipe is synchronous).
process.exit(status);
