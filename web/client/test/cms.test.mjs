import assert from "node:assert/strict";
import { test } from "node:test";
import { hex } from "../src/bytes.js";
import { CmsError, openCms } from "../src/cms.js";
import { b64, testKey, VECTORS } from "./helpers.mjs";

for (const m of VECTORS.messages) {
  test(`CMS ${m.content_cipher} (${m.recipient_id} recipient) opens to the payload`, async () => {
    const key = await testKey();
    assert.equal(hex(await openCms(b64(m.der), key)), hex(b64(m.payload)));
  });
}

test("an altered GCM message is refused (altered), a truncated one is bad_cms", async () => {
  const key = await testKey();
  const gcm = VECTORS.messages.find((m) => m.content_cipher === "aes-256-gcm");
  const der = b64(gcm.der);
  const bad = der.slice();
  bad[bad.length - 1] ^= 1; // inside the MAC
  await assert.rejects(openCms(bad, key), (e) => e instanceof CmsError && e.code === "altered");
  await assert.rejects(openCms(der.subarray(0, der.length - 5), key), (e) => e.code === "bad_cms");
  await assert.rejects(openCms(new Uint8Array([0x30, 0x80, 0, 0]), key), (e) => e.code === "bad_cms");
});

test("another key opens nothing (no_recipient)", async () => {
  const other = await crypto.subtle.generateKey(
    { name: "RSA-OAEP", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, false, ["decrypt", "encrypt"]);
  const m = VECTORS.messages[0];
  await assert.rejects(openCms(b64(m.der), other.privateKey), (e) => e.code === "no_recipient");
});

test("a CMS type other than an encrypted message is unsupported", async () => {
  const key = await testKey();
  // ContentInfo { id-signedData, [0] { SEQUENCE {} } }
  const der = new Uint8Array([0x30, 0x0f, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0, 0x02, 0x30, 0x00]);
  await assert.rejects(openCms(der, key), (e) => e.code === "unsupported");
});
