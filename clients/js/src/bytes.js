/**
 * Byte helpers shared by the E2E modules. Browser-safe: Uint8Array only, randomness from
 * WebCrypto's getRandomValues (through @noble/hashes' randomBytes).
 * @module
 */
import { bytesToHex, concatBytes, hexToBytes, randomBytes, utf8ToBytes } from "@noble/hashes/utils.js";

export { bytesToHex, concatBytes, hexToBytes, randomBytes, utf8ToBytes };

/**
 * LEB128 length prefix then the bytes (the CPace draft's prepend_len).
 * @param {Uint8Array} data
 * @returns {Uint8Array}
 */
export function prependLen(data) {
  const prefix = [];
  let length = data.length;
  for (;;) {
    if (length < 128) prefix.push(length);
    else prefix.push((length & 0x7f) | 0x80);
    length = Math.floor(length / 128);
    if (length === 0) break;
  }
  return concatBytes(Uint8Array.from(prefix), data);
}

/**
 * The CPace draft's lv_cat: each argument length-prefixed, concatenated.
 * @param {...Uint8Array} parts
 * @returns {Uint8Array}
 */
export function lvCat(...parts) {
  return concatBytes(...parts.map(prependLen));
}

/**
 * Equality of two byte strings in time that depends only on their lengths.
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 * @returns {boolean}
 */
export function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * A view of any binary value socket.io-client hands us (ArrayBuffer, Buffer, typed array)
 * as a Uint8Array, or null when the value is not binary.
 * @param {unknown} data
 * @returns {Uint8Array | null}
 */
export function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/**
 * A 64-bit unsigned integer, big-endian.
 * @param {bigint} value
 * @returns {Uint8Array}
 */
export function u64be(value) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value, false);
  return out;
}

/**
 * @param {Uint8Array} bytes 8 bytes
 * @returns {bigint}
 */
export function readU64be(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, false);
}
