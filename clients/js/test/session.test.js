// The handshake state machines, driven frame by frame as the relay would carry them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { bytesToHex, utf8ToBytes } from "../src/bytes.js";
import { IDENTITY } from "../src/cpace.js";
import { REJECT_REASON, RecordAuthError, T, frame } from "../src/records.js";
import { AppHandshake, HandshakeError, RunnerHandshake } from "../src/session.js";
import { makeSecret, splitCode, ALPHABET } from "../src/codes.js";

/**
 * Runs a handshake to its end; returns both sides' results.
 * @param {AppHandshake} app @param {RunnerHandshake} runner
 */
function run(app, runner) {
  const response = runner.receive(app.hello());
  assert.ok(response.send);
  const finish = app.receive(response.send);
  assert.ok(finish.send);
  const confirm = runner.receive(finish.send);
  assert.ok(confirm.send);
  if (confirm.error) {
    assert.throws(() => app.receive(/** @type {Uint8Array} */ (confirm.send)), HandshakeError);
    return { runner: confirm, app: null };
  }
  return { runner: confirm, app: app.receive(confirm.send) };
}

test("app and runner with the same code get one session; records flow both ways", () => {
  const app = AppHandshake.forCode("abcd2345", "xyz2345");
  const runner = RunnerHandshake.forCode("ABCD2345", "XYZ2345");
  const out = run(app, runner);
  const a = out.app?.session;
  const r = out.runner.session;
  assert.ok(a && r);
  assert.equal(bytesToHex(a.keys.pairingKey), bytesToHex(r.keys.pairingKey));
  assert.equal(bytesToHex(a.keys.keyId), bytesToHex(r.keys.keyId));
  assert.notEqual(bytesToHex(a.keys.appToRunner), bytesToHex(a.keys.runnerToApp));
  const typed = a.sealData(utf8ToBytes("echo hi\r"));
  assert.deepEqual(r.open(typed.record), { status: "ok", type: T.DATA, counter: 1n, payload: utf8ToBytes("echo hi\r") });
  const shown = r.sealData(utf8ToBytes("hi\r\n"));
  const opened = a.open(shown.record);
  assert.equal(opened.status === "ok" && bytesToHex(opened.payload), bytesToHex(utf8ToBytes("hi\r\n")));
  // A record one side sealed never opens as the other direction (keys per direction).
  assert.throws(() => a.open(typed.record), RecordAuthError);
});

test("a wrong secret: the runner sends REJECT (wrong code), the app fails WRONG_CODE", () => {
  const app = AppHandshake.forCode("ABCD2345", "XYZ2346");
  const runner = RunnerHandshake.forCode("ABCD2345", "XYZ2345");
  const out = run(app, runner);
  assert.equal(out.runner.error?.code, "WRONG_CODE");
  assert.equal(out.runner.session, undefined);
  assert.equal(bytesToHex(/** @type {Uint8Array} */ (out.runner.send)), bytesToHex(frame(T.REJECT, Uint8Array.of(REJECT_REASON.WRONG_CODE))));
  assert.equal(app.state, "failed");
  assert.equal(runner.state, "failed");
  // The code is burnt: the runner answers nothing more, not even a new HELLO with the right code.
  const retry = AppHandshake.forCode("ABCD2345", "XYZ2345");
  assert.deepEqual(runner.receive(retry.hello()), {});
});

test("the nameplate is bound: the right secret under another nameplate fails", () => {
  const out = run(AppHandshake.forCode("ABCD2346", "XYZ2345"), RunnerHandshake.forCode("ABCD2345", "XYZ2345"));
  assert.equal(out.runner.error?.code, "WRONG_CODE");
});

test("duplicate handshake frames (resends, hold replays) change nothing", () => {
  const app = AppHandshake.forCode("N4M3", "S3CR3T7");
  const runner = RunnerHandshake.forCode("N4M3", "S3CR3T7");
  const hello = app.hello();
  const response = runner.receive(hello).send;
  assert.ok(response);
  assert.deepEqual(runner.receive(hello), {});
  const finish = app.receive(response).send;
  assert.ok(finish);
  assert.deepEqual(app.receive(response), {});
  const confirm = runner.receive(finish);
  assert.ok(confirm.session && confirm.send);
  assert.deepEqual(runner.receive(finish), {});
  assert.deepEqual(runner.receive(hello), {});
  assert.ok(app.receive(confirm.send).session);
  assert.deepEqual(app.receive(confirm.send), {});
  assert.deepEqual(app.receive(response), {});
});

