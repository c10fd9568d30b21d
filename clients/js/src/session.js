/**
 * The E2E handshake (CPace over the relay, then key confirmation) and the session it yields.
 *
 *   app (CPace initiator "a")                          runner (responder "b")
 *   HELLO        nonce_a (16)                   ->
 *                                               <-   RESPONSE  nonce_b (16) || Yb (32)
 *   FINISH       Ya (32) || Ta (64)             ->
 *                                               <-   CONFIRM   Tb (64)   (or REJECT: wrong code)
 *
 * sid = nonce_a || nonce_b; PRS = the code's secret (upper-case ASCII); CI binds the protocol
 * label and the nameplate. Keys come from HKDF-SHA512 over ISK. A re-key after a process
 * restart runs the same exchange with PRS = the stored pairing key (REKEY_HELLO carries
 * nonce_a || pairing key id).
 *
 * These classes are transport-free: they take frames in and return frames to send, so the
 * socket.io client (client.js), a browser page and the tests drive the same code.
 * @module
 */
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { concatBytes, constantTimeEqual, lvCat, randomBytes, utf8ToBytes } from "./bytes.js";
import { CPaceError, CPaceParty, confirmationTag, iskIr } from "./cpace.js";
import { KEY_ID_LEN, PAIRING_KEY_ID_LEN, REJECT_REASON, RecordOpener, RecordSealer, T, frame, isFrame } from "./records.js";

export const LABEL = "pairing-gateway/e2e/v1";
export const HELLO_NONCE_LEN = 16;
const POINT_LEN = 32;
const TAG_LEN = 64;
/** ADa and ADb: the roles are fixed by the message flow (initiator-responder transcript). */
const AD_APP = new Uint8Array(0);
const AD_RUNNER = new Uint8Array(0);

/** Why a handshake ended without a session. */
export class HandshakeError extends Error {
  /**
   * @param {"WRONG_CODE" | "INVALID_SHARE" | "PROTOCOL" | "UNKNOWN_KEY"} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "HandshakeError";
    this.code = code;
  }
}

/**
 * CI for a first pairing: lv(label) || lv(NAMEPLATE).
 * @param {string} nameplate
 */
export function pairingContext(nameplate) {
  return lvCat(utf8ToBytes(LABEL), utf8ToBytes(nameplate.toUpperCase()));
}

/**
 * CI for a re-key: lv(label) || lv("rekey") || lv(pairing key id).
 * @param {Uint8Array} pairingKeyId
 */
export function rekeyContext(pairingKeyId) {
  return lvCat(utf8ToBytes(LABEL), utf8ToBytes("rekey"), pairingKeyId);
}

/**
 * @typedef {object} SessionKeys
 * @property {Uint8Array} appToRunner 32 bytes
 * @property {Uint8Array} runnerToApp 32 bytes
 * @property {Uint8Array} keyId 8 bytes, in every record header
 * @property {Uint8Array} pairingKey 32 bytes, stored by both sides to re-key later
 * @property {Uint8Array} pairingKeyId 16 bytes, names the pairing key in REKEY_HELLO
 */

/**
 * Keys from ISK: HKDF-SHA512(ikm=ISK, salt=sid, info=label || " " || purpose).
 * A re-key keeps the stored pairing key (and its id) instead of deriving a new one.
 * @param {Uint8Array} isk
 * @param {Uint8Array} sid
 * @param {{pairingKey: Uint8Array, pairingKeyId: Uint8Array}} [keep]
 * @returns {SessionKeys}
 */
export function deriveKeys(isk, sid, keep) {
  /** @param {string} purpose @param {number} length */
  const derive = (purpose, length) => hkdf(sha512, isk, sid, utf8ToBytes(`${LABEL} ${purpose}`), length);
  return {
    appToRunner: derive("app->runner", 32),
    runnerToApp: derive("runner->app", 32),
    keyId: derive("key id", KEY_ID_LEN),
    pairingKey: keep ? keep.pairingKey : derive("pairing key", 32),
    pairingKeyId: keep ? keep.pairingKeyId : derive("pairing key id", PAIRING_KEY_ID_LEN),
  };
}

/**
 * An established E2E session: seals what this side sends, opens what it receives.
 */
export class E2ESession {
  /**
   * @param {"app" | "runner"} role
   * @param {SessionKeys} keys
   */
  constructor(role, keys) {
    this.role = role;
    this.keys = keys;
    const [out, inn] = role === "app" ? [keys.appToRunner, keys.runnerToApp] : [keys.runnerToApp, keys.appToRunner];
    this.sealer = new RecordSealer(out, keys.keyId);
    this.opener = new RecordOpener(inn, keys.keyId);
  }

