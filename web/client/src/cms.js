// Opening one CMS message with crypto.subtle (docs/patient-keys.md 2.6, crypto.patient.decrypt_cms):
// ContentInfo -> AuthEnvelopedData (id-aes256-GCM, GCMParameters, RFC 5083/5084) or
// EnvelopedData (id-aes256-CBC, RFC 5652) -> the KeyTransRecipientInfo with RSAES-OAEP-SHA256
// (RFC 4055) that this key opens -> the content.

import { concat } from "./bytes.js";
import { children, DerError, expect, octets, OID, oidHex, smallInt, tlv } from "./der.js";

const subtle = globalThis.crypto.subtle;

/** code: bad_cms | unsupported | no_recipient | altered (as crypto.patient's PatientCryptoError). */
export class CmsError extends Error {
  constructor(code, detail) {
    super(detail);
    this.code = code;
  }
}

/** True for SHA-256 with NULL or absent parameters (RFC 4055 2.1). */
function isSha256(buf, algId) {
  const [oid, params, ...rest] = children(buf, expect(algId, 0x30, "AlgorithmIdentifier"));
  if (rest.length || oidHex(oid) !== OID.sha256) return false;
  return !params || (params.tag === 0x05 && params.value.length === 0);
}

/** Refuses every key transport WebCrypto could not open: only RSAES-OAEP, SHA-256, MGF1-SHA-256,
 * empty label. Returns null when acceptable, else the reason. */
function oaepProblem(buf, kea) {
  const [oid, params] = children(buf, expect(kea, 0x30, "KeyEncryptionAlgorithm"));
  if (oidHex(oid) !== OID.rsaesOaep) {
    return oidHex(oid) === OID.rsaEncryption ? "key transport is RSA PKCS#1 v1.5, not RSA-OAEP" : "key transport is not RSA-OAEP";
  }
  if (!params || params.tag !== 0x30) return "RSA-OAEP parameters missing (SHA-1 defaults)";
  let hash = null;
  let mgf = null;
  let source = null;
  for (const field of children(buf, params)) {
    if (field.tag === 0xa0) hash = children(buf, field)[0];
    else if (field.tag === 0xa1) mgf = children(buf, field)[0];
    else if (field.tag === 0xa2) source = children(buf, field)[0];
    else return "RSA-OAEP parameters malformed";
  }
  if (!hash || !isSha256(buf, hash)) return "RSA-OAEP hash is not SHA-256";
  if (!mgf) return "RSA-OAEP mask generation is MGF1-SHA-1";
  const [mgfOid, mgfHash] = children(buf, expect(mgf, 0x30, "MGF"));
  if (oidHex(mgfOid) !== OID.mgf1 || !mgfHash || !isSha256(buf, mgfHash)) return "RSA-OAEP mask generation is not MGF1 with SHA-256";
  if (source) {
    const [srcOid, label] = children(buf, expect(source, 0x30, "pSourceFunc"));
    if (oidHex(srcOid) !== OID.pSpecified || (label && octets(buf, label).length)) return "RSA-OAEP label is not empty";
  }
  return null;
}

/** The 32-byte CEK from the first KeyTransRecipientInfo the key opens (RFC 5652 6.2.1). */
async function contentKey(buf, recipientInfos, privateKey) {
  const skipped = [];
  for (const ri of children(buf, recipientInfos)) {
    if (ri.tag !== 0x30) {
      skipped.push("recipient info is not key transport");
      continue;
    }
    const [, , kea, ek] = children(buf, ri); // version, rid, keyEncryptionAlgorithm, encryptedKey
    const problem = oaepProblem(buf, kea);
    if (problem) {
      skipped.push(problem);
      continue;
    }
    let cek;
    try {
      cek = new Uint8Array(await subtle.decrypt({ name: "RSA-OAEP" }, privateKey, octets(buf, expect(ek, 0x04, "encryptedKey"))));
    } catch {
      continue; // not for this key (OAEP's integrity check failed)
    }
    if (cek.length !== 32) throw new CmsError("unsupported", `content key is ${cek.length} bytes, not 32`);
    return cek;
  }
  const detail = skipped.length ? ` (skipped: ${skipped.join("; ")})` : "";
  throw new CmsError("no_recipient", "no recipient info of this message opens with this key" + detail);
}

