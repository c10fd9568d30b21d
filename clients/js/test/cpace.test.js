// CPace (ristretto255, SHA-512) against every vector of draft-irtf-cfrg-cpace for that suite.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ristretto255_hasher } from "@noble/curves/ed25519.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, lvCat, prependLen, utf8ToBytes } from "../src/bytes.js";
import {
  CPaceError,
  CPaceParty,
  IDENTITY,
  calculateGenerator,
  generatorString,
  iskIr,
  scalarMult,
  scalarMultVfy,
  sidOutputIr,
  transcriptIr,
} from "../src/cpace.js";
import { loadVectors, unhex } from "./vectors.js";

const all = loadVectors("cpace-ristretto255.json");
const v = all.cpace;
const points = all.scalar_mult_vfy;
/** @param {string} key */
const h = (key) => unhex(v[key]);
/** @param {Uint8Array} bytes */
const hex = (bytes) => bytesToHex(bytes).toUpperCase();

/**
 * The bytes of a draft vector key such as "b'1234'" or "bytes(range(127))".
 * @param {string} expr
 */
function pyBytes(expr) {
  const range = expr.match(/^bytes\(range\((\d+)\)\)$/);
  if (range) return Uint8Array.from({ length: Number(range[1]) }, (_, i) => i);
  const lit = expr.match(/^b'(.*)'$/);
  if (lit) return utf8ToBytes(lit[1]);
  throw new Error(`no bytes for ${expr}`);
}

test("prepend_len: every vector of the draft", () => {
  let n = 0;
  for (const [name, expected] of Object.entries(all.prepend_len)) {
    const m = name.match(/^prepend_len\((.*)\)$/);
    if (!m) continue;
    assert.equal(hex(prependLen(pyBytes(m[1]))), expected, name);
    n++;
  }
  assert.equal(n, 4);
});

test("lv_cat and transcript_ir: the draft's vectors", () => {
  const lv = lvCat(utf8ToBytes("1234"), utf8ToBytes("5"), new Uint8Array(0), utf8ToBytes("678"));
  assert.equal(hex(lv), all.lv_cat["lv_cat(b'1234',b'5',b'',b'678')"]);
  let n = 0;
  for (const [name, expected] of Object.entries(all.transcript_ir)) {
    const m = name.match(/^transcript_ir\((.*)\)$/);
    if (!m) continue;
    const args = m[1].split(",").map(pyBytes);
    assert.equal(hex(transcriptIr(args[0], args[1], args[2], args[3])), expected, name);
    n++;
  }
  assert.equal(n, 2);
});

/**
 * The draft's ordered concatenation, for its parallel-mode ("oc") vectors: our protocol
 * runs initiator-responder, so this lives here, not in src/.
 * @param {Uint8Array} a @param {Uint8Array} b
 */
function oCat(a, b) {
  let larger = a.length > b.length;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) {
      larger = a[i] > b[i];
      break;
    }
  }
  return concatBytes(utf8ToBytes("oc"), larger ? a : b, larger ? b : a);
}

test("o_cat and transcript_oc: the draft's vectors", () => {
  let n = 0;
  for (const [name, expected] of Object.entries(all.o_cat)) {
    const m = name.match(/^o_cat\((.*)\)$/);
    if (!m) continue;
    const [a, b] = m[1].split(",").map(pyBytes);
    assert.equal(hex(oCat(a, b)), expected, name);
    n++;
  }
  for (const [name, expected] of Object.entries(all.transcript_oc)) {
    const m = name.match(/^transcript_oc\((.*)\)$/);
    if (!m) continue;
    const [ya, ada, yb, adb] = m[1].split(",").map(pyBytes);
    assert.equal(hex(oCat(lvCat(ya, ada), lvCat(yb, adb))), expected, name);
    n++;
  }
  assert.equal(n, 4);
});

test("ISK and the session id output in parallel mode (oc) from the same K", () => {
  const [Ya, Yb] = [h("Ya"), h("Yb")];
  const transcript = oCat(lvCat(Ya, h("ADa")), lvCat(Yb, h("ADb")));
  const dsiIsk = concatBytes(utf8ToBytes("CPaceRistretto255"), utf8ToBytes("_ISK"));
  assert.equal(hex(sha512(concatBytes(lvCat(dsiIsk, h("sid"), h("K")), transcript))), v.ISK_SY);
  assert.equal(hex(sha512(concatBytes(utf8ToBytes("CPaceSidOutput"), transcript))), v.sid_output_oc);
});

test("generator string, its hash and g", () => {
  const c = all.calculate_generator;
  const [prs, ci, sid] = [unhex(c.PRS), unhex(c.CI), unhex(c.sid)];
  const gen = generatorString(prs, ci, sid);
  assert.equal(hex(gen), c["generator_string(G.DSI,PRS,CI,sid,H.s_in_bytes)"]);
  assert.equal(hex(sha512(gen)), c["hash result"]);
  assert.equal(hex(calculateGenerator(prs, ci, sid).toBytes()), c["encoded generator g"]);
  assert.equal(hex(calculateGenerator(h("PRS"), h("CI"), h("sid")).toBytes()), v.g);
});

