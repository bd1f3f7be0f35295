// The patient key scheme v1 in the browser (docs/patient-keys.md, crypto/patient_client.py):
// secrets -> PBKDF2-SHA256 -> HKDF (auth key, wrap key); AES-GCM unwrap/wrap of the PKCS#8
// RSA-OAEP key; the record; activation-code normalisation; the new-password policy.

import { fromBase64, hex, toBase64, toBase64Url, u8, utf8 } from "./bytes.js";
import { certificateSpki } from "./der.js";

const subtle = globalThis.crypto.subtle;

/** The cost this client writes, and the lowest it accepts from a server (patient-keys.md 3). */
export const CLIENT_ITERATIONS = 600_000;
export const MIN_ITERATIONS = 600_000;
export const MAX_ITERATIONS = 10_000_000;
export const MIN_PASSWORD_LENGTH = 12;
export const RSA_OAEP = { name: "RSA-OAEP", hash: "SHA-256" };

/** code: bad_code | weak_password | weak_record | bad_record | unsupported | wrong_secret |
 * bad_certificate | key_mismatch (the unwrapped key is not the certificate's) | session_key. */
export class KeyError extends Error {
  constructor(code, detail) {
    super(detail);
    this.code = code;
  }
}

// ---- secrets

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"; // Crockford's base 32
const SEPARATORS = /[\s\-\u2010-\u2015\u2212._/]/gu;

/** The activation code as it enters the KDF (crypto.patient.normalise_activation_code), or null. */
export function normaliseActivationCode(typed) {
  let s = String(typed).normalize("NFKC").replace(SEPARATORS, "").toUpperCase();
  s = s.replace(/O/g, "0").replace(/[IL]/g, "1");
  if (!s || [...s].some((c) => !ALPHABET.includes(c)) || s.length < 16 || s.length % 4) return null;
  return s;
}

/** UTF-8 of the NFC form (RFC 8265 OpaqueString): not trimmed, case kept. */
export const secretBytes = (secret) => utf8(String(secret).normalize("NFC"));

/** The new-password policy of PatientClient._check_new_password (and activate): null when fine,
 * else the French sentence to show. */
export function passwordProblem(password, { old = null, activationCode = null, minLength = MIN_PASSWORD_LENGTH } = {}) {
  const nfc = String(password).normalize("NFC");
  if ([...nfc].length < minLength) return `Le mot de passe doit comporter au moins ${minLength} caractères.`;
  if (old !== null && nfc === String(old).normalize("NFC")) return "Le nouveau mot de passe doit être différent du mot de passe actuel.";
  if (activationCode !== null && normaliseActivationCode(password) === activationCode) {
    return "Le mot de passe ne peut pas être le code d'activation.";
  }
  return null;
}

// ---- records and parameters

/** The KDF parameters of a prelogin answer or a record, checked: version, KDF, cost floor, limits. */
export function checkParams(params, { minIterations = MIN_ITERATIONS } = {}) {
  if (!params || typeof params !== "object") throw new KeyError("bad_record", "no KDF parameters");
  if (params.v !== 1 || params.kdf !== "PBKDF2-SHA256") throw new KeyError("unsupported", "unknown record version");
  const it = params.iterations;
  if (!Number.isInteger(it) || it < 1 || it > MAX_ITERATIONS) throw new KeyError("bad_record", "iterations out of range");
  if (it < minIterations) throw new KeyError("weak_record", `the server offered ${it} PBKDF2 iterations, below ${minIterations}`);
  let salt;
  try {
    salt = fromBase64(params.salt);
  } catch {
    throw new KeyError("bad_record", "salt is not base64");
  }
  if (salt.length < 16 || salt.length > 64) throw new KeyError("bad_record", "salt must be 16 to 64 bytes");
  return { v: 1, kdf: "PBKDF2-SHA256", iterations: it, salt };
}

function checkRecord(record, options) {
  const params = checkParams(record, options);
  let iv, wrapped;
  try {
    iv = fromBase64(record.iv);
    wrapped = fromBase64(record.wrapped);
  } catch {
    throw new KeyError("bad_record", "iv or wrapped is not base64");
  }
  if (iv.length !== 12) throw new KeyError("bad_record", "iv must be 12 bytes");
  if (wrapped.length <= 16 || wrapped.length > 64 * 1024) throw new KeyError("bad_record", "wrapped key has an impossible length");
  return { params, iv, wrapped };
}

/** Fresh parameters: 16 random salt bytes, the given cost. */
export function newParams(iterations = CLIENT_ITERATIONS) {
  return { v: 1, kdf: "PBKDF2-SHA256", iterations, salt: crypto.getRandomValues(new Uint8Array(16)) };
}

// ---- derivation

/** {authKey: Uint8Array(32), authKeyB64: 43 chars, wrapKey: AES-GCM CryptoKey (wrapKey/unwrapKey,
 * non-extractable), master (tests only)} for a secret (password or normalised code). */
export async function deriveKeys(secret, params, options = {}) {
  const p = params.salt instanceof Uint8Array ? params : checkParams(params, options);
  const pw = await subtle.importKey("raw", secretBytes(secret), "PBKDF2", false, ["deriveBits"]);
  const master = await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: p.salt, iterations: p.iterations }, pw, 256);
  const hk = await subtle.importKey("raw", master, "HKDF", false, ["deriveBits"]);
  const hkdf = (info) => subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: utf8(info) }, hk, 256);
  const authKey = new Uint8Array(await hkdf("mss patient auth v1"));
  const wrapBits = await hkdf("mss patient wrap v1");
  const wrapKey = await subtle.importKey("raw", wrapBits, { name: "AES-GCM" }, false, ["wrapKey", "unwrapKey"]);
  const out = { authKey, authKeyB64: toBase64Url(authKey), wrapKey, params: p };
  if (options.keepIntermediates) Object.assign(out, { master: new Uint8Array(master), wrapBits: new Uint8Array(wrapBits) });
  return out;
}

