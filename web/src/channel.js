// How terminal bytes travel between this page and the runner: as they are (a plain code), or
// end-to-end encrypted (a code NAMEPLATE-SECRET): only the nameplate goes to the gateway, the
// secret is the CPace password of the handshake with the runner (clients/js), and every
// keystroke, output and window size then travels as an XChaCha20-Poly1305 record the gateway
// relays without being able to read or alter it.

import { ALPHABET, SECRET_LENGTH } from '../../clients/js/src/codes.js';
import { asBytes, bytesToHex, hexToBytes } from '../../clients/js/src/bytes.js';
import { AppChannel } from '../../clients/js/src/session.js';
import { Outbox } from '../../clients/js/src/client.js';

const PLAIN = /^[A-Za-z0-9-]{4,32}$/;
const E2E = new RegExp(`^([A-Z0-9-]{4,32})-([${ALPHABET}]{${SECRET_LENGTH}})$`);

/** The typed code: { nameplate, secret } (secret null for a plain code), or null.
 * A code whose last part after '-' is a secret of the runner's alphabet is end to end. */
export function parseCode(text) {
  const code = text.trim().replace(/\s+/g, '');
  const e2e = E2E.exec(code.toUpperCase());
  if (e2e) return { nameplate: e2e[1], secret: e2e[2] };
  if (!PLAIN.test(code)) return null;
  return { nameplate: code, secret: null };
}

/**
 * A channel for one pairing: send(bytes), receive(data), resize(cols, rows) or null, gap(),
 * connected(socket), disconnected(), close(); ready resolves once bytes can flow (at once for
 * plain; after the runner's key confirmation for E2E, rejecting on a wrong code).
 * `stored` re-keys an E2E pairing from the pairing key of an earlier handshake (a reload).
 */
export function createChannel(parsed, socket, term, hooks, ids, stored = null) {
  if (parsed.secret || stored) return e2eChannel(parsed, socket, term, hooks, ids, stored);
  return plainChannel(socket, term, hooks);
}

function plainChannel(socket, term, hooks) {
  return {
    e2e: false,
    ready: Promise.resolve(),
    resize: null,
    send(bytes) {
      socket.emit('app:command', { data: bytes }, (ack) => {
        if (ack && !ack.success && ack.error === 'RUNNER_OFFLINE') hooks.onNotice('the runner is offline');
      });
    },
    receive(data) {
      writeData(term, data, hooks);
    },
    gap() {},
    connected() {},
    disconnected() {},
    close() {},
    stored: () => null,
  };
}

function e2eChannel(parsed, socket, term, hooks, ids, stored) {
  // Frames wait in the outbox until the gateway acks them, and go again after a reconnect
  // (the runner drops what it already has by the record counter).
  const outbox = new Outbox('app:command', (err) => hooks.onNotice(`refused: ${err.message || err.code}`));
  if (socket.connected) outbox.resume(socket);
  const channel = new AppChannel((frame) => outbox.push({ data: frame }), ids);
  let settle;
  const ready = new Promise((resolve, reject) => { settle = { resolve, reject }; });
  const timer = setTimeout(() => {
    settle.reject(new Error('the runner did not answer the handshake in time'));
  }, 30000);
  let ended = false;

  function handle(got) {
    if (ended) return;
    if (got.confirmed) {
      clearTimeout(timer);
      settle.resolve();
    }
    if (got.integrity || got.rejected === 'INTEGRITY') {
      ended = true;
      hooks.onFatal('A message failed authentication (altered in transit): not shown, session ended. Pair again.');
      return;
    }
    if (got.rejected === 'NO_SESSION') {
      const keys = channel.keys;
      if (keys) {
        hooks.onNotice('the runner lost the session: re-keying');
        channel.startRekey({ pairingKey: keys.pairingKey, pairingKeyId: keys.pairingKeyId });
      }
      return;
    }
    if (got.rejected) {
      ended = true;
      clearTimeout(timer);
      const message = got.rejected === 'WRONG_CODE'
        ? 'Wrong code: the runner refused it and shows a new one.'
        : 'The runner does not know this pairing: pair again with its code.';
      settle.reject(new Error(message));
      hooks.onFatal(message);
      return;
    }
    if (got.lost) hooks.onNotice(`${got.lost} messages of output were lost while disconnected`);
    for (const data of got.data) term.write(data);
    for (const control of got.controls) {
      if (Number.isInteger(control.exit)) hooks.onExit(control.exit);
    }
  }

  if (stored) {
    channel.startRekey({ pairingKey: hexToBytes(stored.key), pairingKeyId: hexToBytes(stored.keyId) });
  } else {
    channel.start({ nameplate: parsed.nameplate, secret: parsed.secret });
  }
  return {
    e2e: true,
    ready,
    send(bytes) { if (!ended) channel.sendData(bytes); },
    resize(cols, rows) { if (!ended) channel.sendResize(cols, rows); },
    receive(data) {
      const bytes = asBytes(data);
      if (bytes) handle(channel.receive(bytes)); // plaintext from the gateway is never shown
    },
    gap() { handle(channel.gap()); },
    connected(sock) { outbox.resume(sock); },
    disconnected() { outbox.pause(); },
    close() { ended = true; clearTimeout(timer); outbox.close(); },
    /** What a reload needs to re-key without the code (this tab's sessionStorage only). */
    stored() {
      const keys = channel.keys;
      return keys ? { key: bytesToHex(keys.pairingKey), keyId: bytesToHex(keys.pairingKeyId) } : null;
    },
  };
}

/** Output as the runner sent it: bytes (a pseudo-terminal), text, or {"exit": status}. */
export function writeData(term, data, hooks) {
  if (data instanceof ArrayBuffer) term.write(new Uint8Array(data));
  else if (ArrayBuffer.isView(data)) term.write(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  else if (typeof data === 'string') term.write(data);
  else if (data && typeof data === 'object' && Number.isInteger(data.exit)) hooks.onExit(data.exit);
}
