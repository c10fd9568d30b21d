// The client's outbox: frames not acked are sent again, in order, when the socket is back.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Outbox } from "../src/client.js";

/** A socket.io-client stand-in that records emits and lets the test ack or lose them. */
class FakeSocket {
  constructor() {
    /** @type {{event: string, payload: any, ack: (a: any) => void}[]} */
    this.sent = [];
  }
  /** @param {string} event @param {any} payload @param {(a: any) => void} ack */
  emit(event, payload, ack) {
    this.sent.push({ event, payload, ack });
  }
}

test("unacked frames are resent in order after a reconnect; acked ones are not", async () => {
  /** @type {any[]} */
  const errors = [];
  const box = new Outbox("app:command", (e) => errors.push(e));
  const first = new FakeSocket();
  box.resume(/** @type {any} */ (first));
  for (let i = 1; i <= 5; i++) box.push({ data: i });
  assert.deepEqual(first.sent.map((s) => s.payload.data), [1, 2, 3, 4, 5]);
  first.sent[0].ack({ success: true });
  first.sent[1].ack({ success: true });
  // The connection dies: 3, 4, 5 were written, never acked (maybe relayed, maybe lost).
  box.pause();
  box.push({ data: 6 }); // sent while away: held, not emitted
  const second = new FakeSocket();
  box.resume(/** @type {any} */ (second));
  assert.deepEqual(second.sent.map((s) => s.payload.data), [3, 4, 5, 6]);
  assert.equal(box.resent, 3); // 6 is sent for the first time
  for (const s of second.sent) s.ack({ success: true });
  await box.drained();
  assert.equal(box.pending.size, 0);
  assert.deepEqual(errors, []);
});

test("an error ack other than UNAVAILABLE or RUNNER_OFFLINE drops the frame and reports it", async () => {
  /** @type {any[]} */
  const errors = [];
  const box = new Outbox("app:command", (e) => errors.push(e));
  const socket = new FakeSocket();
  box.resume(/** @type {any} */ (socket));
  box.push({ data: 1 });
  const drained = box.drained();
  socket.sent[0].ack({ error: "NOT_PAIRED", message: "no pairing" });
  assert.equal(box.pending.size, 0);
  assert.equal(errors[0].code, "NOT_PAIRED");
  await drained; // a frame refused for good is not waited for
});

for (const error of ["UNAVAILABLE", "RUNNER_OFFLINE"]) {
  test(`${error} keeps the frame and sends it (and what followed) again shortly`, async () => {
    const box = new Outbox("app:command", () => {});
    const socket = new FakeSocket();
    box.resume(/** @type {any} */ (socket));
    box.push({ data: 1 });
    box.push({ data: 2 });
    socket.sent[0].ack({ error, message: "later" });
    socket.sent[1].ack({ success: true });
    assert.equal(box.pending.size, 1);
    await new Promise((r) => setTimeout(r, 700));
    assert.deepEqual(socket.sent.map((s) => s.payload.data), [1, 2, 1]);
    socket.sent[2].ack({ success: true });
    assert.equal(box.pending.size, 0);
    box.close();
  });
}
