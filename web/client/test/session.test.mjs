// The key against the patient's certificate (docs/patient-keys.md 4, step 3) and the session's
// copy of the key under K_s (docs/portal.md 2.3).
import assert from "node:assert/strict";
import { test } from "node:test";
import { hex } from "../src/bytes.js";
import { openCms } from "../src/cms.js";
import { certificateSpki } from "../src/der.js";
import { checkKeyAgainstCertificate, deriveKeys, KeyError, rewrap, unwrapForSession, wrapForSession, wrapPrivateKey } from "../src/keys.js";
import { b64, FAST, RSA, testKey, VECTORS } from "./helpers.mjs";

const CERT = b64(VECTORS.certificate);

async function otherKey(extractable = false) {
  const pair = await crypto.subtle.generateKey({ ...RSA, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) }, extractable, ["encrypt", "decrypt"]);
  return pair.privateKey;
}

test("the SPKI of the vectors' certificate is found and imports as RSA-OAEP", async () => {
  const spki = certificateSpki(CERT);
  assert.equal(spki[0], 0x30);
  const pub = await crypto.subtle.importKey("spki", spki, RSA, true, ["encrypt"]);
  assert.equal(pub.algorithm.modulusLength, 3072);
  // The same public key as the private key of the vectors (its JWK modulus).
  const priv = await testKey(true);
  const [a, b] = [await crypto.subtle.exportKey("jwk", pub), await crypto.subtle.exportKey("jwk", priv)];
  assert.equal(a.n, b.n);
});

test("the key of the vectors matches their certificate (extractable or not)", async () => {
  await checkKeyAgainstCertificate(await testKey(false), CERT);
  await checkKeyAgainstCertificate(await testKey(true), CERT);
});

test("another key does not match the certificate: key_mismatch", async () => {
  await assert.rejects(checkKeyAgainstCertificate(await otherKey(), CERT), (e) => e instanceof KeyError && e.code === "key_mismatch");
});

test("an unreadable certificate: bad_certificate", async () => {
  const key = await testKey();
  await assert.rejects(checkKeyAgainstCertificate(key, new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])), (e) => e.code === "bad_certificate");
  await assert.rejects(checkKeyAgainstCertificate(key, CERT.subarray(0, 200)), (e) => e.code === "bad_certificate");
  const trailing = new Uint8Array(CERT.length + 1);
  trailing.set(CERT);
  await assert.rejects(checkKeyAgainstCertificate(key, trailing), (e) => e.code === "bad_certificate");
});

test("rewrap checks the key against the certificate before re-wrapping", async () => {
  const d = VECTORS.derivations[0];
  const old = await deriveKeys(d.typed, d.params, FAST);
  const ok = await rewrap(old, d.record, "un nouveau mot de passe sûr", { ...FAST, certificate: CERT });
  assert.ok(ok.record.wrapped);
  // A swapped wrapped key: a record of another key, under the same password, against the
  // patient's certificate.
  const other = await otherKey(true);
  const swapped = await wrapPrivateKey(other, old);
  await assert.rejects(rewrap(old, swapped, "un nouveau mot de passe sûr", { ...FAST, certificate: CERT }), (e) => e.code === "key_mismatch");
});

test("the session copy: a blob (bytes, not a key) that opens only under its K_s, non-extractable", async () => {
  const ks = crypto.getRandomValues(new Uint8Array(32));
  const blob = await wrapForSession(await testKey(true), ks);
  assert.ok(blob.iv instanceof Uint8Array && blob.iv.length === 12);
  assert.ok(blob.wrapped instanceof Uint8Array && blob.wrapped.length > 1000);
  assert.ok(Object.values(blob).every((v) => !(v instanceof CryptoKey)));
  const key = await unwrapForSession(blob, ks);
  assert.equal(key.extractable, false);
  assert.equal(key.type, "private");
  assert.deepEqual(key.usages, ["decrypt"]);
  const m = VECTORS.messages[0];
  assert.equal(hex(await openCms(b64(m.der), key)), hex(b64(m.payload)));
  await checkKeyAgainstCertificate(key, CERT);

  // Another session's key, a changed bit, a wrong-sized key: refused.
  await assert.rejects(unwrapForSession(blob, crypto.getRandomValues(new Uint8Array(32))), (e) => e.code === "session_key");
  const bad = { iv: blob.iv, wrapped: blob.wrapped.slice() };
  bad.wrapped[10] ^= 1;
  await assert.rejects(unwrapForSession(bad, ks), (e) => e.code === "session_key");
  await assert.rejects(unwrapForSession(blob, ks.subarray(0, 16)), (e) => e.code === "session_key");
  // Only an extractable key can be wrapped: the session copy is made from the record's.
  await assert.rejects(wrapForSession(await testKey(false), ks));
});
