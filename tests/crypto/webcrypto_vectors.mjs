// Every client step of the MSS patient key scheme, with WebCrypto (crypto.subtle) and nothing
// else: no WASM, no crypto library, a 40-line DER reader. Run by test_crypto_patient_vectors.py
// under Node (whose globalThis.crypto.subtle implements the W3C Web Cryptography API):
//
//     node tests/crypto/webcrypto_vectors.mjs patient_vectors.json [extra.json]
//
// extra.json (optional): {"pkcs8": b64, "messages": [{"der": b64, "payload": b64}, ...]}.
// Prints one JSON line {"ok": true, "checks": N} or exits non-zero naming the first mismatch.
// This is not the portal's code; it shows the portal's code can exist, and pins the formats.

import { readFileSync } from "node:fs";

const subtle = globalThis.crypto.subtle;
const enc = new TextEncoder();
const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const hex = (u8) => Array.from(new Uint8Array(u8), (b) => b.toString(16).padStart(2, "0")).join("");
const b64url = (u8) => btoa(String.fromCharCode(...new Uint8Array(u8))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
let checks = 0;
function same(what, got, want) {
  if (got !== want) throw new Error(`${what}: got ${got}, want ${want}`);
  checks++;
}

// ---- activation code normalisation (crypto.patient.normalise_activation_code)
const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
function normaliseCode(typed) {
  let s = typed.normalize("NFKC").replace(/[\s\-\u2010-\u2015\u2212._\/]/g, "").toUpperCase();
  s = s.replace(/O/g, "0").replace(/[IL]/g, "1");
  if (!s || [...s].some((c) => !ALPHABET.includes(c)) || s.length < 16 || s.length % 4) return null;
  return s;
}
const secretBytes = (s) => enc.encode(s.normalize("NFC"));

// ---- key derivation: PBKDF2 then two HKDFs
async function deriveKeys(secret, params) {
  if (params.v !== 1 || params.kdf !== "PBKDF2-SHA256") throw new Error("unknown record version");
  const pw = await subtle.importKey("raw", secretBytes(secret), "PBKDF2", false, ["deriveBits"]);
  const master = await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: b64(params.salt), iterations: params.iterations }, pw, 256);
  const hk = await subtle.importKey("raw", master, "HKDF", false, ["deriveBits"]);
  const hkdf = (info) => subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: enc.encode(info) }, hk, 256);
  const auth = await hkdf("mss patient auth v1");
  const wrapBits = await hkdf("mss patient wrap v1");
  const wrapKey = await subtle.importKey("raw", wrapBits, { name: "AES-GCM" }, false, ["wrapKey", "unwrapKey"]);
  return { master, auth, wrapBits, wrapKey };
}

// ---- a minimal DER reader
function tlv(buf, pos) {
  const tag = buf[pos];
  let len = buf[pos + 1];
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos + 2 + i];
    hdr += n;
  }
  return { tag, pos, start: pos + hdr, end: pos + hdr + len, value: buf.subarray(pos + hdr, pos + hdr + len) };
}
function children(buf, node) {
  const out = [];
  for (let p = node.start; p < node.end; ) {
    const c = tlv(buf, p);
    out.push(c);
    p = c.end;
  }
  return out;
}
const oidHex = (node) => hex(node.value);
const OID = {
  authEnveloped: "2a864886f70d0109100117", // 1.2.840.113549.1.9.16.1.23
  enveloped: "2a864886f70d010703", // 1.2.840.113549.1.7.3
  aes256gcm: "60864801650304012e", // 2.16.840.1.101.3.4.1.46
  aes256cbc: "60864801650304012a", // 2.16.840.1.101.3.4.1.42
  oaep: "2a864886f70d010107", // 1.2.840.113549.1.1.7
};

