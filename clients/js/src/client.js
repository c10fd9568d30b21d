/**
 * Socket.IO clients of the pairing gateway with end-to-end encryption: an app and a runner.
 *
 * Both keep every frame they sent until the gateway acks it and send the unacked ones again,
 * in order, after a reconnect (a frame written into a socket that died may or may not have
 * been relayed): the receiver drops the duplicates by record counter (handshake frames by
 * state), so nothing is lost or doubled across a reconnect or a replica crash. Both present
 * the last `seq` they got when they reconnect, so the gateway's hold replays only what they
 * missed.
 *
 * Browser-safe: socket.io-client, Uint8Array, WebCrypto randomness; storage is injected.
 * @module
 */
import { io } from "socket.io-client";
import { asBytes, bytesToHex, hexToBytes, utf8ToBytes } from "./bytes.js";
import { joinCode, makeSecret, splitCode } from "./codes.js";
import { REJECT_REASON, RecordAuthError, T, isFrame, isRecordType } from "./records.js";
import { AppHandshake, E2ESession, HandshakeError, RunnerHandshake, rejectFrame } from "./session.js";

/**
 * @typedef {object} KeyValueStore where pairing keys live between process starts
 *   (a file in Node, IndexedDB or localStorage in a browser); values are strings
 * @property {(name: string) => (string | null | undefined | Promise<string | null | undefined>)} get
 * @property {(name: string, value: string) => (void | Promise<void>)} set
 * @property {(name: string) => (void | Promise<void>)} [delete]
 */

/** A KeyValueStore in memory (keys are lost with the process). */
export class MemoryStore {
  constructor() {
    /** @type {Map<string, string>} */
    this.map = new Map();
  }
  /** @param {string} name */
  get(name) {
    return this.map.get(name) ?? null;
  }
  /** @param {string} name @param {string} value */
  set(name, value) {
    this.map.set(name, value);
  }
  /** @param {string} name */
  delete(name) {
    this.map.delete(name);
  }
}

/** A minimal event emitter (no dependency on Node's events module). */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<(...args: any[]) => void>>} */
    this.handlers = new Map();
  }
  /** @param {string} event @param {(...args: any[]) => void} handler */
  on(event, handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)?.add(handler);
    return this;
  }
  /** @param {string} event @param {(...args: any[]) => void} handler */
  off(event, handler) {
    this.handlers.get(event)?.delete(handler);
    return this;
  }
  /** @param {string} event @param {...any} args */
  emit(event, ...args) {
    for (const handler of [...(this.handlers.get(event) ?? [])]) handler(...args);
  }
}

/** An error ack from the gateway. */
export class GatewayError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "GatewayError";
    this.code = code;
  }
}

/**
 * @param {import("socket.io-client").Socket} socket
 * @param {string} event
 * @param {unknown} payload
 * @param {number} timeoutMs
 * @returns {Promise<Record<string, any>>}
 */
async function call(socket, event, payload, timeoutMs) {
  const ack = await socket.timeout(timeoutMs).emitWithAck(event, payload);
  if (!ack || ack.success !== true) {
    throw new GatewayError(ack?.error ?? "INVALID_ACK", ack?.message ?? JSON.stringify(ack));
  }
  return ack;
}

/**
 * Frames sent and not yet acked, resent in order after a reconnect.
 */
export class Outbox {
  /**
   * @param {string} event app:command or runner:output
   * @param {(err: GatewayError) => void} onError an error ack other than UNAVAILABLE
   */
  constructor(event, onError) {
    this.event = event;
    this.onError = onError;
    /** @type {import("socket.io-client").Socket | null} */
    this.socket = null;
    /** @type {Map<number, Record<string, unknown>>} */
    this.pending = new Map();
    this.next = 1;
    /** Bumped on every (re)send round, so that a stale ack's retry is ignored. */
    this.round = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.retry = null;
    /** @type {Set<() => void>} */
    this.drainWaiters = new Set();
    /** Frames sent again after a reconnect or an UNAVAILABLE ack. */
    this.resent = 0;
  }

  /**
   * Queues a payload; emits it now when the socket is ready.
   * @param {Record<string, unknown>} payload
   */
  push(payload) {
    const id = this.next++;
    this.pending.set(id, payload);
    if (this.socket) this.emit(id, payload);
  }

