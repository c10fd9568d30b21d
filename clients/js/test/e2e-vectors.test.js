// The protocol's own vectors (tests/support/vectors/e2e-v1.json, made by the Python client):
// every frame, key and record this module makes must be byte-equal to them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { bytesToHex, utf8ToBytes } from "../src/bytes.js";
import { joinCode, splitCode } from "../src/codes.js";
import { calculateGenerator, generatorString } from "../src/cpace.js";
import { FrameError, RecordAuthError, RecordOpener, RecordSealer, REJECT_REASON } from "../src/records.js";
import {
  AppChannel,
  AppHandshake,
  CodeBook,
  HandshakeError,
  RunnerChannel,
  RunnerHandshake,
  channelId,
  rejectFrame,
} from "../src/session.js";
import { loadVectors, unhex } from "./vectors.js";

const V = loadVectors("e2e-v1.json");
const ids = { appSessionId: V.app_session_id, runnerId: V.runner_id };
/** @param {Uint8Array} b */
const hex = (b) => bytesToHex(b);

test("the code: printed, typed, split", () => {
  assert.equal(`pairing code: ${joinCode(V.code.nameplate, V.code.secret)}`, V.code.printed);
  assert.deepEqual(splitCode(V.code.typed), { nameplate: V.code.nameplate, secret: V.code.secret });
});

test("CI for a pairing and for a re-key", () => {
  assert.equal(hex(channelId("code", utf8ToBytes(V.code.nameplate), ids.appSessionId, ids.runnerId)), V.ci_examples.code);
  assert.equal(
    hex(channelId("rekey", unhex(V.pair.keys.pairing_key_id), ids.appSessionId, ids.runnerId)),
    V.ci_examples.rekey,
  );
});

/**
 * Runs one exchange of the vectors with their fixed nonces and scalars.
 * @param {any} v the "pair" or "rekey" block
 * @param {import("../src/session.js").HandshakeInputs} appInputs
 * @param {any} runnerInputs
 */
function exchange(v, appInputs, runnerInputs) {
  const i = v.inputs;
  assert.equal(hex(generatorString(unhex(v.PRS), unhex(v.CI), unhex(v.sid))), v.generator_string);
  assert.equal(hex(calculateGenerator(unhex(v.PRS), unhex(v.CI), unhex(v.sid)).toBytes()), v.g);
  const app = new AppHandshake(appInputs, { nonce: unhex(i.nonce_a), scalar: unhex(i.ya) });
  const hello = app.hello();
  assert.equal(hex(hello), v.frames.hello);
  const runner = new RunnerHandshake(hello, runnerInputs, { nonce: unhex(i.nonce_b), scalar: unhex(i.yb) });
  assert.equal(hex(runner.response), v.frames.response);
  const finish = app.onResponse(runner.response);
  assert.equal(hex(finish), v.frames.finish);
  const { confirm, keys } = runner.onFinish(finish);
  assert.equal(hex(confirm), v.frames.confirm);
  const appKeys = app.onConfirm(confirm);
  for (const [name, k] of [
    ["key_id", "keyId"],
    ["app_to_runner", "appToRunner"],
    ["runner_to_app", "runnerToApp"],
    ["pairing_key", "pairingKey"],
    ["pairing_key_id", "pairingKeyId"],
  ]) {
    assert.equal(hex(/** @type {any} */ (keys)[k]), v.keys[name], name);
    assert.equal(hex(/** @type {any} */ (appKeys)[k]), v.keys[name], name);
  }
}

test("a pairing: every frame and key byte-equal", () => {
  const code = { nameplate: V.code.nameplate, secret: V.code.secret };
  exchange(V.pair, { ...ids, ...code }, { ...ids, ...code });
});

test("a re-key from the stored pairing key: every frame and key byte-equal", () => {
  const stored = { pairingKey: unhex(V.pair.keys.pairing_key), pairingKeyId: unhex(V.pair.keys.pairing_key_id) };
  exchange(V.rekey, { ...ids, ...stored }, { ...ids, pairingKey: stored.pairingKey });
});

