/**
 * End-to-end encryption for the pairing gateway: CPace (ristretto255, SHA-512) over the
 * relay, XChaCha20-Poly1305 records. Browser-safe core; the socket.io client is in client.js.
 * @module
 */
export * from "./bytes.js";
export * from "./codes.js";
export * from "./cpace.js";
export * from "./records.js";
export * from "./session.js";
export * from "./client.js";
