// XChaCha20-Poly1305 records: the AEAD's published vector, tampering, duplicates, key ids.
import assert from "node:assert/strict";
import { test } from "node:test";
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { bytesToHex, hexToBytes, utf8ToBytes } from "../src/bytes.js";
import { FrameError, HEADER_LEN, NONCE_LEN, RecordAuthError, RecordOpener, RecordSealer, T, UnknownKeyError } from "../src/records.js";

test("XChaCha20-Poly1305: draft-irtf-cfrg-xchacha-03 A.3.1", () => {
  const key = hexToBytes("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
  const nonce = hexToBytes("404142434445464748494a4b4c4d4e4f5051525354555657");
  const aad = hexToBytes("50515253c0c1c2c3c4c5c6c7");
  const plaintext = utf8ToBytes(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  );
  const expected =
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb" +
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452" +
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9" +
    "21f9664c97637da9768812f615c68b13b52e" +
    "c0875924c1c7987947deafd8780acf49";
  assert.equal(bytesToHex(xchacha20poly1305(key, nonce, aad).encrypt(plaintext)), expected);
});

const key = Uint8Array.from({ length: 32 }, (_, i) => i);
const keyId = hexToBytes("0102030405060708");

test("a record opens to its type, counter and payload; counters count from 1", () => {
  const sealer = new RecordSealer(key, keyId);
  const opener = new RecordOpener(key, keyId);
  const one = sealer.seal(T.DATA, utf8ToBytes("ls\r"));
  const two = sealer.seal(T.RESIZE, utf8ToBytes('{"cols":80,"rows":24}'));
  assert.equal(one.counter, 1n);
  assert.equal(two.counter, 2n);
  assert.equal(bytesToHex(one.record.subarray(0, 3)), "e20110");
  assert.equal(bytesToHex(one.record.subarray(3, 11)), "0102030405060708");
  assert.equal(bytesToHex(one.record.subarray(11, 19)), "0000000000000001");
  assert.equal(one.record.length, HEADER_LEN + NONCE_LEN + 3 + 16);
  assert.deepEqual(opener.open(one.record), {
    records: [{ type: T.DATA, counter: 1n, payload: utf8ToBytes("ls\r") }],
    lost: 0,
    duplicate: false,
  });
  assert.equal(opener.open(two.record).records[0].type, T.RESIZE);
});

test("a flipped byte anywhere in a record is refused, and the opener is unchanged", () => {
  const sealer = new RecordSealer(key, keyId);
  const { record } = sealer.seal(T.DATA, utf8ToBytes("secret output"));
  // Every byte except the key id (another key id is reported as such, not opened).
  for (let i = 0; i < record.length; i++) {
    if (i >= 3 && i < 11) continue;
    const opener = new RecordOpener(key, keyId);
    const bad = record.slice();
    bad[i] ^= 0x01;
    if (i === 18) {
      // counter 1 -> 0: not above the last delivered, dropped as a duplicate unread
      assert.deepEqual(opener.open(bad), { records: [], lost: 0, duplicate: true });
    } else {
      assert.throws(() => opener.open(bad), (/** @type {any} */ e) => e instanceof RecordAuthError || (i < 3 && e instanceof FrameError), `byte ${i}`);
    }
    assert.equal(opener.last, 0n);
    assert.equal(opener.pending.size, 0);
    assert.equal(opener.open(record).records.length, 1);
  }
});

test("a truncated record, or one under another key, is refused", () => {
  const { record } = new RecordSealer(key, keyId).seal(T.DATA, utf8ToBytes("x"));
  assert.throws(() => new RecordOpener(key, keyId).open(record.subarray(0, record.length - 1)), RecordAuthError);
  assert.throws(() => new RecordOpener(key, keyId).open(record.subarray(0, 40)), FrameError);
  const otherKey = key.map((b) => b ^ 0xff);
  assert.throws(() => new RecordOpener(otherKey, keyId).open(record), RecordAuthError);
  assert.throws(() => new RecordOpener(key, hexToBytes("0807060504030201")).open(record), UnknownKeyError);
});

test("a duplicate counter is dropped before decryption; delivery is in counter order", () => {
  const sealer = new RecordSealer(key, keyId);
  const opener = new RecordOpener(key, keyId);
  const [a, b, c] = ["a", "b", "c"].map((s) => sealer.seal(T.DATA, utf8ToBytes(s)).record);
  assert.equal(opener.open(a).records.length, 1);
  assert.deepEqual(opener.open(a), { records: [], lost: 0, duplicate: true });
  // A duplicate is dropped by its counter alone, even altered (it would never be shown).
  const altered = a.slice();
  altered[a.length - 1] ^= 1;
  assert.equal(opener.open(altered).duplicate, true);
  assert.deepEqual(opener.open(c).records, []); // early: held for b
  assert.equal(opener.open(c).duplicate, true); // held already
  assert.deepEqual(
    opener.open(b).records.map((r) => r.counter),
    [2n, 3n],
  );
});

test("more than maxPending early records: the missing ones are taken as lost", () => {
  const sealer = new RecordSealer(key, keyId);
  const opener = new RecordOpener(key, keyId, 2);
  const records = ["1", "2", "3", "4", "5"].map((s) => sealer.seal(T.DATA, utf8ToBytes(s)).record);
  opener.open(records[2]);
  opener.open(records[3]);
  const out = opener.open(records[4]);
  assert.equal(out.lost, 2);
  assert.deepEqual(out.records.map((r) => r.counter), [3n, 4n, 5n]);
  assert.equal(opener.open(records[0]).duplicate, true);
});

test("a handshake frame type cannot be sealed or opened as a record", () => {
  assert.throws(() => new RecordSealer(key, keyId).seal(T.HELLO, new Uint8Array(1)));
  const { record } = new RecordSealer(key, keyId).seal(T.DATA, utf8ToBytes("x"));
  const relabelled = record.slice();
  relabelled[2] = T.FINISH;
  assert.throws(() => new RecordOpener(key, keyId).open(relabelled), FrameError);
});
