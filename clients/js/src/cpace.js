/**
 * CPace (draft-irtf-cfrg-cpace), cipher suite CPACE-RISTR255-SHA512, initiator-responder mode.
 *
 * Written against the draft's text and checked against every ristretto255 vector it
 * publishes (test/cpace.test.js). The group arithmetic is @noble/curves' ristretto255:
 * the generator uses its RFC 9496 element derivation (`ristretto255_hasher.deriveToCurve`,
 * the same map as libsodium's crypto_core_ristretto255_from_hash), not `hashToCurve`
 * (RFC 9380, another map). Secret scalars only go through the constant-time `multiply`.
 * @module
 */
import { ristretto255, ristretto255_hasher } from "@noble/curves/ed25519.js";
import { bytesToNumberLE } from "@noble/curves/utils.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { concatBytes, constantTimeEqual, lvCat, prependLen, randomBytes, utf8ToBytes } from "./bytes.js";

const Point = ristretto255.Point;

/** G_Ristretto255.DSI */
export const DSI = utf8ToBytes("CPaceRistretto255");
/** SHA-512's input block size (H.s_in_bytes). */
const S_IN_BYTES = 128;
/** The encoding of the neutral element, G.I. */
export const IDENTITY = new Uint8Array(32);

/** The peer's share was not a valid group element, or the shared point was the identity. */
export class CPaceError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "CPaceError";
  }
}

/**
 * generator_string(DSI, PRS, CI, sid, s_in_bytes) of the draft.
 * @param {Uint8Array} prs
 * @param {Uint8Array} ci
 * @param {Uint8Array} sid
 * @returns {Uint8Array}
 */
export function generatorString(prs, ci, sid) {
  const zpad = Math.max(0, S_IN_BYTES - 1 - prependLen(prs).length - prependLen(DSI).length);
  return lvCat(DSI, prs, new Uint8Array(zpad), ci, sid);
}

/**
 * G.calculate_generator: the RFC 9496 element derivation of SHA-512(generator_string).
 * @param {Uint8Array} prs
 * @param {Uint8Array} ci
 * @param {Uint8Array} sid
 */
export function calculateGenerator(prs, ci, sid) {
  const hash = sha512(generatorString(prs, ci, sid));
  const derive = ristretto255_hasher.deriveToCurve;
  if (!derive) throw new Error("@noble/curves has no ristretto255 deriveToCurve");
  return derive(hash);
}

/**
 * A scalar as a bigint in [1, L), from 32 little-endian bytes (reduced mod L).
 * @param {Uint8Array} bytes
 * @returns {bigint}
 */
export function scalarFromBytes(bytes) {
  const scalar = Point.Fn.create(bytesToNumberLE(bytes));
  if (scalar === 0n) throw new CPaceError("zero scalar");
  return scalar;
}

/**
 * G.sample_scalar as the draft recommends: 32 random bytes with the bits above 252 cleared.
 * @returns {Uint8Array} the scalar, little-endian
 */
export function sampleScalar() {
  for (;;) {
    const bytes = randomBytes(32);
    bytes[31] &= 0x0f;
    if (bytes.some((b) => b !== 0)) return bytes;
  }
}

/**
 * G.scalar_mult(y, g): encode(y * g).
 * @param {Uint8Array} y scalar, little-endian
 * @param {InstanceType<typeof Point>} g
 * @returns {Uint8Array}
 */
export function scalarMult(y, g) {
  return g.multiply(scalarFromBytes(y)).toBytes();
}

/**
 * G.scalar_mult_vfy(y, X): G.I when X does not decode, else encode(y * decode(X)).
 * @param {Uint8Array} y scalar, little-endian
 * @param {Uint8Array} X encoded point
 * @returns {Uint8Array}
 */
export function scalarMultVfy(y, X) {
  let point;
  try {
    point = Point.fromBytes(X);
  } catch {
    return IDENTITY.slice();
  }
  if (point.is0()) return IDENTITY.slice();
  return point.multiply(scalarFromBytes(y)).toBytes();
}

/**
 * transcript_ir(Ya, ADa, Yb, ADb)
 * @param {Uint8Array} Ya @param {Uint8Array} ADa @param {Uint8Array} Yb @param {Uint8Array} ADb
 */
export function transcriptIr(Ya, ADa, Yb, ADb) {
  return concatBytes(lvCat(Ya, ADa), lvCat(Yb, ADb));
}

/**
 * ISK in initiator-responder mode: H.hash(lv_cat(DSI || "_ISK", sid, K) || transcript_ir).
 * Aborts (throws) if K is the identity.
 * @param {Uint8Array} sid @param {Uint8Array} K
 * @param {Uint8Array} Ya @param {Uint8Array} ADa @param {Uint8Array} Yb @param {Uint8Array} ADb
 */
export function iskIr(sid, K, Ya, ADa, Yb, ADb) {
  if (constantTimeEqual(K, IDENTITY)) throw new CPaceError("CPace: the shared point is the identity");
  const dsiIsk = concatBytes(DSI, utf8ToBytes("_ISK"));
  return sha512(concatBytes(lvCat(dsiIsk, sid, K), transcriptIr(Ya, ADa, Yb, ADb)));
}

/**
 * The draft's optional session identifier output, initiator-responder mode.
 * @param {Uint8Array} Ya @param {Uint8Array} ADa @param {Uint8Array} Yb @param {Uint8Array} ADb
 */
export function sidOutputIr(Ya, ADa, Yb, ADb) {
  return sha512(concatBytes(utf8ToBytes("CPaceSidOutput"), transcriptIr(Ya, ADa, Yb, ADb)));
}

/**
 * Explicit key confirmation as the draft's security section suggests:
 * mac_key = H.hash("CPaceMac" || sid || ISK), T = HMAC-SHA512(mac_key, lv_cat(Y, AD)).
 * @param {Uint8Array} sid @param {Uint8Array} isk @param {Uint8Array} Y @param {Uint8Array} AD
 * @returns {Uint8Array} 64 bytes
 */
export function confirmationTag(sid, isk, Y, AD) {
  const macKey = sha512(concatBytes(utf8ToBytes("CPaceMac"), sid, isk));
  return hmac(sha512, macKey, lvCat(Y, AD));
}

/**
 * One side of a CPace run: its scalar and share. `K`/ISK come from the peer's share.
 */
export class CPaceParty {
  /**
   * @param {{prs: Uint8Array, ci: Uint8Array, sid: Uint8Array, ad?: Uint8Array, scalar?: Uint8Array}} inputs
   *   `scalar` only for test vectors; normally sampled here.
   */
  constructor({ prs, ci, sid, ad = new Uint8Array(0), scalar }) {
    this.sid = sid;
    this.ad = ad;
    /** @private */
    this.y = scalar ?? sampleScalar();
    const g = calculateGenerator(prs, ci, sid);
    /** This party's share, sent to the peer. */
    this.Y = scalarMult(this.y, g);
  }

  /**
   * The shared point from the peer's share; throws CPaceError when it is invalid or the
   * identity (the draft's MUST abort).
   * @param {Uint8Array} peerY
   * @returns {Uint8Array}
   */
  sharedPoint(peerY) {
    const K = scalarMultVfy(this.y, peerY);
    if (constantTimeEqual(K, IDENTITY)) throw new CPaceError("CPace: invalid share from the peer");
    return K;
  }
}