  /** @param {number} id @param {Record<string, unknown>} payload */
  emit(id, payload) {
    const socket = this.socket;
    if (!socket) return;
    const round = this.round;
    socket.emit(this.event, payload, (/** @type {any} */ ack) => {
      if (ack && ack.success === true) {
        this.pending.delete(id);
        if (this.pending.size === 0) for (const w of this.drainWaiters) w();
        return;
      }
      if (ack?.error === "UNAVAILABLE") {
        // The store was slow: the frame may or may not have gone. Send what is unacked
        // again shortly; the receiver drops what it already has.
        if (round === this.round && !this.retry) {
          this.retry = setTimeout(() => {
            this.retry = null;
            if (this.socket) this.resume(this.socket);
          }, 500);
        }
        return;
      }
      this.pending.delete(id);
      this.onError(new GatewayError(ack?.error ?? "INVALID_ACK", ack?.message ?? ""));
    });
  }

  /**
   * The socket is (again) ready: send every unacked frame, oldest first.
   * @param {import("socket.io-client").Socket} socket
   */
  resume(socket) {
    this.socket = socket;
    this.round++;
    this.resent += this.pending.size;
    for (const [id, payload] of this.pending) this.emit(id, payload);
  }

  /** The socket is gone: hold new frames until it is back. */
  pause() {
    this.socket = null;
  }

  /** Resolves once every frame sent so far is acked. */
  drained() {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.drainWaiters.delete(done);
        resolve(undefined);
      };
      this.drainWaiters.add(done);
    });
  }

  close() {
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    this.socket = null;
  }
}

/**
 * @typedef {object} ConnectOptions
 * @property {string} url the gateway
 * @property {string[]} [transports] default ["websocket"]
 * @property {KeyValueStore} [store] pairing keys (default: in memory)
 * @property {number} [ackTimeoutMs] for register/pair acks (default 10000)
 * @property {number} [handshakeTimeoutMs] default 30000
 * @property {Partial<import("socket.io-client").ManagerOptions & import("socket.io-client").SocketOptions>} [io]
 */

/**
 * The app side. Events: "data" (Uint8Array), "control" (object), "integrity" (RecordAuthError:
 * a record that failed authentication, never shown), "gap" ({fromSeq, toSeq, missed}),
 * "unpaired" ({runnerId, reason}), "rejected" (HandshakeError), "error" (Error),
 * "connect", "disconnect".
 */
export class AppClient extends Emitter {
  /**
   * @param {ConnectOptions & {appSessionId?: string, lastSeq?: number}} options
   */
  constructor(options) {
    super();
    this.options = options;
    this.store = options.store ?? new MemoryStore();
    this.appSessionId = options.appSessionId ?? randomId();
    this.lastSeq = options.lastSeq ?? 0;
    /** @type {string | null} */
    this.runnerId = null;
    /** @type {E2ESession | null} */
    this.session = null;
    /** @type {AppHandshake | null} */
    this.handshake = null;
    /** @type {{resolve: (s: E2ESession) => void, reject: (e: Error) => void} | null} */
    this.waiter = null;
    this.outbox = new Outbox("app:command", (err) => this.emit("error", err));
    /** Records dropped because their counter was not new (resends, replays). */
    this.duplicates = 0;
    this.socket = io(options.url, {
      transports: options.transports ?? ["websocket"],
      autoConnect: false,
      ...options.io,
      auth: (cb) => cb({ appSessionId: this.appSessionId, lastSeq: this.lastSeq }),
    });
    const socket = this.socket;
    socket.on("connect", () => {
      this.outbox.resume(socket);
      this.emit("connect");
    });
    socket.on("disconnect", (reason) => {
      this.outbox.pause();
      this.emit("disconnect", reason);
    });
    socket.on("terminal:output", (msg) => this.onOutput(msg));
    socket.on("terminal:gap", (gap) => this.emit("gap", gap));
    socket.on("pairing:unpaired", (msg) => this.emit("unpaired", msg));
  }

  /** Connects (resolves on the first connect; later reconnects are automatic). */
  connect() {
    return new Promise((resolve, reject) => {
      const ok = () => {
        this.socket.off("connect_error", fail);
        resolve(undefined);
      };
      const fail = (/** @type {Error} */ err) => {
        this.socket.off("connect", ok);
        reject(err);
      };
      this.socket.once("connect", ok);
      this.socket.once("connect_error", fail);
      this.socket.connect();
    });
  }

  /**
   * Pairs with a code `NAMEPLATE-SECRET`: only the nameplate goes to the gateway; the secret
   * is the CPace password. Resolves once the runner confirmed the key; rejects with a
   * HandshakeError WRONG_CODE if the code was wrong (the runner burns it).
   * @param {string} code
   */
  async pair(code) {
    const { nameplate, secret } = splitCode(code);
    const ack = await call(this.socket, "app:pair", { pairingCode: nameplate }, this.options.ackTimeoutMs ?? 10000);
    this.runnerId = ack.runnerId;
    this.appSessionId = ack.appSessionId ?? this.appSessionId;
    return this.runHandshake(AppHandshake.forCode(nameplate, secret));
  }

