import assert from "node:assert/strict";
import { test } from "node:test";
import { hex } from "../src/bytes.js";
import { cidOf, header, listedAttachments, openStored, parseMessage, splitStored, toEml } from "../src/message.js";
import { b64, stored, testKey, VECTORS } from "./helpers.mjs";

const text = new TextDecoder();

for (const eol of ["\r\n", "\n"]) {
  for (const m of VECTORS.messages) {
    test(`a stored ${m.content_cipher} message (${JSON.stringify(eol)} lines) splits, decrypts and parses`, async () => {
      const smimeType = m.content_cipher === "aes-256-gcm" ? "authEnveloped-data" : "enveloped-data";
      const bytes = stored(b64(m.der), { smimeType, eol });
      const split = splitStored(bytes);
      assert.equal(hex(split.der), hex(b64(m.der)));
      assert.equal(header(split.headers, "subject"), "[...]");
      assert.match(header(split.headers, "content-type"), /smime-type=/);
      const { email, payload, head } = await openStored(bytes, await testKey());
      assert.equal(hex(payload), hex(b64(m.payload)));
      assert.equal(email.subject, "Résultats", "the protected Subject, not the outer [...]");
      assert.match(email.text, /Vecteur de test MSS, résultats normaux\./);
      assert.equal(email.attachments.length, 0);
      const eml = text.decode(toEml(head, payload));
      assert.match(eml, /^From: /);
      assert.match(eml, /Message-ID: <vecteur@hopital\.mssante\.fr>/);
      assert.doesNotMatch(eml, /^Subject: \[\.\.\.\]/m, "the outer placeholder Subject is replaced by the protected one");
      assert.doesNotMatch(eml, /smime\.p7m|pkcs7-mime/);
      assert.match(eml, /Subject: =\?utf-8\?q\?R=C3=A9sultats\?=/);
      assert.match(eml, /MIME-Version: 1\.0/);
    });
  }
}

test("a message that is not S/MIME is refused (not_smime)", () => {
  const plain = new TextEncoder().encode("From: a@b\r\nContent-Type: text/plain\r\n\r\nclair\r\n");
  assert.throws(() => splitStored(plain), (e) => e.code === "not_smime");
  assert.throws(() => splitStored(new TextEncoder().encode("From: a@b")), (e) => e.code === "not_smime");
});

const MULTIPART = [
  'Content-Type: multipart/mixed; boundary="b1"; protected-headers="v1"',
  "Subject: =?utf-8?q?Compte_rendu_d=27hospitalisation?=",
  "From: Dr Claire <claire@hopital.mssante.fr>",
  "",
  "--b1",
  'Content-Type: multipart/related; boundary="b2"',
  "",
  "--b2",
  'Content-Type: text/html; charset="utf-8"',
  "",
  '<p>Bonjour</p><img src="cid:logo@x">',
  "--b2",
  "Content-Type: image/png",
  "Content-ID: <logo@x>",
  "Content-Transfer-Encoding: base64",
  "",
  "iVBORw0KGgo=",
  "--b2--",
  "--b1",
  'Content-Type: application/pdf; name="cr.pdf"',
  'Content-Disposition: attachment; filename="cr.pdf"',
  "Content-Transfer-Encoding: base64",
  "",
  "JVBERi0xLjQK",
  "--b1",
  'Content-Type: application/pkcs7-signature; name="smime.p7s"',
  "Content-Transfer-Encoding: base64",
  "",
  "MAA=",
  "--b1--",
  "",
].join("\r\n");

test("inner MIME: subject, HTML, attachments without the signature, cid: images", async () => {
  const email = await parseMessage(new TextEncoder().encode(MULTIPART));
  assert.equal(email.subject, "Compte rendu d'hospitalisation");
  assert.match(email.html, /cid:logo@x/);
  const names = email.attachments.map((a) => a.mimeType);
  assert.deepEqual(names.sort(), ["application/pdf", "image/png"]);
  const png = email.attachments.find((a) => a.mimeType === "image/png");
  assert.equal(cidOf(png.contentId), "logo@x");
  assert.deepEqual([...new Uint8Array(png.content)].slice(0, 4), [0x89, 0x50, 0x4e, 0x47]);
  const listed = listedAttachments(email, new Set(["logo@x"]));
  assert.deepEqual(listed.map((a) => a.filename), ["cr.pdf"]);
  assert.equal(new TextDecoder().decode(listed[0].content).slice(0, 5), "%PDF-");
});