  /** @param {Uint8Array} bytes terminal bytes */
  sealData(bytes) {
    return this.sealer.seal(T.DATA, bytes);
  }

  /** @param {number} cols @param {number} rows */
  sealResize(cols, rows) {
    return this.sealer.seal(T.RESIZE, utf8ToBytes(JSON.stringify({ cols, rows })));
  }

  /** @param {Record<string, unknown>} message */
  sealControl(message) {
    return this.sealer.seal(T.CONTROL, utf8ToBytes(JSON.stringify(message)));
  }

  /**
   * @param {Uint8Array} record
   * @returns {import("./records.js").OpenResult}
   * @throws {import("./records.js").RecordAuthError}
   */
  open(record) {
    return this.opener.open(record);
  }
}

/**
 * @typedef {object} Step
 * @property {Uint8Array} [send] a frame to send to the peer
 * @property {E2ESession} [session] set once the handshake is complete on this side
 * @property {HandshakeError} [error] the runner's handshake failed (`send` is then REJECT)
 */

/**
 * REJECT with its one-byte reason (REJECT_REASON).
 * @param {number} reason
 */
export function rejectFrame(reason) {
  return frame(T.REJECT, Uint8Array.of(reason));
}

/**
 * @param {Uint8Array} bytes
 * @param {number} type
 * @param {number} length
 */
function body(bytes, type, length) {
  if (!isFrame(bytes) || bytes[2] !== type || bytes.length !== 3 + length) {
    throw new HandshakeError("PROTOCOL", `malformed handshake frame (type ${bytes[2]})`);
  }
  return bytes.subarray(3);
}

/** The app's side: HELLO, then FINISH on RESPONSE, then a session on CONFIRM. */
export class AppHandshake {
  /**
   * @param {{prs: Uint8Array, ci: Uint8Array, rekey?: {pairingKey: Uint8Array, pairingKeyId: Uint8Array}}} inputs
   * @param {Uint8Array} [nonceA] only for test vectors
   */
  constructor({ prs, ci, rekey }, nonceA) {
    this.prs = prs;
    this.ci = ci;
    this.rekey = rekey;
    this.nonceA = nonceA ?? randomBytes(HELLO_NONCE_LEN);
    /** @type {"hello" | "finish" | "done" | "failed"} */
    this.state = "hello";
    /** @type {Uint8Array | null} */
    this.sentFinish = null;
    /** @type {E2ESession | null} */
    this.session = null;
    /** @type {{Yb: Uint8Array, sid: Uint8Array, isk: Uint8Array, keys: SessionKeys} | null} */
    this.pending = null;
  }

  /**
   * A first pairing with the code's halves.
   * @param {string} nameplate @param {string} secret
   */
  static forCode(nameplate, secret) {
    return new AppHandshake({ prs: utf8ToBytes(secret.toUpperCase()), ci: pairingContext(nameplate) });
  }

  /**
   * A re-key with a stored pairing key.
   * @param {Uint8Array} pairingKey @param {Uint8Array} pairingKeyId
   */
  static forRekey(pairingKey, pairingKeyId) {
    return new AppHandshake({ prs: pairingKey, ci: rekeyContext(pairingKeyId), rekey: { pairingKey, pairingKeyId } });
  }

  /** The first frame: HELLO, or REKEY_HELLO with the pairing key id. */
  hello() {
    return this.rekey
      ? frame(T.REKEY_HELLO, concatBytes(this.nonceA, this.rekey.pairingKeyId))
      : frame(T.HELLO, this.nonceA);
  }

