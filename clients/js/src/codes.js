/**
 * Pairing codes `<NAMEPLATE>-<SECRET>`: the nameplate is what the gateway issued (and the
 * only part sent to it), the secret is made by the runner and is the CPace password.
 * @module
 */
import { randomBytes } from "./bytes.js";

/** The gateway's code alphabet: no 0/O, 1/I/L. */
export const ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/** 7 symbols of 31: 34.7 bits. */
export const SECRET_LENGTH = 7;

/**
 * A uniform secret of `length` symbols: one big random draw (rejection sampled below the
 * largest multiple of alphabet**length), written in base 31.
 * @param {number} [length]
 * @returns {string}
 */
export function makeSecret(length = SECRET_LENGTH) {
  const base = BigInt(ALPHABET.length);
  const space = base ** BigInt(length);
  const bytes = Math.ceil((space.toString(2).length + 64) / 8);
  const limit = (1n << BigInt(bytes * 8)) - ((1n << BigInt(bytes * 8)) % space);
  for (;;) {
    let n = 0n;
    for (const b of randomBytes(bytes)) n = (n << 8n) | BigInt(b);
    if (n >= limit) continue;
    n %= space;
    let out = "";
    for (let i = 0; i < length; i++) {
      out = ALPHABET[Number(n % base)] + out;
      n /= base;
    }
    return out;
  }
}

/**
 * The code a runner shows.
 * @param {string} nameplate @param {string} secret
 */
export function joinCode(nameplate, secret) {
  return `${nameplate}-${secret}`;
}

/**
 * Splits a typed code at its last '-', upper-cased (codes are case-insensitive).
 * @param {string} code
 * @returns {{nameplate: string, secret: string}}
 */
export function splitCode(code) {
  const trimmed = code.trim().toUpperCase();
  const at = trimmed.lastIndexOf("-");
  if (at <= 0 || at === trimmed.length - 1) {
    throw new Error("a pairing code looks like NAMEPLATE-SECRET");
  }
  return { nameplate: trimmed.slice(0, at), secret: trimmed.slice(at + 1) };
}
