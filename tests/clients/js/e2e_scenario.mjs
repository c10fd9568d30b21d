// The E2E module (clients/js) against a real gateway, driven by tests/clients/js/test_e2e_*.py.
// argv[2] is a JSON config {scenario, url, ...}; every step prints one JSON line
// {"step": name, ...}; a failure prints {"step": "error", "at", "message"} and exits 1.
import {
  AppClient,
  HandshakeError,
  MemoryStore,
  RunnerClient,
  bytesToHex,
  randomId,
} from "../../../clients/js/src/index.js";

const config = JSON.parse(process.argv[2] ?? "{}");
const TIMEOUT = config.timeoutMs ?? 30000;
let at = "start";

/** @param {string} step @param {Record<string, unknown>} [fields] */
function out(step, fields = {}) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
}

/**
 * Resolves with the first value `check` returns that is not undefined, on `event`.
 * @template T
 * @param {{on: Function, off: Function}} emitter @param {string} event
 * @param {(...args: any[]) => T | undefined} check
 * @returns {Promise<T>}
 */
function waitFor(emitter, event, check = (x) => x) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out waiting for ${event} at ${at}`));
    }, TIMEOUT);
    /** @param {...any} args */
    function handler(...args) {
      const value = check(...args);
      if (value !== undefined) {
        clearTimeout(timer);
        emitter.off(event, handler);
        resolve(value);
      }
    }
    emitter.on(event, handler);
  });
}

const text = (/** @type {Uint8Array} */ b) => new TextDecoder().decode(b);

/** A runner that answers every DATA record with "echo:" + the bytes. */
function echoRunner(/** @type {RunnerClient} */ runner) {
  runner.on("data", (appSessionId, bytes) => runner.send(appSessionId, `echo:${text(bytes)}`));
}

/** Collects the app's decrypted output, in order. */
function collect(/** @type {AppClient} */ app) {
  /** @type {string[]} */
  const got = [];
  app.on("data", (bytes) => got.push(text(bytes)));
  return got;
}

async function untilCount(/** @type {string[]} */ got, /** @type {number} */ n) {
  const deadline = Date.now() + TIMEOUT;
  while (got.length < n) {
    if (Date.now() > deadline) throw new Error(`got ${got.length} of ${n} at ${at}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runner and app of this module, in this process: the whole life of a pairing. */
async function both() {
  const runner = new RunnerClient({ url: config.url, runnerId: config.runnerId, store: new MemoryStore() });
  echoRunner(runner);
  at = "runner connect";
  const code = await runner.connect();
  out("code", { code });

  // A wrong secret: the runner refuses (one guess) and shows a new code; the app fails.
  at = "wrong code";
  const appStore = new MemoryStore();
  const appSessionId = randomId();
  const app = new AppClient({ url: config.url, appSessionId, store: appStore });
  const got = collect(app);
  await app.connect();
  const nextCode = waitFor(runner, "code");
  const rejected = waitFor(runner, "rejected", (id, message) => ({ id, message }));
  const [nameplate, secret] = code.split("-");
  const wrong = `${nameplate}-${secret === "2222222" ? "3333333" : "2222222"}`;
  const failure = await app.pair(wrong).then(
    () => null,
    (err) => (err instanceof HandshakeError ? err.code : String(err)),
  );
  out("wrong_code", { appError: failure, runner: await rejected, newCode: await nextCode, appSessionId });
  const code2 = await nextCode;

  // The same app, refused, pairs again with the new code: a session, bytes both ways.
  at = "pair";
  const runnerSession = waitFor(runner, "session", (id, s) => ({ id, keyId: bytesToHex(s.keys.keyId) }));
  const session = await app.pair(code2.toLowerCase());
  out("paired", { appKeyId: bytesToHex(session.keys.keyId), runner: await runnerSession, appSessionId });
  at = "exchange";
  app.send(config.marker ?? "hello");
  await untilCount(got, 1);
  out("exchange", { got: got.slice() });

  // Frames written into a socket that dies before its acks: sent again after the
  // reconnect, the receiver drops what it already had: all arrive once, in order.
  at = "resend";
  const n = config.burst ?? 50;
  for (let i = 0; i < n; i++) app.send(`k${i}`);
  app.socket.io.engine.close();
  await untilCount(got, 1 + n);
  await app.flushed();
  await new Promise((r) => setTimeout(r, 300));
  out("resend", { got: got.slice(1), resent: app.outbox.resent, duplicates: runner.duplicates });

  // A process restart of the app: same appSessionId, the stored pairing key, no code.
  at = "rekey";
  app.close();
  const again = new AppClient({ url: config.url, appSessionId, store: appStore, lastSeq: app.lastSeq });
  const got2 = collect(again);
  await again.connect();
  const rekeyed = await again.rekey();
  again.send("after restart");
  await untilCount(got2, 1);
  out("rekey", { got: got2, sameKeyId: bytesToHex(rekeyed.keys.keyId) === bytesToHex(session.keys.keyId) });
  again.close();
  runner.close();
}