test("an identity or undecodable share aborts: the runner rejects, the app refuses", () => {
  for (const bad of [IDENTITY, Uint8Array.from({ length: 32 }, () => 0xff)]) {
    const runner = RunnerHandshake.forCode("N4M3", "S3CR3T7");
    runner.receive(AppHandshake.forCode("N4M3", "S3CR3T7").hello());
    const step = runner.receive(frame(T.FINISH, new Uint8Array([...bad, ...new Uint8Array(64)])));
    assert.equal(step.error?.code, "INVALID_SHARE");
    const app = AppHandshake.forCode("N4M3", "S3CR3T7");
    app.hello();
    assert.throws(
      () => app.receive(frame(T.RESPONSE, new Uint8Array([...new Uint8Array(16), ...bad]))),
      (/** @type {any} */ err) => err instanceof HandshakeError && err.code === "INVALID_SHARE",
    );
  }
});

test("a forged CONFIRM is refused by the app", () => {
  const app = AppHandshake.forCode("N4M3", "S3CR3T7");
  const runner = RunnerHandshake.forCode("N4M3", "S3CR3T7");
  const response = runner.receive(app.hello()).send;
  assert.ok(response);
  app.receive(response);
  assert.throws(
    () => app.receive(frame(T.CONFIRM, new Uint8Array(64))),
    (/** @type {any} */ err) => err instanceof HandshakeError && err.code === "WRONG_CODE",
  );
});

test("re-key from the stored pairing key: new session keys, same pairing key, counters from 1", () => {
  const first = run(AppHandshake.forCode("N4M3", "S3CR3T7"), RunnerHandshake.forCode("N4M3", "S3CR3T7"));
  const keys = first.runner.session?.keys;
  assert.ok(keys);
  const app = AppHandshake.forRekey(keys.pairingKey, keys.pairingKeyId);
  const hello = app.hello();
  assert.equal(hello[2], T.REKEY_HELLO);
  assert.equal(bytesToHex(/** @type {Uint8Array} */ (RunnerHandshake.rekeyId(hello))), bytesToHex(keys.pairingKeyId));
  const again = run(app, RunnerHandshake.forRekey(keys.pairingKey, keys.pairingKeyId));
  const a = again.app?.session;
  const r = again.runner.session;
  assert.ok(a && r);
  assert.notEqual(bytesToHex(a.keys.appToRunner), bytesToHex(keys.appToRunner));
  assert.notEqual(bytesToHex(a.keys.keyId), bytesToHex(keys.keyId));
  assert.equal(bytesToHex(a.keys.pairingKey), bytesToHex(keys.pairingKey));
  assert.equal(a.sealData(utf8ToBytes("x")).counter, 1n);
  // A re-key with another key fails confirmation.
  const wrong = run(
    AppHandshake.forRekey(new Uint8Array(32).fill(7), keys.pairingKeyId),
    RunnerHandshake.forRekey(keys.pairingKey, keys.pairingKeyId),
  );
  assert.equal(wrong.runner.error?.code, "WRONG_CODE");
});

test("REJECT with reason UNKNOWN_KEY tells the app to pair again", () => {
  const app = AppHandshake.forRekey(new Uint8Array(32), new Uint8Array(16));
  app.hello();
  assert.throws(
    () => app.receive(frame(T.REJECT, Uint8Array.of(REJECT_REASON.UNKNOWN_KEY))),
    (/** @type {any} */ err) => err.code === "UNKNOWN_KEY",
  );
});

test("codes: 7-symbol secrets from the alphabet, split at the last '-'", () => {
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const s = makeSecret();
    assert.match(s, new RegExp(`^[${ALPHABET}]{7}$`));
    seen.add(s);
  }
  assert.equal(seen.size, 200);
  assert.deepEqual(splitCode(" abcd-2345-xyz2345\n"), { nameplate: "ABCD-2345", secret: "XYZ2345" });
  assert.throws(() => splitCode("ABCD2345"));
  assert.throws(() => splitCode("ABCD-"));
});