// ---- opening one CMS message (crypto.patient.decrypt_cms)
async function openCms(der, privateKey) {
  const ci = tlv(der, 0);
  const [type, explicit] = children(der, ci);
  const body = children(der, children(der, explicit)[0]);
  const kind = oidHex(type);
  let i = 1; // after version
  if (body[i].tag === 0xa0) i++; // originatorInfo
  const recipients = children(der, body[i++]);
  const eci = children(der, body[i++]);
  const alg = children(der, eci[1]);
  const ciphertext = eci[2].value; // [0] IMPLICIT OCTET STRING, primitive in DER
  let cek = null;
  for (const ri of recipients) {
    if (ri.tag !== 0x30) continue; // KeyTransRecipientInfo is the only SEQUENCE choice
    const [, , kea, ek] = children(der, ri);
    if (oidHex(children(der, kea)[0]) !== OID.oaep) continue;
    try {
      cek = await subtle.decrypt({ name: "RSA-OAEP" }, privateKey, ek.value);
      break;
    } catch {
      /* not our key */
    }
  }
  if (!cek) throw new Error("no recipient opens");
  if (kind === OID.authEnveloped) {
    if (oidHex(alg[0]) !== OID.aes256gcm) throw new Error("not AES-256-GCM");
    const [nonce, icv] = children(der, alg[1]);
    same("ICV length", icv.value[0], 16);
    let j = i;
    let aad;
    if (body[j].tag === 0xa1) { // authAttrs: MAC over the SET OF encoding (RFC 5083 2.2)
      aad = new Uint8Array([0x31, ...der.subarray(body[j].pos + 1, body[j].end)]);
      j++;
    }
    const mac = body[j].value;
    const k = await subtle.importKey("raw", cek, "AES-GCM", false, ["decrypt"]);
    const params = { name: "AES-GCM", iv: nonce.value, tagLength: 128 };
    if (aad) params.additionalData = aad;
    return new Uint8Array(await subtle.decrypt(params, k, new Uint8Array([...ciphertext, ...mac])));
  }
  if (kind === OID.enveloped) {
    if (oidHex(alg[0]) !== OID.aes256cbc) throw new Error("not AES-256-CBC");
    const k = await subtle.importKey("raw", cek, "AES-CBC", false, ["decrypt"]);
    return new Uint8Array(await subtle.decrypt({ name: "AES-CBC", iv: alg[1].value }, k, ciphertext));
  }
  throw new Error("not an encrypted CMS message");
}

// ---- the vectors
const vectors = JSON.parse(readFileSync(process.argv[2], "utf8"));
for (const c of vectors.activation_codes) same(`code ${JSON.stringify(c.typed)}`, normaliseCode(c.typed), c.normalised);

const pkcs8 = b64(vectors.test_only_private_key_pkcs8);
const rsaAlg = { name: "RSA-OAEP", hash: "SHA-256" };
const exportable = await subtle.importKey("pkcs8", pkcs8, rsaAlg, true, ["decrypt"]);
same("pkcs8 re-export", hex(await subtle.exportKey("pkcs8", exportable)), hex(pkcs8));

let sessionKey = null;
for (const d of vectors.derivations) {
  const secret = d.activation_code ? normaliseCode(d.typed) : d.typed;
  same(`${d.name}: secret bytes`, hex(secretBytes(secret)), d.secret_utf8_hex);
  const keys = await deriveKeys(secret, d.record);
  same(`${d.name}: master`, hex(keys.master), d.master_hex);
  same(`${d.name}: auth key`, hex(keys.auth), d.auth_key_hex);
  same(`${d.name}: auth key b64url`, b64url(keys.auth), d.auth_key_b64url);
  same(`${d.name}: wrap key`, hex(keys.wrapBits), d.wrap_key_hex);
  const wrapped = await subtle.wrapKey("pkcs8", exportable, keys.wrapKey, { name: "AES-GCM", iv: b64(d.iv) });
  same(`${d.name}: wrapped`, hex(wrapped), hex(b64(d.record.wrapped)));
  sessionKey = await subtle.unwrapKey("pkcs8", b64(d.record.wrapped), keys.wrapKey, { name: "AES-GCM", iv: b64(d.record.iv) }, rsaAlg, false, ["decrypt"]);
  // A one-bit change of the blob must be refused.
  const bad = b64(d.record.wrapped);
  bad[bad.length - 1] ^= 1;
  let refused = false;
  try {
    await subtle.unwrapKey("pkcs8", bad, keys.wrapKey, { name: "AES-GCM", iv: b64(d.record.iv) }, rsaAlg, false, ["decrypt"]);
  } catch {
    refused = true;
  }
  same(`${d.name}: tampered blob refused`, refused, true);
}

for (const m of vectors.messages) {
  const payload = await openCms(b64(m.der), sessionKey);
  same(`message ${m.content_cipher}/${m.recipient_id}`, hex(payload), hex(b64(m.payload)));
}

if (process.argv[3]) {
  const extra = JSON.parse(readFileSync(process.argv[3], "utf8"));
  const key = await subtle.importKey("pkcs8", b64(extra.pkcs8), rsaAlg, false, ["decrypt"]);
  for (const [n, m] of extra.messages.entries()) same(`extra message ${n}`, hex(await openCms(b64(m.der), key)), hex(b64(m.payload)));
}
console.log(JSON.stringify({ ok: true, checks }));