test("the generator is RFC 9496 element derivation, not RFC 9380 hash-to-curve", () => {
  // Guard: noble offers both on ristretto255_hasher; only deriveToCurve gives the draft's g.
  const hash = sha512(generatorString(h("PRS"), h("CI"), h("sid")));
  assert.notEqual(hex(ristretto255_hasher.hashToCurve(hash).toBytes()), v.g);
});

test("Ya, Yb, K from both sides, ISK (initiator-responder) and the session id output", () => {
  const g = calculateGenerator(h("PRS"), h("CI"), h("sid"));
  const Ya = scalarMult(h("ya"), g);
  const Yb = scalarMult(h("yb"), g);
  assert.equal(hex(Ya), v.Ya);
  assert.equal(hex(Yb), v.Yb);
  const Ka = scalarMultVfy(h("ya"), Yb);
  const Kb = scalarMultVfy(h("yb"), Ya);
  assert.equal(hex(Ka), v.K);
  assert.equal(hex(Kb), v.K);
  assert.equal(hex(iskIr(h("sid"), Ka, Ya, h("ADa"), Yb, h("ADb"))), v.ISK_IR);
  assert.equal(hex(sidOutputIr(Ya, h("ADa"), Yb, h("ADb"))), v.sid_output_ir);
});

test("CPaceParty reproduces the vector's shares and ISK on both sides", () => {
  const common = { prs: h("PRS"), ci: h("CI"), sid: h("sid") };
  const a = new CPaceParty({ ...common, ad: h("ADa"), scalar: h("ya") });
  const b = new CPaceParty({ ...common, ad: h("ADb"), scalar: h("yb") });
  assert.equal(hex(a.Y), v.Ya);
  assert.equal(hex(b.Y), v.Yb);
  const iskA = iskIr(h("sid"), a.sharedPoint(b.Y), a.Y, a.ad, b.Y, b.ad);
  const iskB = iskIr(h("sid"), b.sharedPoint(a.Y), a.Y, a.ad, b.Y, b.ad);
  assert.equal(hex(iskA), v.ISK_IR);
  assert.equal(hex(iskB), v.ISK_IR);
});

test("scalar_mult_vfy with valid inputs", () => {
  const valid = points.Valid;
  assert.equal(hex(scalarMultVfy(unhex(valid.s), unhex(valid.X))), valid["G.scalar_mult_vfy(s,X)"]);
});

for (const name of ["Invalid Y1", "Invalid Y2"]) {
  test(`scalar_mult_vfy returns the identity and the protocol aborts: ${name}`, () => {
    const s = unhex(points.Valid.s);
    const Y = unhex(points[name]);
    assert.deepEqual(scalarMultVfy(s, Y), IDENTITY);
    const party = new CPaceParty({ prs: h("PRS"), ci: h("CI"), sid: h("sid"), scalar: s });
    assert.throws(() => party.sharedPoint(Y), CPaceError);
    assert.throws(() => iskIr(h("sid"), IDENTITY, party.Y, h("ADa"), Y, h("ADb")), CPaceError);
  });
}

test("a scalar of L or above is reduced, never refused or used unreduced", () => {
  const g = calculateGenerator(h("PRS"), h("CI"), h("sid"));
  // ya + L, little-endian, equals ya as a scalar: same share.
  const L = 2n ** 252n + 27742317777372353535851937790883648493n;
  let n = 0n;
  for (const byte of [...h("ya")].reverse()) n = (n << 8n) | BigInt(byte);
  n += L;
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i++, n >>= 8n) bytes[i] = Number(n & 0xffn);
  assert.equal(hex(scalarMult(bytes, g)), v.Ya);
});

test("random parties agree with the same password and disagree with another", () => {
  const sid = utf8ToBytes("0123456789abcdef");
  const ci = utf8ToBytes("ci");
  const a = new CPaceParty({ prs: utf8ToBytes("ABC2345"), ci, sid });
  const b = new CPaceParty({ prs: utf8ToBytes("ABC2345"), ci, sid });
  const c = new CPaceParty({ prs: utf8ToBytes("ABC2346"), ci, sid });
  const e = new Uint8Array(0);
  const isk = (/** @type {CPaceParty} */ x, /** @type {CPaceParty} */ y) =>
    hex(iskIr(sid, x.sharedPoint(y.Y), x.Y, e, y.Y, e));
  const iskB = hex(iskIr(sid, b.sharedPoint(a.Y), a.Y, e, b.Y, e));
  assert.equal(isk(a, b), iskB);
  const iskC = hex(iskIr(sid, c.sharedPoint(a.Y), a.Y, e, c.Y, e));
  assert.notEqual(isk(a, c), iskC);
});