  /**
   * Re-keys with the pairing key stored by an earlier pair() of this appSessionId (after a
   * process restart, without the code). Rejects with HandshakeError UNKNOWN_KEY when there
   * is none here or the runner does not hold it.
   */
  async rekey() {
    const stored = await this.store.get(`app:${this.appSessionId}`);
    if (!stored) throw new HandshakeError("UNKNOWN_KEY", "no stored pairing key for this app");
    const { pairingKey, pairingKeyId, runnerId } = JSON.parse(stored);
    this.runnerId = runnerId;
    return this.runHandshake(AppHandshake.forRekey(hexToBytes(pairingKey), hexToBytes(pairingKeyId)));
  }

  /**
   * @param {AppHandshake} handshake
   * @returns {Promise<E2ESession>}
   */
  runHandshake(handshake) {
    this.handshake = handshake;
    this.session = null;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new HandshakeError("PROTOCOL", "the runner did not answer the handshake in time"));
      }, this.options.handshakeTimeoutMs ?? 30000);
      this.waiter = {
        resolve: (s) => {
          clearTimeout(timer);
          resolve(s);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.outbox.push({ data: handshake.hello() });
    });
  }

  /** @param {{data: unknown, seq?: number, runnerId?: string}} msg */
  onOutput(msg) {
    if (typeof msg?.seq === "number") {
      if (msg.seq <= this.lastSeq) return;
      this.lastSeq = msg.seq;
    }
    const bytes = asBytes(msg?.data);
    if (!isFrame(bytes)) return; // not E2E: never shown by an E2E app
    const type = bytes[2];
    if (isRecordType(type)) {
      if (!this.session) return;
      let opened;
      try {
        opened = this.session.open(bytes);
      } catch (err) {
        if (err instanceof RecordAuthError) this.emit("integrity", err);
        else this.emit("error", err);
        return;
      }
      if (opened.status === "duplicate") this.duplicates++;
      if (opened.status !== "ok") return;
      if (opened.type === T.DATA) this.emit("data", opened.payload);
      else this.emit("control", parseJson(opened.payload));
      return;
    }
    if (!this.handshake) return;
    let step;
    try {
      step = this.handshake.receive(bytes);
    } catch (err) {
      this.waiter?.reject(/** @type {Error} */ (err));
      this.waiter = null;
      this.emit("rejected", err);
      return;
    }
    if (step.send) this.outbox.push({ data: step.send });
    const session = step.session;
    if (session) {
      this.session = session;
      const keys = session.keys;
      Promise.resolve(
        this.store.set(
          `app:${this.appSessionId}`,
          JSON.stringify({
            runnerId: this.runnerId,
            pairingKey: bytesToHex(keys.pairingKey),
            pairingKeyId: bytesToHex(keys.pairingKeyId),
          }),
        ),
      ).finally(() => {
        this.waiter?.resolve(session);
        this.waiter = null;
      });
    }
  }

  /** @returns {E2ESession} */
  requireSession() {
    if (!this.session) throw new Error("no E2E session yet: pair() or rekey() first");
    return this.session;
  }

  /**
   * Sends terminal bytes (keystrokes) in a DATA record.
   * @param {Uint8Array | string} data
   */
  send(data) {
    const bytes = typeof data === "string" ? utf8ToBytes(data) : data;
    this.outbox.push({ data: this.requireSession().sealData(bytes).record });
  }

  /** @param {number} cols @param {number} rows */
  resize(cols, rows) {
    this.outbox.push({ data: this.requireSession().sealResize(cols, rows).record });
  }

  /** @param {Record<string, unknown>} message */
  control(message) {
    this.outbox.push({ data: this.requireSession().sealControl(message).record });
  }

  /** Resolves once every frame sent so far is acked by the gateway. */
  flushed() {
    return this.outbox.drained();
  }

  close() {
    this.outbox.close();
    this.socket.disconnect();
  }
}

/**
 * @typedef {object} AppState
 * @property {RunnerHandshake | null} handshake
 * @property {E2ESession | null} session
 * @property {boolean} refused after a failed confirmation: nothing more from this app
 */

/**
 * The runner side. Events: "code" (the code to show, `NAMEPLATE-SECRET`), "session"
 * (appSessionId, E2ESession), "data" (appSessionId, Uint8Array), "resize" (appSessionId,
 * {cols, rows}), "control" (appSessionId, object), "rejected" (appSessionId, HandshakeError:
 * a wrong code; a new code follows), "integrity" (appSessionId, RecordAuthError), "gap",
 * "unpaired" (appSessionId), "error", "connect", "disconnect".
 */
