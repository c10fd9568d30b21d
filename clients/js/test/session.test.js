// App and runner channels back to back, frames carried as the relay would (and replayed,
// resent, altered as the relay might).
import assert from "node:assert/strict";
import { test } from "node:test";
import { bytesToHex, utf8ToBytes } from "../src/bytes.js";
import { ALPHABET, makeSecret, splitCode } from "../src/codes.js";
import { IDENTITY } from "../src/cpace.js";
import { REJECT_REASON, T, frame } from "../src/records.js";
import { AppChannel, CodeBook, RunnerChannel } from "../src/session.js";

const ids = { appSessionId: "app-session-0123456789", runnerId: "laptop-1" };
const text = (/** @type {Uint8Array[]} */ chunks) => chunks.map((c) => new TextDecoder().decode(c)).join("");

/**
 * An app and a runner channel whose frames are queued, to be delivered by the test.
 * @param {{nameplate: string, secret: string}} runnerCode
 * @param {Map<string, Uint8Array>} [runnerKeys] pairing key id (hex) -> key
 */
function pair(runnerCode, runnerKeys = new Map()) {
  /** @type {Uint8Array[]} */
  const toRunner = [];
  /** @type {Uint8Array[]} */
  const toApp = [];
  const codes = new CodeBook();
  codes.issue(runnerCode.nameplate, runnerCode.secret);
  const app = new AppChannel((f) => toRunner.push(f), ids);
  const runner = new RunnerChannel((f) => toApp.push(f), {
    ...ids,
    codes,
    pairingKey: (id) => runnerKeys.get(bytesToHex(id)) ?? null,
  });
  /** Delivers everything queued, both ways, until quiet; returns what each side received. */
  function flush() {
    /** @type {import("../src/session.js").Received[]} */
    const atApp = [];
    /** @type {import("../src/session.js").Received[]} */
    const atRunner = [];
    while (toRunner.length || toApp.length) {
      while (toRunner.length) atRunner.push(runner.receive(/** @type {Uint8Array} */ (toRunner.shift())));
      while (toApp.length) atApp.push(app.receive(/** @type {Uint8Array} */ (toApp.shift())));
    }
    return { atApp, atRunner };
  }
  return { app, runner, codes, toRunner, toApp, flush };
}

test("the right code: confirmed on both sides, records both ways, keys per direction", () => {
  const p = pair({ nameplate: "ABCD2345", secret: "XYZ2345" });
  p.app.start({ nameplate: "abcd2345", secret: "xyz2345" });
  const { atApp, atRunner } = p.flush();
  assert.ok(atApp.some((r) => r.confirmed));
  assert.ok(atRunner.some((r) => r.confirmed));
  assert.equal(bytesToHex(/** @type {any} */ (p.app.keys).pairingKey), bytesToHex(/** @type {any} */ (p.runner.keys).pairingKey));
  p.app.sendData(utf8ToBytes("echo hi\r"));
  p.app.sendResize(120, 40);
  const typed = p.toRunner.slice();
  const r1 = p.flush().atRunner;
  assert.equal(text(r1.flatMap((r) => r.data)), "echo hi\r");
  assert.deepEqual(r1.flatMap((r) => r.resizes), [[120, 40]]);
  // Keys per direction: the app cannot open the record it sent itself.
  assert.ok(p.app.receive(typed[0]).integrity);
  p.runner.sendData(utf8ToBytes("hi\r\n"));
  p.runner.sendControl({ exit: 0 });
  const a1 = p.flush().atApp;
  assert.equal(text(a1.flatMap((r) => r.data)), "hi\r\n");
  assert.deepEqual(a1.flatMap((r) => r.controls), [{ exit: 0 }]);
});

test("records sent before the handshake finished go out once it has, in order", () => {
  const p = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.app.sendData(utf8ToBytes("early"));
  const { atRunner } = p.flush();
  assert.equal(text(atRunner.flatMap((r) => r.data)), "early");
});