test("a wrong secret: the same FINISH bytes, and the runner answers REJECT WRONG_CODE", () => {
  const i = V.pair.inputs;
  const app = new AppHandshake(
    { ...ids, nameplate: V.code.nameplate, secret: V.wrong_secret.secret },
    { nonce: unhex(i.nonce_a), scalar: unhex(i.ya) },
  );
  const runner = new RunnerHandshake(
    app.hello(),
    { ...ids, nameplate: V.code.nameplate, secret: V.code.secret },
    { nonce: unhex(i.nonce_b), scalar: unhex(i.yb) },
  );
  const finish = app.onResponse(runner.response);
  assert.equal(hex(finish), V.wrong_secret.finish);
  assert.throws(() => runner.onFinish(finish), HandshakeError);
  // Through the runner's channel: the REJECT bytes, the code burnt, the app refused.
  /** @type {Uint8Array[]} */
  const sent = [];
  const codes = new CodeBook();
  codes.issue(V.code.nameplate, V.code.secret);
  const channel = new RunnerChannel((f) => sent.push(f), { ...ids, codes, pairingKey: () => null });
  channel.fixed = { nonce: unhex(i.nonce_b), scalar: unhex(i.yb) };
  channel.receive(app.hello());
  const out = channel.receive(finish);
  assert.equal(out.burnt, true);
  assert.equal(out.rejected, "WRONG_CODE");
  assert.equal(hex(sent[1]), V.wrong_secret.runner_answers);
  assert.equal(channel.refused, true);
  assert.equal(codes.secret, null);
});

test("records: sealed byte-equal, and opened, in both directions", () => {
  for (const r of V.records) {
    const sealer = new RecordSealer(unhex(r.key), unhex(r.key_id), BigInt(r.counter));
    const { record } = sealer.seal(r.type, unhex(r.plaintext), unhex(r.nonce));
    assert.equal(hex(record), r.record);
    const opener = new RecordOpener(unhex(r.key), unhex(r.key_id));
    opener.last = BigInt(r.counter - 1);
    const opened = opener.open(unhex(r.record));
    assert.equal(opened.records.length, 1);
    assert.equal(opened.records[0].type, r.type);
    assert.equal(hex(opened.records[0].payload), r.plaintext);
  }
});

test("refused records are never opened", () => {
  const r = V.records.find((/** @type {any} */ x) => x.direction === "runner_to_app" && x.counter === 1);
  for (const bad of V.refused_records) {
    const opener = new RecordOpener(unhex(r.key), unhex(r.key_id));
    assert.throws(() => opener.open(unhex(bad.record)), (/** @type {any} */ e) => e instanceof RecordAuthError || e instanceof FrameError, bad.why);
    assert.equal(opener.last, 0n, bad.why);
    assert.equal(opener.pending.size, 0, bad.why);
  }
});

test("REJECT frames", () => {
  for (const [name, bytes] of Object.entries(V.reject_frames)) {
    assert.equal(hex(rejectFrame(/** @type {any} */ (REJECT_REASON)[name])), bytes);
  }
});

test("the app's channel opens the runner's first records of the vectors", () => {
  /** @type {Uint8Array[]} */
  const sent = [];
  const i = V.pair.inputs;
  const app = new AppChannel((f) => sent.push(f), ids);
  app.start({ nameplate: V.code.nameplate, secret: V.code.secret }, { nonce: unhex(i.nonce_a), scalar: unhex(i.ya) });
  app.receive(unhex(V.pair.frames.response));
  assert.equal(hex(sent[1]), V.pair.frames.finish);
  assert.equal(app.receive(unhex(V.pair.frames.confirm)).confirmed, true);
  const toApp = V.records.filter((/** @type {any} */ x) => x.direction === "runner_to_app");
  const out = app.receive(unhex(toApp[0].record));
  assert.equal(hex(out.data[0]), toApp[0].plaintext);
  const control = app.receive(unhex(toApp[1].record));
  assert.deepEqual(control.controls, [JSON.parse(new TextDecoder().decode(unhex(toApp[1].plaintext)))]);
  assert.equal(app.receive(unhex(toApp[0].record)).duplicates, 1);
});
