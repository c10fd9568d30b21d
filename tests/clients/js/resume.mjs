// An app that keeps lastSeq the way docs/protocol.md shows: socket.io-client with `auth` as a
// function, called on every connection attempt, so each automatic reconnect resumes.
//
// Started by tests/clients/test_js_resume.py as  node resume.mjs '<json config>'  with config keys
// url, appSessionId, pairingCode, total (outputs to wait for), timeoutMs.
// Prints one JSON object per line: {"event": "connect", "n", "lastSeq"}, {"event": "paired",
// "ack"}, {"event": "output", "seq"}, {"event": "gap", ...}, and at the end {"event": "done",
// "seqs", "duplicates", "connects"}.

import { io } from "socket.io-client";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
setTimeout(() => {
  out({ event: "error", message: "timed out" });
  process.exit(1);
}, cfg.timeoutMs ?? 30000);

const appSessionId = cfg.appSessionId;
let lastSeq = 0;
let connects = 0;
let duplicates = 0;
const seqs = [];

const socket = io(cfg.url, {
  transports: ["websocket"],
  reconnectionDelay: 100,
  reconnectionDelayMax: 200,
  auth: (cb) => cb({ appSessionId, lastSeq }),
});

socket.on("connect", async () => {
  connects += 1;
  out({ event: "connect", n: connects, lastSeq });
  if (connects === 1) {
    const ack = await socket.timeout(10000).emitWithAck("app:pair", { pairingCode: cfg.pairingCode });
    out({ event: "paired", ack });
  }
});

socket.on("terminal:output", ({ seq }) => {
  if (seq <= lastSeq) {
    duplicates += 1;
    return;
  }
  lastSeq = seq;
  seqs.push(seq);
  out({ event: "output", seq });
  if (seqs.length === cfg.total) {
    out({ event: "done", seqs, duplicates, connects });
    socket.close();
    process.exit(0);
  }
});

socket.on("terminal:gap", (gap) => out({ event: "gap", ...gap }));