test("a wrong secret: REJECT WRONG_CODE, the code burnt, the app refused from then on", () => {
  const p = pair({ nameplate: "ABCD2345", secret: "XYZ2345" });
  p.app.start({ nameplate: "ABCD2345", secret: "XYZ2346" });
  const { atApp, atRunner } = p.flush();
  assert.ok(atRunner.some((r) => r.burnt && r.rejected === "WRONG_CODE"));
  assert.ok(atApp.some((r) => r.rejected === "WRONG_CODE"));
  assert.equal(p.app.failed, "WRONG_CODE");
  assert.equal(p.app.open, false);
  assert.equal(p.runner.refused, true);
  assert.equal(p.codes.secret, null);
  // Even the right code from that app is not answered any more.
  p.app.start({ nameplate: "ABCD2345", secret: "XYZ2345" });
  assert.equal(p.flush().atApp.length, 0);
});

test("one guess per code across apps: after a wrong FINISH another app's HELLO is refused", () => {
  const p = pair({ nameplate: "ABCD2345", secret: "XYZ2345" });
  p.app.start({ nameplate: "ABCD2345", secret: "WRONG22" });
  p.flush();
  /** @type {Uint8Array[]} */
  const toApp2 = [];
  const other = new RunnerChannel((f) => toApp2.push(f), {
    appSessionId: "other-app-0123456789",
    runnerId: ids.runnerId,
    codes: p.codes,
    pairingKey: () => null,
  });
  const app2 = new AppChannel(() => {}, { appSessionId: "other-app-0123456789", runnerId: ids.runnerId });
  /** @type {Uint8Array[]} */
  const hello = [];
  const app2b = new AppChannel((f) => hello.push(f), { appSessionId: "other-app-0123456789", runnerId: ids.runnerId });
  app2b.start({ nameplate: "ABCD2345", secret: "XYZ2345" });
  const out = other.receive(hello[0]);
  assert.equal(out.rejected, "WRONG_CODE");
  assert.equal(bytesToHex(toApp2[0]), bytesToHex(frame(T.REJECT, Uint8Array.of(REJECT_REASON.WRONG_CODE))));
  assert.equal(app2.receive(toApp2[0]).rejected, "WRONG_CODE");
});

test("the nameplate and both ids are bound: the right secret under another nameplate fails", () => {
  const p = pair({ nameplate: "ABCD2345", secret: "XYZ2345" });
  p.app.start({ nameplate: "ABCD2346", secret: "XYZ2345" });
  assert.ok(p.flush().atRunner.some((r) => r.burnt));
});

test("resent and replayed handshake frames are answered once", () => {
  const p = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
  const hello = p.toRunner[0];
  p.runner.receive(hello);
  const response = p.toApp[0];
  p.runner.receive(hello); // resent HELLO: not answered again
  assert.equal(p.toApp.length, 1);
  p.app.receive(response);
  p.app.receive(response); // replayed RESPONSE: no second FINISH
  assert.equal(p.toRunner.length, 2);
  const finish = p.toRunner[1];
  assert.equal(p.runner.receive(finish).confirmed, true);
  assert.deepEqual(p.runner.receive(finish).confirmed, false); // answered already
  assert.equal(p.toApp.length, 2);
  assert.equal(p.app.receive(p.toApp[1]).confirmed, true);
  assert.equal(p.app.receive(p.toApp[1]).confirmed, false);
});

test("duplicate records are dropped; an early record waits for the one before it", () => {
  const p = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.flush();
  for (const s of ["a", "b", "c"]) p.runner.sendData(utf8ToBytes(s));
  const [a, b, c] = p.toApp.splice(0);
  assert.equal(text(p.app.receive(a).data), "a");
  assert.equal(p.app.receive(a).duplicates, 1);
  const early = p.app.receive(c);
  assert.deepEqual(early.data, []);
  assert.equal(text(p.app.receive(b).data), "bc");
  assert.equal(p.app.receive(c).duplicates, 1);
});

test("a gap (lost for good) releases the records held after it, counting the lost ones", () => {
  const p = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.flush();
  for (const s of ["1", "2", "3", "4"]) p.runner.sendData(utf8ToBytes(s));
  const [one, , , four] = p.toApp.splice(0);
  p.app.receive(one);
  assert.deepEqual(p.app.receive(four).data, []);
  const gap = p.app.gap();
  assert.equal(text(gap.data), "4");
  assert.equal(gap.lost, 2);
});