  /**
   * @param {Uint8Array} bytes a handshake frame from the runner
   * @param {Uint8Array} [scalar] only for test vectors
   * @returns {Step}
   */
  receive(bytes, scalar) {
    const type = bytes[2];
    if (type === T.REJECT) {
      if (this.state === "done") return {}; // a stale frame of an earlier attempt
      this.state = "failed";
      const reason = bytes.length === 4 ? bytes[3] : REJECT_REASON.WRONG_CODE;
      if (reason === REJECT_REASON.UNKNOWN_KEY || reason === REJECT_REASON.NO_SESSION) {
        throw new HandshakeError("UNKNOWN_KEY", "the runner does not hold this pairing key: pair again with a new code");
      }
      throw new HandshakeError("WRONG_CODE", "the runner refused the key confirmation: the code was wrong");
    }
    if (type === T.RESPONSE) {
      if (this.state !== "hello") return {}; // a duplicate (resend or replay)
      const b = body(bytes, T.RESPONSE, HELLO_NONCE_LEN + POINT_LEN);
      const nonceB = b.subarray(0, HELLO_NONCE_LEN);
      const Yb = b.slice(HELLO_NONCE_LEN);
      const sid = concatBytes(this.nonceA, nonceB);
      const party = new CPaceParty({ prs: this.prs, ci: this.ci, sid, ad: AD_APP, scalar });
      let isk;
      try {
        isk = iskIr(sid, party.sharedPoint(Yb), party.Y, AD_APP, Yb, AD_RUNNER);
      } catch (err) {
        this.state = "failed";
        if (err instanceof CPaceError) throw new HandshakeError("INVALID_SHARE", err.message);
        throw err;
      }
      const Ta = confirmationTag(sid, isk, party.Y, AD_APP);
      this.pending = { Yb, sid, isk, keys: deriveKeys(isk, sid, this.rekey) };
      this.state = "finish";
      this.sentFinish = frame(T.FINISH, concatBytes(party.Y, Ta));
      return { send: this.sentFinish };
    }
    if (type === T.CONFIRM) {
      if (this.state !== "finish" || !this.pending) return {};
      const Tb = body(bytes, T.CONFIRM, TAG_LEN);
      const { Yb, sid, isk, keys } = this.pending;
      const expected = confirmationTag(sid, isk, Yb, AD_RUNNER);
      if (!constantTimeEqual(Tb, expected)) {
        this.state = "failed";
        throw new HandshakeError("WRONG_CODE", "the runner's key confirmation failed: the code was wrong");
      }
      this.state = "done";
      this.session = new E2ESession("app", keys);
      this.pending = null;
      return { session: this.session };
    }
    throw new HandshakeError("PROTOCOL", `unexpected handshake frame type ${type}`);
  }
}

/**
 * The runner's side for one app: RESPONSE on HELLO, then CONFIRM (a session) or REJECT on
 * FINISH. A failed confirmation burns the code: this handshake accepts nothing more.
 */
export class RunnerHandshake {
  /**
   * @param {{prs: Uint8Array, ci: Uint8Array, rekey?: {pairingKey: Uint8Array, pairingKeyId: Uint8Array}}} inputs
   */
  constructor({ prs, ci, rekey }) {
    this.prs = prs;
    this.ci = ci;
    this.rekey = rekey;
    /** @type {"hello" | "finish" | "done" | "failed"} */
    this.state = "hello";
    /** @type {{nonceA: Uint8Array, sid: Uint8Array, party: CPaceParty} | null} */
    this.pending = null;
    /** @type {Uint8Array | null} */
    this.finish = null;
    /** @type {E2ESession | null} */
    this.session = null;
  }

  /** @param {string} nameplate @param {string} secret */
  static forCode(nameplate, secret) {
    return new RunnerHandshake({ prs: utf8ToBytes(secret.toUpperCase()), ci: pairingContext(nameplate) });
  }

  /** @param {Uint8Array} pairingKey @param {Uint8Array} pairingKeyId */
  static forRekey(pairingKey, pairingKeyId) {
    return new RunnerHandshake({ prs: pairingKey, ci: rekeyContext(pairingKeyId), rekey: { pairingKey, pairingKeyId } });
  }

