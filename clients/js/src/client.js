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
import { asBytes, bytesToHex, constantTimeEqual, hexToBytes, utf8ToBytes } from "./bytes.js";
import { joinCode, makeSecret, splitCode } from "./codes.js";
import { REJECT_REASON } from "./records.js";
import { AppChannel, CodeBook, E2ESession, HandshakeError, RunnerChannel } from "./session.js";

/**
 * @typedef {object} KeyValueStore where pairing keys live between process starts (a file
 *   in Node, localStorage in a browser); synchronous, values are strings
 * @property {(name: string) => (string | null | undefined)} get
 * @property {(name: string, value: string) => void} set
 * @property {(name: string) => void} [delete]
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

/** Error acks after which a frame is sent again (with everything unacked after it). */
const RETRYABLE = new Set(["UNAVAILABLE", "RUNNER_OFFLINE"]);

/**
 * Frames sent and not yet acked, resent in order after a reconnect.
 */
export class Outbox {
  /**
   * @param {string} event app:command or runner:output
   * @param {(err: GatewayError) => void} onError an error ack that is not retryable
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
    /** Emissions of a frame emitted before (after a reconnect or a retryable error ack). */
    this.resent = 0;
    /** @type {Set<number>} ids emitted at least once */
    this.emitted = new Set();
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
    if (this.emitted.has(id)) this.resent++;
    this.emitted.add(id);
    const round = this.round;
    socket.emit(this.event, payload, (/** @type {any} */ ack) => {
      if (ack && ack.success === true) {
        this.settle(id);
        return;
      }
      if (RETRYABLE.has(ack?.error)) {
        // The store was slow (the frame may or may not have gone), or the runner is away for
        // a moment: send what is unacked again shortly; the receiver drops what it has.
        if (round === this.round && !this.retry) {
          this.retry = setTimeout(() => {
            this.retry = null;
            if (this.socket) this.resume(this.socket);
          }, 500);
        }
        return;
      }
      this.settle(id);
      this.onError(new GatewayError(ack?.error ?? "INVALID_ACK", ack?.message ?? ""));
    });
  }

  /** @param {number} id acked, or refused for good */
  settle(id) {
    this.pending.delete(id);
    this.emitted.delete(id);
    if (this.pending.size === 0) for (const w of [...this.drainWaiters]) w();
  }

  /**
   * The socket is (again) ready: send every unacked frame, oldest first.
   * @param {import("socket.io-client").Socket} socket
   */
  resume(socket) {
    this.socket = socket;
    this.round++;
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
 * The app side. Events: "data" (Uint8Array), "control" (object), "lost" (number of records
 * lost for good), "integrity" (message: a record failed authentication and was not shown, or
 * the runner says one of ours did; the session is over), "rejected" (HandshakeError),
 * "gap" ({fromSeq, toSeq, missed}), "unpaired" ({runnerId, reason}), "notice" (text),
 * "error" (Error), "connect", "disconnect".
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
    /** @type {AppChannel | null} */
    this.channel = null;
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
    socket.on("terminal:gap", (gap) => {
      if (this.channel) this.handle(this.channel.gap());
      this.emit("gap", gap);
    });
    socket.on("pairing:unpaired", (msg) => this.emit("unpaired", msg));
  }

  /** The open session, if any. */
  get session() {
    return this.channel?.session ?? null;
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
   * is the CPace password. Resolves once the runner's key confirmation checked; rejects with
   * a HandshakeError WRONG_CODE if the code was wrong (the runner burns it).
   * @param {string} code
   */
  async pair(code) {
    const { nameplate, secret } = splitCode(code);
    const ack = await call(this.socket, "app:pair", { pairingCode: nameplate }, this.options.ackTimeoutMs ?? 10000);
    this.runnerId = String(ack.runnerId);
    this.appSessionId = ack.appSessionId ?? this.appSessionId;
    return this.handshake((channel) => channel.start({ nameplate, secret }));
  }

  /**
   * Re-keys the pairing this appSessionId still has at the gateway with the pairing key an
   * earlier pair() stored (after a process restart, without the code). Rejects with
   * HandshakeError UNKNOWN_KEY when there is none, or the runner does not hold it.
   */
  async rekey() {
    const status = await call(this.socket, "app:status", {}, this.options.ackTimeoutMs ?? 10000);
    const stored = readJson(this.store.get(`app:${this.appSessionId}`));
    if (!status.paired || !stored || stored.runnerId !== status.runnerId) {
      throw new HandshakeError(REJECT_REASON.UNKNOWN_KEY, "no pairing key for this pairing: pair again with a new code");
    }
    this.runnerId = String(status.runnerId);
    return this.handshake((channel) =>
      channel.startRekey({ pairingKey: hexToBytes(stored.key), pairingKeyId: hexToBytes(stored.keyId) }),
    );
  }

  /**
   * @param {(channel: AppChannel) => void} start
   * @returns {Promise<E2ESession>}
   */
  handshake(start) {
    const channel = new AppChannel((frame) => this.outbox.push({ data: frame }), {
      appSessionId: this.appSessionId,
      runnerId: /** @type {string} */ (this.runnerId),
    });
    this.channel = channel;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new HandshakeError(REJECT_REASON.WRONG_CODE, "the runner did not answer the handshake in time"));
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
      start(channel);
    });
  }

  /** @param {{data: unknown, seq?: number, runnerId?: string}} msg */
  onOutput(msg) {
    if (typeof msg?.seq === "number") {
      if (msg.seq <= this.lastSeq) return; // a replay overlapping what came live
      this.lastSeq = msg.seq;
    }
    const bytes = asBytes(msg?.data);
    if (!this.channel || !bytes) return; // not E2E: never shown by an E2E app
    this.handle(this.channel.receive(bytes));
  }

  /** @param {import("./session.js").Received} got */
  handle(got) {
    const channel = /** @type {AppChannel} */ (this.channel);
    this.duplicates += got.duplicates;
    if (got.confirmed && channel.keys) {
      const keys = channel.keys;
      this.store.set(
        `app:${this.appSessionId}`,
        JSON.stringify({ runnerId: this.runnerId, key: bytesToHex(keys.pairingKey), keyId: bytesToHex(keys.pairingKeyId) }),
      );
      this.waiter?.resolve(/** @type {E2ESession} */ (channel.session));
      this.waiter = null;
    }
    if (got.integrity) {
      this.emit("integrity", `a message from the runner failed authentication (${got.integrity}): altered in transit, not shown`);
      return;
    }
    if (got.rejected === "INTEGRITY") {
      this.emit("integrity", "the runner received a message that failed authentication (altered in transit); session ended");
      return;
    }
    if (got.rejected === "NO_SESSION") {
      const keys = channel.keys;
      if (keys) {
        this.emit("notice", "the runner lost the session: re-keying");
        channel.startRekey({ pairingKey: keys.pairingKey, pairingKeyId: keys.pairingKeyId });
      }
      return;
    }
    if (got.rejected) {
      const err = new HandshakeError(
        /** @type {any} */ (REJECT_REASON)[got.rejected] ?? REJECT_REASON.WRONG_CODE,
        got.rejected === "WRONG_CODE"
          ? "the pairing code was wrong (key confirmation failed); the runner shows a new code"
          : "the runner does not know this pairing: pair again with a new code",
      );
      this.waiter?.reject(err);
      this.waiter = null;
      this.emit("rejected", err);
      return;
    }
    if (got.lost) this.emit("lost", got.lost);
    for (const data of got.data) this.emit("data", data);
    for (const control of got.controls) this.emit("control", control);
  }

  /** @returns {AppChannel} */
  requireChannel() {
    if (!this.channel) throw new Error("no E2E channel yet: pair() or rekey() first");
    return this.channel;
  }

  /**
   * Sends terminal bytes (keystrokes) in a DATA record (once the handshake is done).
   * @param {Uint8Array | string} data
   */
  send(data) {
    this.requireChannel().sendData(typeof data === "string" ? utf8ToBytes(data) : data);
  }

  /** @param {number} cols @param {number} rows */
  resize(cols, rows) {
    this.requireChannel().sendResize(cols, rows);
  }

  /** @param {Record<string, unknown>} message */
  control(message) {
    this.requireChannel().sendControl(message);
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
 * The runner side. Events: "code" (the code to show, `NAMEPLATE-SECRET`), "session"
 * (appSessionId, E2ESession), "data" (appSessionId, Uint8Array), "resize" (appSessionId,
 * cols, rows), "control" (appSessionId, object), "rejected" (appSessionId, message: a wrong
 * code, refused; a new code follows), "integrity" (appSessionId, message), "lost"
 * (appSessionId, n), "paired", "unpaired" (appSessionId), "gap", "notice", "error",
 * "connect", "disconnect".
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
    this.codes = new CodeBook();
    /** @type {string | null} the code shown */
    this.code = null;
    /** @type {Map<string, RunnerChannel>} */
    this.channels = new Map();
    /** @type {Map<string, number>} newest seq of terminal:input per app, for resume */
    this.lastSeq = new Map();
    /** @type {ReturnType<typeof setInterval> | null} */
    this.heartbeat = null;
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
    socket.on("pairing:paired", (msg) => {
      const app = msg?.appSessionId;
      if (typeof app !== "string") return;
      // A new pairing of this app (maybe with a new code after a wrong one): a handshake
      // follows; forget the old session, unless that handshake has already begun.
      const channel = this.channels.get(app);
      if (channel && (channel.open || channel.refused || !channel.handshake)) this.channels.delete(app);
      this.emit("paired", app);
    });
    socket.on("pairing:app_unpaired", (msg) => {
      const app = msg?.appSessionId;
      if (typeof app !== "string") return;
      this.channels.delete(app);
      this.lastSeq.delete(app);
      this.store.delete?.(`runner:${app}`);
      this.emit("unpaired", app);
    });
    socket.on("terminal:input", (msg) => this.onInput(msg));
    socket.on("terminal:gap", (gap) => {
      const channel = this.channels.get(gap?.appSessionId);
      if (channel) this.handle(gap.appSessionId, channel.gap());
      this.emit("gap", gap);
    });
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
    if (this.lastSeq.size) payload.lastSeq = Object.fromEntries([...this.lastSeq].slice(-256));
    const ack = await call(this.socket, "runner:register", payload, this.options.ackTimeoutMs ?? 10000);
    const nameplate = String(ack.pairingCode).toUpperCase();
    const secret = makeSecret();
    this.codes.issue(nameplate, secret);
    this.code = joinCode(nameplate, secret);
    this.startHeartbeat(Number(ack.heartbeatIntervalMs) || 10000);
    this.outbox.resume(this.socket);
    this.emit("code", this.code);
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

  /** @param {string} app */
  channel(app) {
    let channel = this.channels.get(app);
    if (!channel) {
      channel = new RunnerChannel((frame) => this.outbox.push({ data: frame, appSessionId: app }), {
        appSessionId: app,
        runnerId: this.runnerId,
        codes: this.codes,
        pairingKey: (keyId) => {
          const entry = readJson(this.store.get(`runner:${app}`));
          if (!entry || !constantTimeEqual(hexToBytes(entry.keyId), keyId)) return null;
          return hexToBytes(entry.key);
        },
      });
      this.channels.set(app, channel);
    }
    return channel;
  }

  /** @param {{appSessionId: string, data: unknown, seq?: number}} msg */
  onInput(msg) {
    const app = msg?.appSessionId;
    if (typeof app !== "string") return;
    if (typeof msg.seq === "number") {
      if (msg.seq <= (this.lastSeq.get(app) ?? 0)) return;
      this.lastSeq.set(app, msg.seq);
    }
    const bytes = asBytes(msg.data);
    if (!bytes) return; // not a record: an app that does not encrypt gets no answer here
    this.handle(app, this.channel(app).receive(bytes));
  }

  /** @param {string} app @param {import("./session.js").Received} got */
  handle(app, got) {
    const channel = /** @type {RunnerChannel} */ (this.channels.get(app));
    this.duplicates += got.duplicates;
    if (got.confirmed && channel.keys) {
      const keys = channel.keys;
      this.store.set(`runner:${app}`, JSON.stringify({ keyId: bytesToHex(keys.pairingKeyId), key: bytesToHex(keys.pairingKey) }));
      this.emit("session", app, channel.session);
    }
    if (got.burnt) {
      // One guess: the code is spent and this app refused; a new code for the next try.
      this.emit("rejected", app, "wrong code (key confirmation failed): refused; a new code follows");
      this.register().catch((err) => this.emit("error", err));
    } else if (got.rejected && got.error) {
      this.emit("notice", `app ${app}: ${got.error}`);
    }
    if (got.integrity) this.emit("integrity", app, `${got.integrity} (altered in transit?): not used; session closed`);
    if (got.lost) this.emit("lost", app, got.lost);
    for (const [cols, rows] of got.resizes) this.emit("resize", app, cols, rows);
    for (const data of got.data) this.emit("data", app, data);
    for (const control of got.controls) this.emit("control", app, control);
  }

  /**
   * Sends terminal output to one app in a DATA record.
   * @param {string} app @param {Uint8Array | string} data
   */
  send(app, data) {
    const channel = this.channels.get(app);
    if (!channel?.open) throw new Error(`no E2E session with ${app}`);
    channel.sendData(typeof data === "string" ? utf8ToBytes(data) : data);
  }

  /** @param {string} app @param {Record<string, unknown>} message */
  control(app, message) {
    const channel = this.channels.get(app);
    if (!channel?.open) throw new Error(`no E2E session with ${app}`);
    channel.sendControl(message);
  }

  /** Resolves once every frame sent so far is acked by the gateway. */
  flushed() {
    return this.outbox.drained();
  }

  close() {
    this.stopHeartbeat();
    this.outbox.close();
    this.socket.disconnect();
  }
}

/**
 * @param {string | null | undefined} text
 * @returns {any}
 */
function readJson(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
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
