// An app written for any Socket.IO server: no lastSeq, no resume code of its own. With the
// gateway's socketio.connection_state_recovery on, socket.io-client's own connection state
// recovery (pid and offset, socket.recovered) is all it has.
//
// Started by tests/clients/test_js_recovery.py as  node recovery.mjs '<json config>'  with
// config keys url, appSessionId (optional: without it the server assigns one), timeoutMs.
// Prints one JSON object per line:
//   {"event": "connect_packet", "data"}      the CONNECT reply as the client decoded it
//   {"event": "connect", "n", "id", "recovered"}
//   {"event": "disconnect", "reason"}
//   {"event": "server_event", "name", "args"} every event from the server, all its arguments
//   {"event": "ack", "id", "ack"}            the ack of a command
// Reads commands from stdin, one JSON object per line: {"id", "emit", "data"} emits with an
// ack; {"close": true} closes the socket and exits.

import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
setTimeout(() => {
  out({ event: "error", message: "timed out" });
  process.exit(1);
}, cfg.timeoutMs ?? 60000);

const options = { transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 300 };
if (cfg.appSessionId) options.auth = { appSessionId: cfg.appSessionId };
const socket = io(cfg.url, options);
let connects = 0;

socket.io.on("packet", (packet) => {
  if (packet.type === 0 && packet.nsp === "/") out({ event: "connect_packet", data: packet.data });
});
socket.on("connect", () => {
  connects += 1;
  out({ event: "connect", n: connects, id: socket.id, recovered: socket.recovered ?? null });
});
socket.on("disconnect", (reason) => out({ event: "disconnect", reason }));
socket.on("connect_error", (err) => out({ event: "connect_error", message: err.message }));
socket.onAny((name, ...args) => out({ event: "server_event", name, args }));

createInterface({ input: process.stdin }).on("line", async (line) => {
  const cmd = JSON.parse(line);
  if (cmd.close) {
    socket.close();
    process.exit(0);
  }
  try {
    const ack = await socket.timeout(20000).emitWithAck(cmd.emit, cmd.data ?? {});
    out({ event: "ack", id: cmd.id, ack });
  } catch (err) {
    out({ event: "ack", id: cmd.id, error: String(err) });
  }
});
