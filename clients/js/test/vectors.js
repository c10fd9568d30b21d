/**
 * Test vectors shared with the Python client, from the repository's tests/support/vectors/.
 * A missing file fails the test that asks for it, naming the file.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { hexToBytes } from "../src/bytes.js";

export const VECTORS_DIR = fileURLToPath(new URL("../../../tests/support/vectors/", import.meta.url));

/**
 * @param {string} name file name in tests/support/vectors/
 * @returns {any}
 */
export function loadVectors(name) {
  return JSON.parse(readFileSync(VECTORS_DIR + name, "utf8"));
}

/** @param {string} hex upper- or lower-case */
export function unhex(hex) {
  return hexToBytes(hex.toLowerCase());
}