// ---- wrapping

/** The private key of a record: non-extractable (the session's) unless `extractable` (only for the
 * moment of a re-wrap). A wrong secret or any change to the record: KeyError("wrong_secret"). */
export async function unwrapPrivateKey(record, wrapKey, { extractable = false, ...options } = {}) {
  const { iv, wrapped } = checkRecord(record, options);
  try {
    return await subtle.unwrapKey("pkcs8", wrapped, wrapKey, { name: "AES-GCM", iv }, RSA_OAEP, extractable, ["decrypt"]);
  } catch {
    throw new KeyError("wrong_secret", "the record does not open with this secret");
  }
}

/** The record (canonical key order, padded base64) of `privateKey` (extractable) under `derived`. */
export async function wrapPrivateKey(privateKey, derived, iv = crypto.getRandomValues(new Uint8Array(12))) {
  const wrapped = await subtle.wrapKey("pkcs8", privateKey, derived.wrapKey, { name: "AES-GCM", iv });
  const p = derived.params;
  return { iterations: p.iterations, iv: toBase64(iv), kdf: p.kdf, salt: toBase64(p.salt), v: p.v, wrapped: toBase64(wrapped) };
}

// ---- the key against the certificate (docs/patient-keys.md 4, step 3)

/** Resolves when `privateKey` (RSA-OAEP, "decrypt") is the key of `certificate` (DER bytes):
 * 32 random bytes encrypted (RSA-OAEP SHA-256) with the certificate's public key must decrypt
 * with it to the same bytes. KeyError("bad_certificate") when the certificate is unreadable,
 * KeyError("key_mismatch") when the keys differ. */
export async function checkKeyAgainstCertificate(privateKey, certificate) {
  let publicKey;
  try {
    publicKey = await subtle.importKey("spki", certificateSpki(u8(certificate)), RSA_OAEP, false, ["encrypt"]);
  } catch {
    throw new KeyError("bad_certificate", "the certificate does not hold an RSA public key");
  }
  const probe = crypto.getRandomValues(new Uint8Array(32));
  let back;
  try {
    back = new Uint8Array(await subtle.decrypt(RSA_OAEP, privateKey, await subtle.encrypt(RSA_OAEP, publicKey, probe)));
  } catch {
    throw new KeyError("key_mismatch", "the private key does not open what its certificate encrypts");
  }
  if (hex(back) !== hex(probe)) throw new KeyError("key_mismatch", "the private key is not the certificate's");
}

// ---- the session's copy (docs/patient-keys.md 4, docs/portal.md 2.3)

const SESSION_AAD = utf8("mss portal session key v1");

async function sessionWrapKey(sessionKey) {
  const raw = u8(sessionKey);
  if (raw.length !== 32) throw new KeyError("session_key", "the session key must be 32 bytes");
  return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["wrapKey", "unwrapKey"]);
}

/** {iv: Uint8Array(12), wrapped: Uint8Array}: the PKCS#8 of `privateKey` (extractable) under the
 * session key K_s (32 bytes from the server), AES-256-GCM with a fresh IV. */
export async function wrapForSession(privateKey, sessionKey) {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const k = await sessionWrapKey(sessionKey);
  const wrapped = new Uint8Array(await subtle.wrapKey("pkcs8", privateKey, k, { name: "AES-GCM", iv, additionalData: SESSION_AAD }));
  return { iv, wrapped };
}

/** The session's private key, NON-extractable, from the blob `wrapForSession` made under the
 * same K_s; KeyError("session_key") under any other key or for a damaged blob. */
export async function unwrapForSession(blob, sessionKey) {
  const k = await sessionWrapKey(sessionKey);
  try {
    return await subtle.unwrapKey("pkcs8", u8(blob.wrapped), k, { name: "AES-GCM", iv: u8(blob.iv), additionalData: SESSION_AAD }, RSA_OAEP, false, ["decrypt"]);
  } catch {
    throw new KeyError("session_key", "the stored key does not open with this session's key");
  }
}

/** Activation and password change (PatientClient._rewrap): the key of `record` under `oldSecret`,
 * re-wrapped under `newPassword` with a fresh salt and IV at max(this client's cost, the record's).
 * `options.certificate` (DER): the key is checked against it first (checkKeyAgainstCertificate).
 * Returns {oldAuthKeyB64, authKeyB64, record, derived (of the new password)}. */
export async function rewrap(oldDerived, record, newPassword, options = {}) {
  const key = await unwrapPrivateKey(record, oldDerived.wrapKey, { ...options, extractable: true });
  if (options.certificate) await checkKeyAgainstCertificate(key, options.certificate);
  const iterations = Math.max(options.iterations ?? CLIENT_ITERATIONS, record.iterations);
  const derived = await deriveKeys(newPassword, newParams(iterations), options);
  const fresh = await wrapPrivateKey(key, derived);
  return { oldAuthKeyB64: oldDerived.authKeyB64, authKeyB64: derived.authKeyB64, record: fresh, derived };
}

/** Same salt and cost: the prelogin answer describes the record these derived keys wrote. */
export function sameParams(params, derived) {
  try {
    const p = checkParams(params, { minIterations: 1 });
    return p.iterations === derived.params.iterations && toBase64(p.salt) === toBase64(derived.params.salt);
  } catch {
    return false;
  }
}