test("an altered record is never delivered: the runner says INTEGRITY and drops the session", () => {
  const p = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.flush();
  p.app.sendData(utf8ToBytes("rm -rf ~/tmp\r"));
  const record = /** @type {Uint8Array} */ (p.toRunner.shift());
  const bad = record.slice();
  bad[bad.length - 20] ^= 0x40;
  const out = p.runner.receive(bad);
  assert.ok(out.integrity);
  assert.deepEqual(out.data, []);
  assert.equal(p.app.receive(/** @type {Uint8Array} */ (p.toApp.shift())).rejected, "INTEGRITY");
  assert.equal(p.app.open, false);
  // The genuine record after that meets no session: NO_SESSION, told once.
  p.runner.receive(record);
  p.runner.receive(record);
  assert.equal(p.toApp.length, 1);
  assert.equal(bytesToHex(p.toApp[0]), bytesToHex(frame(T.REJECT, Uint8Array.of(REJECT_REASON.NO_SESSION))));
});

test("an altered record to the app is reported and never shown; the session goes on", () => {
  const p = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.flush();
  p.runner.sendData(utf8ToBytes("secret output"));
  const record = /** @type {Uint8Array} */ (p.toApp.shift());
  const bad = record.slice();
  bad[30] ^= 1;
  const out = p.app.receive(bad);
  assert.ok(out.integrity);
  assert.deepEqual(out.data, []);
  assert.equal(text(p.app.receive(record).data), "secret output");
});

test("an identity or undecodable share aborts the handshake", () => {
  for (const bad of [IDENTITY, Uint8Array.from({ length: 32 }, () => 0xff)]) {
    const p = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
    p.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
    p.runner.receive(/** @type {Uint8Array} */ (p.toRunner.shift()));
    const out = p.runner.receive(frame(T.FINISH, new Uint8Array([...bad, ...new Uint8Array(64)])));
    assert.equal(out.rejected, "WRONG_CODE");
    const q = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
    q.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
    const res = q.app.receive(frame(T.RESPONSE, new Uint8Array([...new Uint8Array(16), ...bad])));
    assert.equal(res.rejected, "WRONG_CODE");
    assert.equal(q.toRunner.length, 1); // the HELLO only: no FINISH
  }
});

test("a forged CONFIRM is refused by the app", () => {
  const p = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.runner.receive(/** @type {Uint8Array} */ (p.toRunner.shift()));
  p.app.receive(/** @type {Uint8Array} */ (p.toApp.shift()));
  const out = p.app.receive(frame(T.CONFIRM, new Uint8Array(64)));
  assert.equal(out.rejected, "WRONG_CODE");
  assert.equal(p.app.open, false);
});

test("re-key from the stored pairing key: new keys, records from 1; an unknown key is refused", () => {
  const p = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.app.start({ nameplate: "N4M3", secret: "S3CR3T7" });
  p.flush();
  const keys = /** @type {import("../src/session.js").SessionKeys} */ (p.app.keys);
  const stored = new Map([[bytesToHex(keys.pairingKeyId), keys.pairingKey]]);
  const q = pair({ nameplate: "OTHER", secret: "UNUSED2" }, stored);
  q.app.startRekey({ pairingKey: keys.pairingKey, pairingKeyId: keys.pairingKeyId });
  assert.equal(q.toRunner[0][2], T.REKEY_HELLO);
  const { atApp } = q.flush();
  assert.ok(atApp.some((r) => r.confirmed));
  const fresh = /** @type {import("../src/session.js").SessionKeys} */ (q.app.keys);
  assert.notEqual(bytesToHex(fresh.keyId), bytesToHex(keys.keyId));
  assert.notEqual(bytesToHex(fresh.pairingKey), bytesToHex(keys.pairingKey));
  assert.equal(bytesToHex(fresh.pairingKey), bytesToHex(/** @type {any} */ (q.runner.keys).pairingKey));
  assert.equal(q.codes.secret, "UNUSED2"); // a re-key spends no code
  q.app.sendData(utf8ToBytes("x"));
  assert.equal(text(q.flush().atRunner.flatMap((r) => r.data)), "x");
  // A runner without that key: REJECT UNKNOWN_KEY.
  const r = pair({ nameplate: "N4M3", secret: "S3CR3T7" });
  r.app.startRekey({ pairingKey: keys.pairingKey, pairingKeyId: keys.pairingKeyId });
  assert.ok(r.flush().atApp.some((x) => x.rejected === "UNKNOWN_KEY"));
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
