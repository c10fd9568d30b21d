/**
 * The E2E handshake (CPace over the relay, then key confirmation), the key schedule, and one
 * app-runner channel as a state machine without I/O: frames in, frames out (through a `send`
 * callback), and what the application should do (a `Received`).
 *
 *   app (CPace initiator "a")                          runner (responder "b")
 *   HELLO        nonce_a (16)                   ->
 *                                               <-   RESPONSE  nonce_b (16) || Yb (32)
 *   FINISH       Ya (32) || Ta (64)             ->   (checks Ta: one guess; wrong -> REJECT)
 *                                               <-   CONFIRM   Tb (64)
 *   (app checks Tb)
 *
 * sid = nonce_a || nonce_b. PRS is the code's secret (upper-case ASCII), or for a re-key the
 * stored pairing key (REKEY_HELLO = nonce_a || pairing_key_id). CI binds the run to this
 * protocol, the mode, the nameplate (or pairing key id) and both parties, initiator first:
 * CI = lv_cat("pairing-gateway e2e v1", mode, label, appSessionId, runnerId). ADa = ADb = "".
 * Keys: HKDF-SHA512(salt = sid, ikm = ISK), one info label per key.
 *
 * The same protocol as the Python client (pairing_client.e2e); both pass the vectors in
 * tests/support/vectors/e2e-v1.json byte for byte.
 * @module
 */
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { concatBytes, constantTimeEqual, lvCat, randomBytes, utf8ToBytes } from "./bytes.js";
import { CPaceError, CPaceParty, confirmationTag, iskIr } from "./cpace.js";
import {
  FrameError,
  KEY_ID_LEN,
  PAIRING_KEY_ID_LEN,
  REJECT_REASON,
  RecordAuthError,
  RecordOpener,
  RecordSealer,
  T,
  UnknownKeyError,
  frame,
  isFrame,
  isRecordType,
} from "./records.js";

export const LABEL = "pairing-gateway e2e v1";
export const HELLO_NONCE_LEN = 16;
const POINT_LEN = 32;
const TAG_LEN = 64;
const AD_A = new Uint8Array(0);
const AD_B = new Uint8Array(0);

/** @type {Record<number, string>} */
export const REJECT_NAMES = Object.fromEntries(Object.entries(REJECT_REASON).map(([k, v]) => [v, k]));

/** The handshake failed; `reason` is what the REJECT frame carries (REJECT_REASON). */
export class HandshakeError extends Error {
  /**
   * @param {number} reason
   * @param {string} message
   */
  constructor(reason, message) {
    super(message);
    this.name = "HandshakeError";
    this.reason = reason;
    /** The reason's name: WRONG_CODE, UNKNOWN_KEY, INTEGRITY or NO_SESSION. */
    this.code = REJECT_NAMES[reason] ?? "WRONG_CODE";
  }
}

/**
 * CI = lv_cat(LABEL, mode, label, appSessionId, runnerId).
 * @param {"code" | "rekey"} mode
 * @param {Uint8Array} label the upper-cased nameplate, or the pairing key id
 * @param {string} appSessionId
 * @param {string} runnerId
 */
export function channelId(mode, label, appSessionId, runnerId) {
  return lvCat(utf8ToBytes(LABEL), utf8ToBytes(mode), label, utf8ToBytes(appSessionId), utf8ToBytes(runnerId));
}

/**
 * @typedef {object} SessionKeys
 * @property {Uint8Array} keyId 8 bytes, in every record header
 * @property {Uint8Array} appToRunner 32 bytes
 * @property {Uint8Array} runnerToApp 32 bytes
 * @property {Uint8Array} pairingKey 32 bytes, stored by both sides to re-key later
 * @property {Uint8Array} pairingKeyId 16 bytes, names the pairing key in REKEY_HELLO
 */

/**
 * HKDF-SHA512(salt = sid, ikm = ISK), expanded under LABEL || " " || name per key. A re-key
 * derives a new pairing key too: both sides replace the stored one.
 * @param {Uint8Array} isk
 * @param {Uint8Array} sid
 * @returns {SessionKeys}
 */
