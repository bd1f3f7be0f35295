import assert from "node:assert/strict";
import { test } from "node:test";
import { hex, toBase64Url } from "../src/bytes.js";
import {
  checkParams, deriveKeys, KeyError, normaliseActivationCode, passwordProblem, rewrap, secretBytes,
  unwrapPrivateKey, wrapPrivateKey, sameParams, MIN_ITERATIONS,
} from "../src/keys.js";
import { b64, FAST, testKey, VECTORS } from "./helpers.mjs";

test("activation codes are normalised as crypto.patient does", () => {
  for (const c of VECTORS.activation_codes) assert.equal(normaliseActivationCode(c.typed), c.normalised, JSON.stringify(c.typed));
  assert.equal(normaliseActivationCode(""), null);
  assert.equal(normaliseActivationCode("7kq2 m9xd 4tlb zr6o 7k"), null, "not whole groups of 4");
  assert.equal(normaliseActivationCode("7kq2 m9xd 4tlb zr6o 7kq2"), "7KQ2M9XD4T1BZR607KQ2", "more groups are fine");
  assert.equal(normaliseActivationCode("7KQ2\u2212M9XD\u2010 4T1B\u3000ZR60"), "7KQ2M9XD4T1BZR60");
});

for (const d of VECTORS.derivations) {
  test(`derivation: ${d.name}`, async () => {
    const secret = d.activation_code ? normaliseActivationCode(d.typed) : d.typed;
    assert.equal(hex(secretBytes(secret)), d.secret_utf8_hex);
    const k = await deriveKeys(secret, d.params, { minIterations: 1000, keepIntermediates: true });
    assert.equal(hex(k.master), d.master_hex);
    assert.equal(hex(k.authKey), d.auth_key_hex);
    assert.equal(k.authKeyB64, d.auth_key_b64url);
    assert.equal(k.authKeyB64.length, 43);
    assert.match(k.authKeyB64, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(hex(k.wrapBits), d.wrap_key_hex);
    assert.equal(k.wrapKey.extractable, false);

    // Unwrap: non-extractable, decrypt only; the record byte for byte with the vector's IV.
    const key = await unwrapPrivateKey(d.record, k.wrapKey, { minIterations: 1000 });
    assert.equal(key.extractable, false);
    assert.deepEqual(key.usages, ["decrypt"]);
    const exportable = await testKey(true);
    const rec = await wrapPrivateKey(exportable, k, b64(d.iv));
    assert.deepEqual(rec, d.record);
    assert.deepEqual(Object.keys(rec), [...Object.keys(rec)].sort(), "canonical key order");

    // One changed bit anywhere: wrong_secret.
    const bad = b64(d.record.wrapped);
    bad[bad.length - 1] ^= 1;
    await assert.rejects(unwrapPrivateKey({ ...d.record, wrapped: btoa(String.fromCharCode(...bad)) }, k.wrapKey, { minIterations: 1000 }), (e) => e.code === "wrong_secret");
  });
}

test("a wrong password does not unwrap (wrong_secret)", async () => {
  const d = VECTORS.derivations[0];
  const k = await deriveKeys(d.typed + "!", d.params, { minIterations: 1000 });
  await assert.rejects(unwrapPrivateKey(d.record, k.wrapKey, { minIterations: 1000 }), (e) => e instanceof KeyError && e.code === "wrong_secret");
});

test("the client refuses weak or unknown parameters", () => {
  const p = VECTORS.derivations[0].params;
  assert.throws(() => checkParams(p), (e) => e.code === "weak_record", "1000 < floor");
  assert.equal(MIN_ITERATIONS, 600000);
  assert.throws(() => checkParams({ ...p, iterations: 1 }, { minIterations: 1 }).salt && checkParams({ ...p, v: 2 }, FAST), (e) => e.code === "unsupported");
  assert.throws(() => checkParams({ ...p, kdf: "Argon2id" }, FAST), (e) => e.code === "unsupported");
  assert.throws(() => checkParams({ ...p, salt: "AAAA" }, FAST), (e) => e.code === "bad_record");
  assert.throws(() => checkParams({ ...p, iterations: 10_000_001 }, FAST), (e) => e.code === "bad_record");
  const prod = VECTORS.derivations.find((d) => d.params.iterations === 600000);
  assert.equal(checkParams(prod.params).iterations, 600000);
});

test("rewrap: a fresh salt and IV, the same key, opens under the new password only", async () => {
  const d = VECTORS.derivations[0];
  const old = await deriveKeys(d.typed, d.params, FAST);
  const out = await rewrap(old, d.record, "un nouveau mot de passe sûr", FAST);
  assert.equal(out.oldAuthKeyB64, d.auth_key_b64url);
  assert.notEqual(out.record.salt, d.record.salt);
  assert.notEqual(out.record.iv, d.record.iv);
  assert.equal(out.record.iterations, 1000);
  assert.equal(b64(out.record.salt).length, 16);
  assert.equal(b64(out.record.iv).length, 12);
  assert.ok(sameParams(out.record, out.derived));
  assert.ok(!sameParams(d.record, out.derived));
  const again = await deriveKeys("un nouveau mot de passe sûr", out.record, FAST);
  assert.equal(again.authKeyB64, out.authKeyB64);
  const key = await unwrapPrivateKey(out.record, again.wrapKey, FAST);
  assert.equal(key.extractable, false);
  // The same private key: the message of the vectors opens with it.
  const { openCms } = await import("../src/cms.js");
  const m = VECTORS.messages[0];
  assert.equal(hex(await openCms(b64(m.der), key)), hex(b64(m.payload)));
  await assert.rejects(unwrapPrivateKey(out.record, old.wrapKey, FAST), (e) => e.code === "wrong_secret");
  // Never below the client's own cost: a cheap record is re-wrapped at the floor (600,000).
  const floor = await rewrap(old, d.record, "un nouveau mot de passe sûr", { minIterations: 1000 });
  assert.equal(floor.record.iterations, 600000);
});

test("the new-password policy of PatientClient", () => {
  assert.equal(passwordProblem("court"), "Le mot de passe doit comporter au moins 12 caractères.");
  assert.equal(passwordProblem("e\u0301".repeat(11) + "x"), null, "12 characters once NFC");
  assert.equal(passwordProblem("e\u0301".repeat(6)), "Le mot de passe doit comporter au moins 12 caractères.", "NFD counts as NFC");
  assert.equal(passwordProblem("un mot de passe long"), null);
  assert.match(passwordProblem("un mot de passe long", { old: "un mot de passe long" }), /différent/);
  assert.match(passwordProblem("7kq2-m9xd-4tlb-zr6o", { activationCode: "7KQ2M9XD4T1BZR60" }), /code d'activation/);
  assert.equal(toBase64Url(new Uint8Array([251, 255])), "-_8");
});