/** Only an app of this module: pairs with `code`, sends `commands`, prints what comes back. */
async function appOnly() {
  const app = new AppClient({ url: config.url, appSessionId: config.appSessionId ?? randomId() });
  const got = collect(app);
  app.on("integrity", (err) => out("integrity", { message: err.message }));
  await app.connect();
  at = "pair";
  try {
    await app.pair(config.code);
  } catch (err) {
    out("pair_failed", { code: err instanceof HandshakeError ? err.code : null, message: String(err) });
    app.close();
    process.exitCode = 3;
    return;
  }
  out("paired", { appSessionId: app.appSessionId });
  at = "commands";
  for (const command of config.commands ?? []) app.send(command);
  const expect = config.expect ?? "";
  const deadline = Date.now() + TIMEOUT;
  while (!got.join("").includes(expect)) {
    if (Date.now() > deadline) throw new Error(`no ${JSON.stringify(expect)} in ${JSON.stringify(got.join(""))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  out("output", { text: got.join("") });
  await app.flushed();
  app.close();
}

/** Only a runner of this module: prints its code, echoes, stops after `sessions` sessions' `records`. */
async function runnerOnly() {
  const runner = new RunnerClient({ url: config.url, runnerId: config.runnerId });
  echoRunner(runner);
  runner.on("code", (code) => out("code", { code }));
  runner.on("rejected", (id, message) => out("rejected", { appSessionId: id, message }));
  runner.on("session", (id) => out("session", { appSessionId: id }));
  runner.on("data", (id, bytes) => out("data", { appSessionId: id, text: text(bytes) }));
  await runner.connect();
  // Runs until the test stops it (SIGTERM) or stdin closes.
  await new Promise((resolve) => {
    process.stdin.on("end", resolve);
    process.stdin.resume();
    process.on("SIGTERM", resolve);
  });
  await runner.flushed();
  runner.close();
}

/**
 * Two-way streams while the app's replica is SIGKILLed (by the test, when this prints
 * "kill") and comes back: every message arrives once, in order, at both ends.
 */
async function crash() {
  const runner = new RunnerClient({ url: config.runnerUrl, runnerId: config.runnerId });
  /** @type {string[]} */
  const atRunner = [];
  runner.on("data", (_app, bytes) => atRunner.push(text(bytes)));
  at = "runner connect";
  const code = await runner.connect();
  const app = new AppClient({ url: config.appUrl, io: { reconnectionDelay: 200, reconnectionDelayMax: 1000 } });
  const atApp = collect(app);
  await app.connect();
  at = "pair";
  const appSessionId = (await app.pair(code), app.appSessionId);
  const n = config.count ?? 200;
  at = "streams";
  let disconnects = 0;
  app.on("disconnect", () => disconnects++);
  for (let i = 0; i < n; i++) {
    app.send(`a${i}`);
    runner.send(appSessionId, `r${i}`);
    if (i === Math.floor(n / 2)) out("kill");
    await new Promise((r) => setTimeout(r, config.intervalMs ?? 10));
  }
  at = "delivery";
  const deadline = Date.now() + TIMEOUT;
  while (atApp.length < n || atRunner.length < n) {
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await Promise.all([app.flushed(), runner.flushed()]);
  await new Promise((r) => setTimeout(r, 500)); // anything doubled would come now
  out("crash", {
    atApp,
    atRunner,
    disconnects,
    resent: app.outbox.resent,
    appDuplicates: app.duplicates,
    runnerDuplicates: runner.duplicates,
  });
  app.close();
  runner.close();
}

const scenarios = { both, app: appOnly, runner: runnerOnly, crash };
try {
  await /** @type {Record<string, () => Promise<void>>} */ (scenarios)[config.scenario]();
  out("done");
} catch (err) {
  out("error", { at, message: String(err?.stack ?? err) });
  process.exitCode = 1;
}
setTimeout(() => process.exit(), 50).unref();