export function deriveKeys(isk, sid) {
  /** @param {string} name @param {number} length */
  const key = (name, length) => hkdf(sha512, isk, sid, utf8ToBytes(`${LABEL} ${name}`), length);
  return {
    keyId: key("key id", KEY_ID_LEN),
    appToRunner: key("app->runner", 32),
    runnerToApp: key("runner->app", 32),
    pairingKey: key("pairing key", 32),
    pairingKeyId: key("pairing key id", PAIRING_KEY_ID_LEN),
  };
}

/** @param {number} reason REJECT_REASON */
export function rejectFrame(reason) {
  return frame(T.REJECT, Uint8Array.of(reason));
}

/**
 * The reason a REJECT carries (an unknown byte reads as WRONG_CODE).
 * @param {Uint8Array} bytes
 */
export function rejectReason(bytes) {
  const reason = handshakeBody(bytes, T.REJECT)[0];
  return REJECT_NAMES[reason] ? reason : REJECT_REASON.WRONG_CODE;
}

/** Body length of each handshake frame (after the 3-byte prefix). */
const HANDSHAKE_LENGTHS = {
  [T.HELLO]: HELLO_NONCE_LEN,
  [T.RESPONSE]: HELLO_NONCE_LEN + POINT_LEN,
  [T.FINISH]: POINT_LEN + TAG_LEN,
  [T.CONFIRM]: TAG_LEN,
  [T.REJECT]: 1,
  [T.REKEY_HELLO]: HELLO_NONCE_LEN + PAIRING_KEY_ID_LEN,
};

/**
 * @param {Uint8Array} bytes
 * @param {number} type
 */
function handshakeBody(bytes, type) {
  const length = /** @type {Record<number, number>} */ (HANDSHAKE_LENGTHS)[type];
  if (!isFrame(bytes) || bytes[2] !== type || bytes.length !== 3 + length) {
    throw new FrameError(`malformed handshake frame of type ${type}`);
  }
  return bytes.slice(3);
}

/**
 * @typedef {{appSessionId: string, runnerId: string, nameplate?: string, secret?: string,
 *   pairingKey?: Uint8Array, pairingKeyId?: Uint8Array}} HandshakeInputs
 * @typedef {{nonce?: Uint8Array, scalar?: Uint8Array}} Fixed  only for test vectors
 */

/** The app's side: hello(), then onResponse() -> FINISH, then onConfirm() -> keys. */
export class AppHandshake {
  /**
   * @param {HandshakeInputs} inputs a code (nameplate and secret) or a pairing key and its id
   * @param {Fixed} [fixed]
   */
  constructor(inputs, fixed = {}) {
    const { appSessionId, runnerId } = inputs;
    if (inputs.secret !== undefined && inputs.nameplate !== undefined) {
      this.prs = utf8ToBytes(inputs.secret.toUpperCase());
      this.ci = channelId("code", utf8ToBytes(inputs.nameplate.toUpperCase()), appSessionId, runnerId);
      /** @type {Uint8Array | null} */
      this.rekeyId = null;
    } else if (inputs.pairingKey && inputs.pairingKeyId) {
      this.prs = inputs.pairingKey;
      this.ci = channelId("rekey", inputs.pairingKeyId, appSessionId, runnerId);
      this.rekeyId = inputs.pairingKeyId;
    } else {
      throw new Error("a code (secret and nameplate) or a pairing key and its id");
    }
    this.nonceA = fixed.nonce ?? randomBytes(HELLO_NONCE_LEN);
    this.scalar = fixed.scalar;
    /** @type {Uint8Array | null} */
    this.finish = null;
    /** @type {SessionKeys | null} */
    this.keys = null;
    /** @type {Uint8Array | null} */
    this.tagB = null;
  }

  hello() {
    return this.rekeyId
      ? frame(T.REKEY_HELLO, concatBytes(this.nonceA, this.rekeyId))
      : frame(T.HELLO, this.nonceA);
  }