export class RunnerClient extends Emitter {
  /**
   * @param {ConnectOptions & {runnerId: string, runnerKey?: string, token?: string}} options
   */
  constructor(options) {
    super();
    this.options = options;
    this.store = options.store ?? new MemoryStore();
    this.runnerId = options.runnerId;
    /** @type {{nameplate: string, secret: string} | null} the code shown, until an app pairs with it */
    this.code = null;
    /** @type {Map<string, AppState>} */
    this.apps = new Map();
    /** @type {Map<string, number>} */
    this.lastSeq = new Map();
    /** @type {ReturnType<typeof setInterval> | null} */
    this.heartbeat = null;
    this.closed = false;
    this.outbox = new Outbox("runner:output", (err) => this.emit("error", err));
    /** Records dropped because their counter was not new (resends, replays). */
    this.duplicates = 0;
    this.socket = io(options.url, {
      transports: options.transports ?? ["websocket"],
      autoConnect: false,
      ...options.io,
    });
    const socket = this.socket;
    socket.on("connect", () => {
      this.emit("connect");
      // Register again after every reconnect (with lastSeq), then resend the unacked.
      this.register().catch((err) => this.emit("error", err));
    });
    socket.on("disconnect", (reason) => {
      this.outbox.pause();
      this.stopHeartbeat();
      this.emit("disconnect", reason);
    });
    socket.on("pairing:paired", (msg) => this.onPaired(msg?.appSessionId));
    socket.on("pairing:app_unpaired", (msg) => {
      this.apps.delete(msg?.appSessionId);
      this.emit("unpaired", msg?.appSessionId);
    });
    socket.on("terminal:input", (msg) => this.onInput(msg));
    socket.on("terminal:gap", (gap) => this.emit("gap", gap));
    /** @type {Promise<void> | null} */
    this.registered = null;
  }

  /** Connects and registers; resolves with the first code to show. */
  connect() {
    return new Promise((resolve, reject) => {
      /** @param {string} code */
      const onCode = (code) => {
        this.off("code", onCode);
        this.off("error", onError);
        resolve(code);
      };
      /** @param {Error} err */
      const onError = (err) => {
        this.off("code", onCode);
        this.off("error", onError);
        reject(err);
      };
      this.on("code", onCode);
      this.on("error", onError);
      this.socket.once("connect_error", onError);
      this.socket.connect();
    });
  }

  /**
   * runner:register: a new nameplate from the gateway and a new secret made here; the
   * unacked frames go again once registered.
   */
  async register() {
    /** @type {Record<string, unknown>} */
    const payload = { runnerId: this.runnerId };
    if (this.options.runnerKey) payload.runnerKey = this.options.runnerKey;
    if (this.options.token) payload.token = this.options.token;
    if (this.lastSeq.size) payload.lastSeq = Object.fromEntries(this.lastSeq);
    const ack = await call(this.socket, "runner:register", payload, this.options.ackTimeoutMs ?? 10000);
    this.code = { nameplate: String(ack.pairingCode).toUpperCase(), secret: makeSecret() };
    this.startHeartbeat(Number(ack.heartbeatIntervalMs) || 10000);
    this.outbox.resume(this.socket);
    this.emit("code", joinCode(this.code.nameplate, this.code.secret));
  }

  /** @param {number} intervalMs */
  startHeartbeat(intervalMs) {
    this.stopHeartbeat();
    this.heartbeat = setInterval(() => {
      this.socket.emit("runner:heartbeat", { runnerId: this.runnerId }, () => {});
    }, intervalMs);
  }