function parse(der) {
  const ci = tlv(der, 0);
  if (ci.tag !== 0x30 || ci.end !== der.length) throw new DerError("not a DER ContentInfo");
  const [type, explicit] = children(der, ci);
  const kind = oidHex(type);
  if (kind !== OID.authEnveloped && kind !== OID.enveloped) throw new CmsError("unsupported", "CMS content type is not an encrypted message");
  const body = children(der, children(der, expect(explicit, 0xa0, "content"))[0]);
  let i = 0;
  smallInt(body[i++]); // version
  if (body[i] && body[i].tag === 0xa0) i++; // originatorInfo
  const recipientInfos = expect(body[i++], 0x31, "recipientInfos");
  const eci = children(der, expect(body[i++], 0x30, "EncryptedContentInfo"));
  const alg = children(der, expect(eci[1], 0x30, "contentEncryptionAlgorithm"));
  if (!eci[2] || (eci[2].tag !== 0x80 && eci[2].tag !== 0xa0)) throw new CmsError("bad_cms", "detached content is not supported");
  const ciphertext = octets(der, eci[2]);
  const out = { kind, recipientInfos, ciphertext };
  if (kind === OID.authEnveloped) {
    if (oidHex(alg[0]) !== OID.aes256gcm) throw new CmsError("unsupported", "content cipher is not AES-256-GCM");
    if (!alg[1]) throw new CmsError("bad_cms", "AES-GCM parameters missing");
    const [nonce, icv] = children(der, expect(alg[1], 0x30, "GCMParameters"));
    out.nonce = octets(der, expect(nonce, 0x04, "aes-nonce"));
    out.icvLen = icv ? smallInt(icv) : 12;
    if (body[i] && body[i].tag === 0xa1) {
      // authAttrs: the MAC covers their DER with the SET OF tag (RFC 5083 2.2).
      out.aad = concat(new Uint8Array([0x31]), der.subarray(body[i].pos + 1, body[i].end));
      i++;
    }
    out.mac = octets(der, expect(body[i], 0x04, "mac"));
    if (out.nonce.length !== 12 || out.icvLen !== 16 || out.mac.length !== 16) {
      throw new CmsError("unsupported", "AES-GCM parameters must be a 12-byte nonce and a 16-byte ICV");
    }
  } else {
    if (oidHex(alg[0]) !== OID.aes256cbc) throw new CmsError("unsupported", "content cipher is not AES-256-CBC");
    out.iv = alg[1] ? octets(der, expect(alg[1], 0x04, "IV")) : null;
    if (!out.iv || out.iv.length !== 16 || !ciphertext.length || ciphertext.length % 16) {
      throw new CmsError("bad_cms", "AES-CBC IV or ciphertext has the wrong length");
    }
  }
  return out;
}

/** The payload (Uint8Array) of a DER ContentInfo, for an RSA-OAEP(SHA-256) private CryptoKey. */
export async function openCms(der, privateKey) {
  let m;
  try {
    m = parse(der);
  } catch (err) {
    if (err instanceof CmsError) throw err;
    throw new CmsError("bad_cms", `not a well-formed CMS message: ${err.message}`);
  }
  const cek = await contentKey(der, m.recipientInfos, privateKey);
  if (m.kind === OID.authEnveloped) {
    const k = await subtle.importKey("raw", cek, "AES-GCM", false, ["decrypt"]);
    const params = { name: "AES-GCM", iv: m.nonce, tagLength: 128 };
    if (m.aad) params.additionalData = m.aad;
    try {
      return new Uint8Array(await subtle.decrypt(params, k, concat(m.ciphertext, m.mac)));
    } catch {
      throw new CmsError("altered", "the message was altered (AES-GCM tag mismatch)");
    }
  }
  const k = await subtle.importKey("raw", cek, "AES-CBC", false, ["decrypt"]);
  try {
    return new Uint8Array(await subtle.decrypt({ name: "AES-CBC", iv: m.iv }, k, m.ciphertext));
  } catch {
    throw new CmsError("altered", "the message was altered (bad CBC padding)");
  }
}