  /**
   * FINISH for the runner's RESPONSE (the same FINISH again for a repeated one).
   * @param {Uint8Array} bytes
   */
  onResponse(bytes) {
    const b = handshakeBody(bytes, T.RESPONSE);
    if (this.finish) return this.finish;
    const nonceB = b.subarray(0, HELLO_NONCE_LEN);
    const Yb = b.slice(HELLO_NONCE_LEN);
    const sid = concatBytes(this.nonceA, nonceB);
    const party = new CPaceParty({ prs: this.prs, ci: this.ci, sid, ad: AD_A, scalar: this.scalar });
    let isk;
    try {
      isk = iskIr(sid, party.sharedPoint(Yb), party.Y, AD_A, Yb, AD_B);
    } catch (err) {
      if (err instanceof CPaceError) throw new HandshakeError(REJECT_REASON.WRONG_CODE, err.message);
      throw err;
    }
    this.keys = deriveKeys(isk, sid);
    this.tagB = confirmationTag(sid, isk, Yb, AD_B);
    this.finish = frame(T.FINISH, concatBytes(party.Y, confirmationTag(sid, isk, party.Y, AD_A)));
    return this.finish;
  }

  /**
   * The session keys once the runner's tag checks.
   * @param {Uint8Array} bytes
   * @returns {SessionKeys}
   */
  onConfirm(bytes) {
    const tag = handshakeBody(bytes, T.CONFIRM);
    if (!this.keys || !this.tagB) throw new HandshakeError(REJECT_REASON.WRONG_CODE, "CONFIRM before RESPONSE");
    if (!constantTimeEqual(tag, this.tagB)) {
      throw new HandshakeError(REJECT_REASON.WRONG_CODE, "the runner's key confirmation failed");
    }
    return this.keys;
  }
}

/**
 * The runner's side for one app: built from the HELLO (its `response` is the RESPONSE),
 * then onFinish() -> {confirm, keys}. A FINISH whose tag is wrong throws HandshakeError
 * WRONG_CODE: the caller burns the code.
 */
export class RunnerHandshake {
  /**
   * @param {Uint8Array} hello HELLO or REKEY_HELLO
   * @param {{appSessionId: string, runnerId: string, nameplate?: string, secret?: string, pairingKey?: Uint8Array | null}} inputs
   * @param {Fixed} [fixed]
   */
  constructor(hello, inputs, fixed = {}) {
    const { appSessionId, runnerId } = inputs;
    if (hello[2] === T.REKEY_HELLO) {
      const b = handshakeBody(hello, T.REKEY_HELLO);
      this.nonceA = b.slice(0, HELLO_NONCE_LEN);
      const keyId = b.slice(HELLO_NONCE_LEN);
      if (!inputs.pairingKey) throw new HandshakeError(REJECT_REASON.UNKNOWN_KEY, "no pairing key for this app");
      this.prs = inputs.pairingKey;
      this.ci = channelId("rekey", keyId, appSessionId, runnerId);
    } else {
      this.nonceA = handshakeBody(hello, T.HELLO);
      if (inputs.secret === undefined || inputs.nameplate === undefined) {
        throw new HandshakeError(REJECT_REASON.WRONG_CODE, "no unspent code");
      }
      this.prs = utf8ToBytes(inputs.secret.toUpperCase());
      this.ci = channelId("code", utf8ToBytes(inputs.nameplate.toUpperCase()), appSessionId, runnerId);
    }
    this.hello = hello.slice();
    this.nonceB = fixed.nonce ?? randomBytes(HELLO_NONCE_LEN);
    this.sid = concatBytes(this.nonceA, this.nonceB);
    this.party = new CPaceParty({ prs: this.prs, ci: this.ci, sid: this.sid, ad: AD_B, scalar: fixed.scalar });
    this.response = frame(T.RESPONSE, concatBytes(this.nonceB, this.party.Y));
  }