  /**
   * The pairing key id a REKEY_HELLO names, or null for another frame.
   * @param {Uint8Array} bytes
   */
  static rekeyId(bytes) {
    if (!isFrame(bytes) || bytes[2] !== T.REKEY_HELLO || bytes.length !== 3 + HELLO_NONCE_LEN + PAIRING_KEY_ID_LEN) return null;
    return bytes.slice(3 + HELLO_NONCE_LEN);
  }

  /** @param {HandshakeError} error @returns {Step} */
  fail(error) {
    this.state = "failed";
    this.pending = null;
    return { send: rejectFrame(REJECT_REASON.WRONG_CODE), error };
  }

  /**
   * @param {Uint8Array} bytes a handshake frame from the app
   * @param {{scalar?: Uint8Array, nonceB?: Uint8Array}} [fixed] only for test vectors
   * @returns {Step}
   */
  receive(bytes, fixed = {}) {
    const type = bytes[2];
    if (this.state === "failed") return {};
    if (type === T.HELLO || type === T.REKEY_HELLO) {
      if ((type === T.REKEY_HELLO) !== Boolean(this.rekey)) {
        throw new HandshakeError("PROTOCOL", "HELLO of the wrong kind for this handshake");
      }
      const b = this.rekey
        ? body(bytes, T.REKEY_HELLO, HELLO_NONCE_LEN + PAIRING_KEY_ID_LEN)
        : body(bytes, T.HELLO, HELLO_NONCE_LEN);
      const nonceA = b.slice(0, HELLO_NONCE_LEN);
      if (this.rekey && !constantTimeEqual(b.subarray(HELLO_NONCE_LEN), this.rekey.pairingKeyId)) {
        throw new HandshakeError("UNKNOWN_KEY", "REKEY_HELLO names another pairing key");
      }
      if (this.state === "done" || (this.pending && constantTimeEqual(this.pending.nonceA, nonceA))) {
        return {}; // a duplicate (resend or replay): RESPONSE was sent already
      }
      // A new HELLO before FINISH restarts the exchange (an app that restarted): it gives
      // no extra guess, since only a FINISH is checked, and one bad FINISH burns the code.
      const nonceB = fixed.nonceB ?? randomBytes(HELLO_NONCE_LEN);
      const sid = concatBytes(nonceA, nonceB);
      const party = new CPaceParty({ prs: this.prs, ci: this.ci, sid, ad: AD_RUNNER, scalar: fixed.scalar });
      this.pending = { nonceA, sid, party };
      this.state = "finish";
      return { send: frame(T.RESPONSE, concatBytes(nonceB, party.Y)) };
    }
    if (type === T.FINISH) {
      if (this.state === "done") return {}; // a duplicate
      if (this.state !== "finish" || !this.pending) {
        throw new HandshakeError("PROTOCOL", "FINISH before HELLO");
      }
      const b = body(bytes, T.FINISH, POINT_LEN + TAG_LEN);
      const Ya = b.slice(0, POINT_LEN);
      const Ta = b.subarray(POINT_LEN);
      const { sid, party } = this.pending;
      let isk;
      try {
        isk = iskIr(sid, party.sharedPoint(Ya), Ya, AD_APP, party.Y, AD_RUNNER);
      } catch (err) {
        if (err instanceof CPaceError) return this.fail(new HandshakeError("INVALID_SHARE", err.message));
        throw err;
      }
      if (!constantTimeEqual(Ta, confirmationTag(sid, isk, Ya, AD_APP))) {
        return this.fail(new HandshakeError("WRONG_CODE", "key confirmation failed: the app's code was wrong"));
      }
      this.state = "done";
      this.pending = null;
      this.session = new E2ESession("runner", deriveKeys(isk, sid, this.rekey));
      return { send: frame(T.CONFIRM, confirmationTag(sid, isk, party.Y, AD_RUNNER)), session: this.session };
    }
    throw new HandshakeError("PROTOCOL", `unexpected handshake frame type ${type}`);
  }
}
