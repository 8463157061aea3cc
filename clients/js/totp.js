/**
 * TOTP codes (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps, as the
 * server checks them) from a base32 secret, computed with WebCrypto
 * (`crypto.subtle`), which browsers and Node both have.
 *
 * @module
 */

/** The length of a time step, seconds. */
export const TOTP_STEP_SECONDS = 30;
/** Digits in a code. */
export const TOTP_DIGITS = 6;

const BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/**
 * The bytes of a base32 secret (RFC 4648; upper or lower case, spaces and
 * `=` padding ignored), as `agentserver user add --secret-out` writes it.
 *
 * @param {string} text
 * @returns {Uint8Array}
 * @throws {TypeError} a character outside the base32 alphabet, or no bytes.
 */
export function decodeBase32(text) {
  const clean = text.replace(/[\s=]/g, "").toUpperCase();
  const bytes = new Uint8Array(Math.floor((clean.length * 5) / 8));
  let bits = 0;
  let value = 0;
  let at = 0;
  for (const char of clean) {
    const index = BASE32_ALPHABET.indexOf(char);
    if (index < 0) throw new TypeError(`not a base32 TOTP secret: unexpected ${JSON.stringify(char)}`);
    value = ((value << 5) | index) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes[at++] = (value >> bits) & 0xff;
    }
  }
  if (at === 0) throw new TypeError("not a base32 TOTP secret: it is empty");
  return bytes;
}

/** @returns {Promise<SubtleCrypto>} */
async function subtleCrypto() {
  if (globalThis.crypto?.subtle) return globalThis.crypto.subtle;
  // Node 18 keeps WebCrypto in its crypto module.
  const { webcrypto } = await import("node:crypto");
  return /** @type {SubtleCrypto} */ (webcrypto.subtle);
}

/** The time step of an instant. @param {number} [unixSeconds] @returns {number} */
export function stepAt(unixSeconds = Date.now() / 1000) {
  return Math.floor(unixSeconds / TOTP_STEP_SECONDS);
}

/** A user's code generator. */
export class Totp {
  /** @type {Uint8Array} */
  #secret;
  /** @type {Promise<CryptoKey> | null} */
  #key = null;

  /**
   * @param {string} secret the base32 secret.
   * @throws {TypeError} when it is not base32.
   */
  constructor(secret) {
    this.#secret = decodeBase32(secret);
  }

  /**
   * The code of time step `step` (`stepAt(seconds)`).
   *
   * @param {number} step
   * @returns {Promise<string>} six digits.
   */
  async atStep(step) {
    this.#key ??= subtleCrypto().then((subtle) =>
      subtle.importKey("raw", this.#secret, { name: "HMAC", hash: "SHA-1" }, false, ["sign"]),
    );
    const key = await this.#key;
    const counter = new Uint8Array(8);
    new DataView(counter.buffer).setBigUint64(0, BigInt(step));
    const subtle = await subtleCrypto();
    const mac = new Uint8Array(await subtle.sign("HMAC", key, counter));
    const offset = mac[mac.length - 1] & 0x0f;
    const number =
      ((mac[offset] & 0x7f) << 24) | (mac[offset + 1] << 16) | (mac[offset + 2] << 8) | mac[offset + 3];
    return String(number % 10 ** TOTP_DIGITS).padStart(TOTP_DIGITS, "0");
  }

  /**
   * The code at an instant (default: now).
   *
   * @param {number} [unixSeconds]
   * @returns {Promise<string>}
   */
  at(unixSeconds) {
    return this.atStep(stepAt(unixSeconds));
  }
}