  /**
   * @param {Uint8Array} bytes FINISH
   * @returns {{confirm: Uint8Array, keys: SessionKeys}}
   */
  onFinish(bytes) {
    const b = handshakeBody(bytes, T.FINISH);
    const Ya = b.slice(0, POINT_LEN);
    const Ta = b.subarray(POINT_LEN);
    let isk;
    try {
      isk = iskIr(this.sid, this.party.sharedPoint(Ya), Ya, AD_A, this.party.Y, AD_B);
    } catch (err) {
      if (err instanceof CPaceError) throw new HandshakeError(REJECT_REASON.WRONG_CODE, err.message);
      throw err;
    }
    if (!constantTimeEqual(Ta, confirmationTag(this.sid, isk, Ya, AD_A))) {
      throw new HandshakeError(REJECT_REASON.WRONG_CODE, "the app's key confirmation failed");
    }
    return {
      confirm: frame(T.CONFIRM, confirmationTag(this.sid, isk, this.party.Y, AD_B)),
      keys: deriveKeys(isk, this.sid),
    };
  }
}

/**
 * The record layer of an open session, in one role.
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
}

/**
 * What one incoming frame (or a gap) means for the application.
 * @typedef {object} Received
 * @property {Uint8Array[]} data terminal bytes, in order
 * @property {[number, number][]} resizes (runner) window sizes [cols, rows]
 * @property {Record<string, unknown>[]} controls
 * @property {number} lost records skipped for good before these
 * @property {number} duplicates records dropped as already had
 * @property {boolean} confirmed the handshake finished on this frame
 * @property {boolean} burnt (runner) a wrong secret spent the code: register again for a new one
 * @property {string | null} rejected the REJECT reason's name, received (app) or sent (runner)
 * @property {string | null} integrity a record failed authentication: never delivered
 * @property {string | null} error anything else that was dropped
 */

/** @returns {Received} */
function received() {
  return {
    data: [],
    resizes: [],
    controls: [],
    lost: 0,
    duplicates: 0,
    confirmed: false,
    burnt: false,
    rejected: null,
    integrity: null,
    error: null,
  };
}

