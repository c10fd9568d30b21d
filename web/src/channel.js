// How terminal bytes travel between this page and the runner: as they are (plain pairing).

const CODE = /^[A-Za-z0-9-]{4,32}$/;

/** The typed code, trimmed: { nameplate, secret } (secret null for a plain code), or null. */
export function parseCode(text) {
  const code = text.trim().replace(/\s+/g, '');
  if (!CODE.test(code)) return null;
  return { nameplate: code, secret: null };
}

/** A channel: send(bytes), receive(data), resize(cols, rows) or none, close(), ready. */
export function createChannel(parsed, socket, term, hooks) {
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
    close() {},
  };
}

/** Output as the runner sent it: bytes (a pseudo-terminal), text, or {"exit": status}. */
export function writeData(term, data, hooks) {
  if (data instanceof ArrayBuffer) term.write(new Uint8Array(data));
  else if (ArrayBuffer.isView(data)) term.write(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  else if (typeof data === 'string') term.write(data);
  else if (data && typeof data === 'object' && Number.isInteger(data.exit)) hooks.onExit(data.exit);
}
