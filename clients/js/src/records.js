/**
 * E2E framing and records.
 *
 * Every E2E message is a binary `data` payload that starts with MAGIC 0xE2, VERSION 0x01 and
 * a type byte. Handshake frames carry CPace messages in the clear; after key confirmation
 * every terminal byte, window size and control message travels in a record:
 *
 *   header = E2 01 TYPE || key_id (8) || counter (8, big-endian, from 1 per direction and key)
 *   record = header || nonce (24, random) || XChaCha20-Poly1305(key, nonce, aad=header, payload)
 *
 * The receiver drops a record whose counter is not above the last one it accepted for that key
 * (the gateway's hold replays after a reconnect, and senders resend what was not acked), and
 * never returns the payload of a record that fails authentication.
 * @module
 */
import { xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { concatBytes, constantTimeEqual, randomBytes, readU64be, u64be } from "./bytes.js";

export const MAGIC = 0xe2;
export const VERSION = 0x01;

/** Frame types. */
export const T = Object.freeze({
  HELLO: 0x01,
  RESPONSE: 0x02,
  FINISH: 0x03,
  CONFIRM: 0x04,
  REJECT: 0x05,
  REKEY_HELLO: 0x06,
  DATA: 0x10,
  RESIZE: 0x11,
  CONTROL: 0x12,
});

/** REJECT's one-byte reason. */
export const REJECT_REASON = Object.freeze({
  /** key confirmation failed (or the code was already spent): the code is burnt */
  WRONG_CODE: 0x01,
  /** a re-key for a pairing key the runner does not hold: pair again */
  UNKNOWN_KEY: 0x02,
  /** a record from the app failed authentication: the session is closed */
  INTEGRITY: 0x03,
  /** a record under a key the runner does not hold: re-key */
  NO_SESSION: 0x04,
});

export const HEADER_LEN = 3 + 8 + 8;
export const NONCE_LEN = 24;
export const TAG_LEN = 16;
export const KEY_ID_LEN = 8;
export const PAIRING_KEY_ID_LEN = 16;

/**
 * @param {number} type
 * @returns {boolean}
 */
export function isRecordType(type) {
  return type === T.DATA || type === T.RESIZE || type === T.CONTROL;
}

/**
 * True for a payload that is an E2E frame of this version (E2 01 ...).
 * @param {Uint8Array | null} bytes
 * @returns {bytes is Uint8Array}
 */
export function isFrame(bytes) {
  return bytes !== null && bytes.length >= 3 && bytes[0] === MAGIC && bytes[1] === VERSION;
}

/**
 * A handshake frame: E2 01 TYPE || body.
 * @param {number} type
 * @param {Uint8Array} body
 * @returns {Uint8Array}
 */
export function frame(type, body) {
  return concatBytes(Uint8Array.of(MAGIC, VERSION, type), body);
}

/** A record that failed authentication (tampered, truncated, or under another key). */
export class RecordAuthError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "RecordAuthError";
  }
}

/**
 * Seals records of one direction under one key: counters 1, 2, 3, ...
 */
export class RecordSealer {
  /**
   * @param {Uint8Array} key 32 bytes
   * @param {Uint8Array} keyId 8 bytes
   * @param {bigint} [nextCounter] the counter of the next record (1 for a new key)
   */
  constructor(key, keyId, nextCounter = 1n) {
    if (key.length !== 32 || keyId.length !== KEY_ID_LEN) throw new Error("bad record key");
    this.key = key;
    this.keyId = keyId;
    this.nextCounter = nextCounter;
  }

  /**
   * @param {number} type T.DATA, T.RESIZE or T.CONTROL
   * @param {Uint8Array} payload
   * @param {Uint8Array} [nonce] only for test vectors: a fresh random nonce otherwise
   * @returns {{counter: bigint, record: Uint8Array}}
   */
  seal(type, payload, nonce) {
    if (!isRecordType(type)) throw new Error(`not a record type: ${type}`);
    const counter = this.nextCounter++;
    const header = concatBytes(Uint8Array.of(MAGIC, VERSION, type), this.keyId, u64be(counter));
    const n = nonce ?? randomBytes(NONCE_LEN);
    const sealed = xchacha20poly1305(this.key, n, header).encrypt(payload);
    return { counter, record: concatBytes(header, n, sealed) };
  }
}

/**
 * @typedef {{status: "ok", type: number, counter: bigint, payload: Uint8Array}
 *   | {status: "duplicate", counter: bigint}
 *   | {status: "other-key", keyId: Uint8Array}} OpenResult
 */

/**
 * Opens records of one direction under one key, in counter order.
 */
export class RecordOpener {
  /**
   * @param {Uint8Array} key 32 bytes
   * @param {Uint8Array} keyId 8 bytes
   * @param {bigint} [lastCounter] the counter of the last record accepted (0 for a new key)
   */
  constructor(key, keyId, lastCounter = 0n) {
    if (key.length !== 32 || keyId.length !== KEY_ID_LEN) throw new Error("bad record key");
    this.key = key;
    this.keyId = keyId;
    this.lastCounter = lastCounter;
  }

  /**
   * Authenticates and decrypts a record. A counter not above the last accepted one is a
   * duplicate (dropped, not an error); a record under another key id is reported as such
   * (an old session's record replayed after a re-key); anything that does not authenticate
   * throws RecordAuthError and changes nothing.
   * @param {Uint8Array} record
   * @returns {OpenResult}
   */
  open(record) {
    if (record.length < HEADER_LEN + NONCE_LEN + TAG_LEN || !isFrame(record)) {
      throw new RecordAuthError("record too short or not an E2E record");
    }
    const type = record[2];
    if (!isRecordType(type)) throw new RecordAuthError(`not a record type: ${type}`);
    const keyId = record.subarray(3, 3 + KEY_ID_LEN);
    if (!constantTimeEqual(keyId, this.keyId)) return { status: "other-key", keyId: keyId.slice() };
    const counter = readU64be(record.subarray(3 + KEY_ID_LEN, HEADER_LEN));
    const header = record.subarray(0, HEADER_LEN);
    const nonce = record.subarray(HEADER_LEN, HEADER_LEN + NONCE_LEN);
    let payload;
    try {
      payload = xchacha20poly1305(this.key, nonce, header).decrypt(record.subarray(HEADER_LEN + NONCE_LEN));
    } catch {
      throw new RecordAuthError(`record ${counter} failed authentication`);
    }
    if (counter <= this.lastCounter) return { status: "duplicate", counter };
    this.lastCounter = counter;
    return { status: "ok", type, counter, payload };
  }
}