/** @param {Uint8Array} bytes */
function parseJson(bytes) {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/**
 * @param {import("./records.js").Opened} opened
 * @param {Received} out
 */
function deliver(opened, out) {
  out.lost += opened.lost;
  if (opened.duplicate) out.duplicates++;
  for (const { type, payload } of opened.records) {
    if (type === T.DATA) out.data.push(payload);
    else if (type === T.RESIZE) {
      const size = parseJson(payload);
      if (size && Number.isInteger(size.cols) && Number.isInteger(size.rows)) out.resizes.push([size.cols, size.rows]);
    } else {
      const control = parseJson(payload);
      if (control && typeof control === "object" && !Array.isArray(control)) out.controls.push(control);
    }
  }
}

/** @typedef {(frame: Uint8Array) => void} Send */

class Channel {
  /**
   * @param {Send} send
   * @param {"app" | "runner"} role
   */
  constructor(send, role) {
    this.send = send;
    this.role = role;
    /** @type {E2ESession | null} */
    this.session = null;
    /** @type {[number, Uint8Array][]} records asked for before the handshake finished */
    this.waiting = [];
  }

  get open() {
    return this.session !== null;
  }

  get keys() {
    return this.session?.keys ?? null;
  }

  /**
   * Sends a record now, or once the handshake is done.
   * @param {number} type @param {Uint8Array} payload
   */
  seal(type, payload) {
    if (!this.session) this.waiting.push([type, payload]);
    else this.send(this.session.sealer.seal(type, payload).record);
  }

  /** @param {Uint8Array} data */
  sendData(data) {
    this.seal(T.DATA, data);
  }

  /** @param {Record<string, unknown>} control */
  sendControl(control) {
    this.seal(T.CONTROL, utf8ToBytes(JSON.stringify(control)));
  }

  /** The gateway announced messages lost for good (terminal:gap). */
  gap() {
    const out = received();
    if (this.session) deliver(this.session.opener.skipGap(), out);
    return out;
  }

  /** @param {SessionKeys} keys */
  opened(keys) {
    this.session = new E2ESession(this.role, keys);
    const waiting = this.waiting;
    this.waiting = [];
    for (const [type, payload] of waiting) this.seal(type, payload);
  }
}

/** The app's end: start a handshake, then records both ways. */
export class AppChannel extends Channel {
  /**
   * @param {Send} send
   * @param {{appSessionId: string, runnerId: string}} ids
   */
  constructor(send, { appSessionId, runnerId }) {
    super(send, "app");
    this.appSessionId = appSessionId;
    this.runnerId = runnerId;
    /** @type {AppHandshake | null} */
    this.handshake = null;
    /** @type {string | null} */
    this.failed = null;
  }

  /** @param {{nameplate: string, secret: string}} code @param {Fixed} [fixed] */
  start({ nameplate, secret }, fixed) {
    this.handshake = new AppHandshake({ appSessionId: this.appSessionId, runnerId: this.runnerId, nameplate, secret }, fixed);
    this.failed = null;
    this.send(this.handshake.hello());
  }

  /** @param {{pairingKey: Uint8Array, pairingKeyId: Uint8Array}} stored @param {Fixed} [fixed] */
  startRekey({ pairingKey, pairingKeyId }, fixed) {
    this.handshake = new AppHandshake(
      { appSessionId: this.appSessionId, runnerId: this.runnerId, pairingKey, pairingKeyId },
      fixed,
    );
    this.failed = null;
    this.session = null;
    this.send(this.handshake.hello());
  }

  /** @param {number} cols @param {number} rows */
  sendResize(cols, rows) {
    this.seal(T.RESIZE, utf8ToBytes(JSON.stringify({ cols, rows })));
  }

  /**
   * @param {Uint8Array} bytes a frame from the runner
   * @returns {Received}
   */
  receive(bytes) {
    const out = received();
    try {
      if (!isFrame(bytes)) throw new FrameError("not an E2E frame of version 1");
      const type = bytes[2];
      if (isRecordType(type)) {
        if (!this.session) out.error = "a record before the handshake finished";
        else deliver(this.session.opener.open(bytes), out);
      } else if (type === T.RESPONSE && this.handshake && !this.session) {
        if (!this.handshake.finish) this.send(this.handshake.onResponse(bytes)); // a repeat: not answered again
      } else if (type === T.CONFIRM && this.handshake && !this.session) {
        this.opened(this.handshake.onConfirm(bytes));
        out.confirmed = true;
      } else if (type === T.REJECT) {
        const reason = rejectReason(bytes);
        out.rejected = this.failed = REJECT_NAMES[reason];
        if (reason !== REJECT_REASON.NO_SESSION) this.session = null;
      }
    } catch (err) {
      if (err instanceof HandshakeError) {
        out.rejected = this.failed = err.code;
        out.error = err.message;
      } else if (err instanceof RecordAuthError) out.integrity = err.message;
      else if (err instanceof UnknownKeyError) out.error = "a record under a key of an earlier session (dropped)";
      else if (err instanceof FrameError) out.error = err.message;
      else throw err;
    }
    return out;
  }
}

/** The runner's current code: its secret is good for one key confirmation, in total. */
export class CodeBook {
  constructor() {
    /** @type {string | null} */
    this.nameplate = null;
    /** @type {string | null} */
    this.secret = null;
    this.generation = 0;
  }

  /** @param {string} nameplate @param {string} secret */
  issue(nameplate, secret) {
    this.nameplate = nameplate;
    this.secret = secret;
    this.generation++;
  }

  /**
   * Takes the secret for one attempt; false if it is spent or was replaced.
   * @param {number} generation
   */
  spend(generation) {
    if (generation !== this.generation || this.secret === null) return false;
    this.secret = null;
    return true;
  }
}

/** The runner's end for one app. */
export class RunnerChannel extends Channel {
  /**
   * @param {Send} send
   * @param {{appSessionId: string, runnerId: string, codes: CodeBook,
   *   pairingKey: (id: Uint8Array) => Uint8Array | null}} options
   */
  constructor(send, { appSessionId, runnerId, codes, pairingKey }) {
    super(send, "runner");
    this.appSessionId = appSessionId;
    this.runnerId = runnerId;
    this.codes = codes;
    this.pairingKey = pairingKey;
    /** @type {RunnerHandshake | null} */
    this.handshake = null;
    this.generation = 0;
    /** This app spent a code with a wrong secret: nothing more from it is answered. */
    this.refused = false;
    this.toldNoSession = false;
    /** @type {Uint8Array | null} */
    this.finished = null;
    /** @type {Fixed | undefined} only for test vectors */
    this.fixed = undefined;
  }

  /**
   * @param {Uint8Array} bytes a frame from the app
   * @returns {Received}
   */
  receive(bytes) {
    const out = received();
    if (this.refused) return out;
    try {
      if (!isFrame(bytes)) throw new FrameError("not an E2E frame of version 1");
      const type = bytes[2];
      if (isRecordType(type)) this.record(bytes, out);
      else if (type === T.HELLO || type === T.REKEY_HELLO) this.onHello(bytes, type);
      else if (type === T.FINISH && this.handshake) this.onFinish(bytes, out);
    } catch (err) {
      if (err instanceof HandshakeError) {
        out.rejected = err.code;
        out.error = err.message;
        this.send(rejectFrame(err.reason));
        if (err.reason === REJECT_REASON.WRONG_CODE) {
          this.refused = true;
          this.session = null;
        }
      } else if (err instanceof FrameError) out.error = err.message;
      else throw err;
    }
    return out;
  }

  /** @param {Uint8Array} bytes @param {number} type */
  onHello(bytes, type) {
    if (this.handshake && constantTimeEqual(this.handshake.hello, bytes)) return; // a resend, answered
    const ids = { appSessionId: this.appSessionId, runnerId: this.runnerId };
    if (type === T.REKEY_HELLO) {
      const keyId = bytes.subarray(3 + HELLO_NONCE_LEN);
      this.handshake = new RunnerHandshake(bytes, { ...ids, pairingKey: this.pairingKey(keyId) }, this.fixed);
      this.generation = -1;
    } else {
      const { nameplate, secret } = this.codes;
      if (secret === null || nameplate === null) throw new HandshakeError(REJECT_REASON.WRONG_CODE, "the code is spent");
      this.handshake = new RunnerHandshake(bytes, { ...ids, nameplate, secret }, this.fixed);
      this.generation = this.codes.generation;
    }
    this.finished = null;
    this.send(this.handshake.response);
  }

  /** @param {Uint8Array} bytes @param {Received} out */
  onFinish(bytes, out) {
    const handshake = /** @type {RunnerHandshake} */ (this.handshake);
    if (this.finished && constantTimeEqual(this.finished, bytes)) return; // a resend, answered
    let result;
    if (this.generation >= 0) {
      if (!this.codes.spend(this.generation)) throw new HandshakeError(REJECT_REASON.WRONG_CODE, "the code is spent");
      try {
        result = handshake.onFinish(bytes);
      } catch (err) {
        out.burnt = true;
        throw err;
      }
    } else {
      result = handshake.onFinish(bytes);
    }
    this.finished = bytes.slice();
    this.send(result.confirm);
    this.toldNoSession = false;
    this.opened(result.keys);
    out.confirmed = true;
  }

  /** @param {Uint8Array} bytes @param {Received} out */
  record(bytes, out) {
    if (!this.session) {
      this.noSession(out);
      return;
    }
    try {
      deliver(this.session.opener.open(bytes), out);
    } catch (err) {
      if (err instanceof UnknownKeyError) this.noSession(out);
      else if (err instanceof RecordAuthError) {
        out.integrity = err.message;
        this.send(rejectFrame(REJECT_REASON.INTEGRITY));
        this.session = null;
      } else throw err;
    }
  }

  /** @param {Received} out */
  noSession(out) {
    out.error = "a record for a session this runner does not hold";
    if (!this.toldNoSession) {
      this.toldNoSession = true;
      this.send(rejectFrame(REJECT_REASON.NO_SESSION));
    }
  }
}
