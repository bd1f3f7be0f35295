// Shared by the Node tests: the published test vectors (tests/crypto/patient_vectors.json).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const VECTORS = JSON.parse(readFileSync(fileURLToPath(new URL("../../../tests/crypto/patient_vectors.json", import.meta.url)), "utf8"));
export const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
export const RSA = { name: "RSA-OAEP", hash: "SHA-256" };
export const FAST = { minIterations: 1000, iterations: 1000 };

export async function testKey(extractable = false) {
  return crypto.subtle.importKey("pkcs8", b64(VECTORS.test_only_private_key_pkcs8), RSA, extractable, ["decrypt"]);
}

/** A stored message as encrypt_for_patient writes it: outer fields, MIME fields, base64 DER. */
export function stored(der, { smimeType = "authEnveloped-data", eol = "\r\n", extra = [] } = {}) {
  const b = btoa(String.fromCharCode(...der));
  const lines = [];
  for (let i = 0; i < b.length; i += 76) lines.push(b.slice(i, i + 76));
  const head = [
    "From: =?utf-8?q?Dr_Claire_Dupr=C3=A9?= <claire.dupre@hopital.mssante.fr>",
    "To: 1234567890123@patient.mssante.fr",
    "Subject: [...]",
    "Date: Tue, 01 Dec 2026 10:00:00 +0100",
    "Message-ID: <vecteur@hopital.mssante.fr>",
    ...extra,
    "MIME-Version: 1.0",
    `Content-Type: application/pkcs7-mime; smime-type=${smimeType};`,
    ' name="smime.p7m"',
    'Content-Disposition: attachment; filename="smime.p7m"',
    "Content-Transfer-Encoding: base64",
  ];
  return new TextEncoder().encode(head.join(eol) + eol + eol + lines.join(eol) + eol);
}