  stopHeartbeat() {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  /** @param {string} appSessionId */
  state(appSessionId) {
    let app = this.apps.get(appSessionId);
    if (!app) {
      app = { handshake: null, session: null, refused: false };
      this.apps.set(appSessionId, app);
    }
    return app;
  }

  /**
   * An app spent the nameplate shown: the secret shown with it is now that app's password.
   * @param {string} appSessionId
   */
  onPaired(appSessionId) {
    if (typeof appSessionId !== "string" || !this.code) return;
    const app = this.state(appSessionId);
    app.handshake = RunnerHandshake.forCode(this.code.nameplate, this.code.secret);
    app.refused = false;
    this.code = null;
  }

  /** @param {{appSessionId: string, data: unknown, seq?: number}} msg */
  async onInput(msg) {
    const appSessionId = msg?.appSessionId;
    if (typeof appSessionId !== "string") return;
    if (typeof msg.seq === "number") {
      if (msg.seq <= (this.lastSeq.get(appSessionId) ?? 0)) return;
      this.lastSeq.set(appSessionId, msg.seq);
    }
    const bytes = asBytes(msg.data);
    if (!isFrame(bytes)) return; // plaintext: an E2E runner never runs it
    const app = this.state(appSessionId);
    if (app.refused) return;
    const type = bytes[2];
    if (isRecordType(type)) {
      if (!app.session) {
        this.sendTo(appSessionId, rejectFrame(REJECT_REASON.NO_SESSION));
        return;
      }
      let opened;
      try {
        opened = app.session.open(bytes);
      } catch (err) {
        if (err instanceof RecordAuthError) this.emit("integrity", appSessionId, err);
        else this.emit("error", err);
        return;
      }
      if (opened.status === "duplicate") this.duplicates++;
      if (opened.status !== "ok") return;
      if (opened.type === T.DATA) this.emit("data", appSessionId, opened.payload);
      else if (opened.type === T.RESIZE) this.emit("resize", appSessionId, parseJson(opened.payload));
      else this.emit("control", appSessionId, parseJson(opened.payload));
      return;
    }
    if (type === T.REKEY_HELLO) {
      const id = RunnerHandshake.rekeyId(bytes);
      const stored = id ? await this.store.get(`runner:${bytesToHex(id)}`) : null;
      if (!id || !stored) {
        this.sendTo(appSessionId, rejectFrame(REJECT_REASON.UNKNOWN_KEY));
        return;
      }
      if (!app.handshake?.rekey || bytesToHex(app.handshake.rekey.pairingKeyId) !== bytesToHex(id) || app.handshake.state === "done") {
        const { pairingKey } = JSON.parse(stored);
        app.handshake = RunnerHandshake.forRekey(hexToBytes(pairingKey), id);
      }
    } else if (type === T.HELLO && !app.handshake) {
      // No code of ours was spent by this app (or it was spent already): refuse.
      this.sendTo(appSessionId, rejectFrame(REJECT_REASON.WRONG_CODE));
      return;
    }
    const handshake = app.handshake;
    if (!handshake) return;
    let step;
    try {
      step = handshake.receive(bytes);
    } catch (err) {
      if (err instanceof HandshakeError) this.emit("error", err);
      else throw err;
      return;
    }
    if (step.send) this.sendTo(appSessionId, step.send);
    if (step.error) {
      // One guess: the code is burnt, this app refused, a new code shown.
      app.refused = true;
      app.handshake = null;
      this.emit("rejected", appSessionId, step.error);
      this.register().catch((err) => this.emit("error", err));
      return;
    }
    if (step.session) {
      app.session = step.session;
      const keys = step.session.keys;
      await this.store.set(
        `runner:${bytesToHex(keys.pairingKeyId)}`,
        JSON.stringify({ appSessionId, pairingKey: bytesToHex(keys.pairingKey) }),
      );
      this.emit("session", appSessionId, step.session);
    }
  }

  /** @param {string} appSessionId @param {Uint8Array} frame */
  sendTo(appSessionId, frame) {
    this.outbox.push({ data: frame, appSessionId });
  }

  /**
   * Sends terminal output to one app in a DATA record.
   * @param {string} appSessionId @param {Uint8Array | string} data
   */
  send(appSessionId, data) {
    const session = this.apps.get(appSessionId)?.session;
    if (!session) throw new Error(`no E2E session with ${appSessionId}`);
    const bytes = typeof data === "string" ? utf8ToBytes(data) : data;
    this.sendTo(appSessionId, session.sealData(bytes).record);
  }

  /** @param {string} appSessionId @param {Record<string, unknown>} message */
  control(appSessionId, message) {
    const session = this.apps.get(appSessionId)?.session;
    if (!session) throw new Error(`no E2E session with ${appSessionId}`);
    this.sendTo(appSessionId, session.sealControl(message).record);
  }

  /** Resolves once every frame sent so far is acked by the gateway. */
  flushed() {
    return this.outbox.drained();
  }

  close() {
    this.closed = true;
    this.stopHeartbeat();
    this.outbox.close();
    this.socket.disconnect();
  }
}

/** @param {Uint8Array} bytes */
function parseJson(bytes) {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/** An appSessionId: 24 random bytes as 32 chars of URL-safe base64. */
export function randomId() {
  const bytes = new Uint8Array(24);
  globalThis.crypto.getRandomValues(bytes);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replaceAll("+", "-").replaceAll("/", "_");
}
