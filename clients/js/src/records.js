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
 * The receiver drops a record whose counter it already has (the gateway's hold replays after a
 * reconnect, and senders resend what was not acked), delivers in counter order, and never
 * returns the payload of a record that fails authentication.
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

/** Bytes that are not a well-formed E2E frame of this version. */
export class FrameError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "FrameError";
  }
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
   * @param {bigint} [nextCounter] the counter of the next record
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

/** A well-formed record under another key id (an earlier session's, or one never held). */
export class UnknownKeyError extends Error {
  /** @param {Uint8Array} keyId */
  constructor(keyId) {
    super("a record under another key");
    this.name = "UnknownKeyError";
    this.keyId = keyId;
  }
}

/** Early records held back, waiting for a missing one, before it is taken as lost. */
export const MAX_PENDING = 1024;

/**
 * @typedef {{type: number, counter: bigint, payload: Uint8Array}} OpenedRecord
 * @typedef {{records: OpenedRecord[], lost: number, duplicate: boolean}} Opened
 *   records ready for the application, in counter order; `lost` were skipped before them
 */

/**
 * Opens records of one direction under one key and delivers them in counter order.
 *
 * A counter already delivered or already held is a duplicate (the gateway's hold replayed
 * it, or the sender resent one relayed before its connection died): dropped before any
 * decryption. A record that comes early (one before it was refused and is being resent) is
 * held until the missing ones arrive, or until the gateway says they are lost (`skipGap`),
 * or until MAX_PENDING are held.
 */
export class RecordOpener {
  /**
   * @param {Uint8Array} key 32 bytes
   * @param {Uint8Array} keyId 8 bytes
   * @param {number} [maxPending]
   */
  constructor(key, keyId, maxPending = MAX_PENDING) {
    if (key.length !== 32 || keyId.length !== KEY_ID_LEN) throw new Error("bad record key");
    this.key = key;
    this.keyId = keyId;
    this.maxPending = maxPending;
    /** The counter of the last record delivered. */
    this.last = 0n;
    /** @type {Map<bigint, OpenedRecord>} */
    this.pending = new Map();
    this.acceptJump = false;
  }

  /**
   * @param {Uint8Array} record
   * @returns {Opened}
   * @throws {RecordAuthError} altered or forged: never delivered, nothing changed
   * @throws {FrameError} not a well-formed record
   * @throws {UnknownKeyError} under another key id
   */
  open(record) {
    if (!isFrame(record) || !isRecordType(record[2]) || record.length < HEADER_LEN + NONCE_LEN + TAG_LEN) {
      throw new FrameError("malformed record");
    }
    const type = record[2];
    const keyId = record.subarray(3, 3 + KEY_ID_LEN);
    if (!constantTimeEqual(keyId, this.keyId)) throw new UnknownKeyError(keyId.slice());
    const counter = readU64be(record.subarray(3 + KEY_ID_LEN, HEADER_LEN));
    /** @type {Opened} */
    const out = { records: [], lost: 0, duplicate: false };
    if (counter <= this.last || this.pending.has(counter)) {
      out.duplicate = true;
      return out;
    }
    const header = record.subarray(0, HEADER_LEN);
    const nonce = record.subarray(HEADER_LEN, HEADER_LEN + NONCE_LEN);
    let payload;
    try {
      payload = xchacha20poly1305(this.key, nonce, header).decrypt(record.subarray(HEADER_LEN + NONCE_LEN));
    } catch {
      throw new RecordAuthError(`record ${counter} failed authentication`);
    }
    this.pending.set(counter, { type, counter, payload });
    if (this.acceptJump || this.pending.size > this.maxPending) {
      this.acceptJump = false;
      out.lost += this.skip();
    }
    this.drain(out);
    return out;
  }

  /**
   * The gateway said messages were lost for good (terminal:gap): stop waiting for the
   * missing ones (or, with none held, accept the next jump).
   * @returns {Opened}
   */
  skipGap() {
    /** @type {Opened} */
    const out = { records: [], lost: 0, duplicate: false };
    if (this.pending.size) {
      out.lost += this.skip();
      this.drain(out);
    } else {
      this.acceptJump = true;
    }
    return out;
  }

  /** @private */
  skip() {
    let first = -1n;
    for (const c of this.pending.keys()) if (first < 0n || c < first) first = c;
    const lost = first - this.last - 1n;
    this.last = first - 1n;
    return Number(lost > 0n ? lost : 0n);
  }

  /** @private @param {Opened} out */
  drain(out) {
    for (;;) {
      const next = this.pending.get(this.last + 1n);
      if (!next) return;
      this.pending.delete(this.last + 1n);
      this.last += 1n;
      out.records.push(next);
    }
  }
}
