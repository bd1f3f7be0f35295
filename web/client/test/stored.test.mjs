// Messages made by the server's own code (crypto.patient.encrypt_for_patient: every cipher and
// recipient variant, authAttrs, openssl): written by tests/crypto/test_portal_client_node.py into
// the JSON file named by MSS_PORTAL_EXTRA ({"pkcs8", "messages": [{"name", "stored", "payload"}]}).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { hex } from "../src/bytes.js";
import { openStored } from "../src/message.js";
import { b64, RSA } from "./helpers.mjs";

const path = process.env.MSS_PORTAL_EXTRA;
const extra = path ? JSON.parse(readFileSync(path, "utf8")) : { messages: [] };

test("server-made messages are present when run by pytest", { skip: !path && "MSS_PORTAL_EXTRA not set" }, () => {
  assert.ok(extra.messages.length >= 4);
});

for (const m of extra.messages) {
  test(`server-made stored message: ${m.name}`, async () => {
    const key = await crypto.subtle.importKey("pkcs8", b64(extra.pkcs8), RSA, false, ["decrypt"]);
    const { email, payload } = await openStored(b64(m.stored), key);
    assert.equal(hex(payload), hex(b64(m.payload)));
    if (m.subject !== undefined) assert.equal(email.subject, m.subject);
  });
}
