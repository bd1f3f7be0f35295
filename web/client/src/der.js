// A minimal, bounds-checked DER reader: enough for CMS ContentInfo / (Auth)EnvelopedData.
// Every node is {tag, pos, start, end, value}; `value` is a view of the content octets.

import { hex } from "./bytes.js";

export class DerError extends Error {}

export function tlv(buf, pos, limit = buf.length) {
  if (pos + 2 > limit) throw new DerError("truncated DER");
  const tag = buf[pos];
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not used in CMS");
  let len = buf[pos + 1];
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) throw new DerError("indefinite length is not DER");
    if (n > 4 || pos + 2 + n > limit) throw new DerError("bad DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos + 2 + i];
    hdr += n;
  }
  const start = pos + hdr;
  const end = start + len;
  if (end > limit) throw new DerError("DER element overruns its container");
  return { tag, pos, start, end, value: buf.subarray(start, end) };
}

export function children(buf, node) {
  if (!(node.tag & 0x20)) throw new DerError("primitive element where a constructed one was expected");
  const out = [];
  for (let p = node.start; p < node.end; ) {
    const c = tlv(buf, p, node.end);
    out.push(c);
    p = c.end;
  }
  return out;
}

/** Content octets of an OCTET STRING (universal 0x04 or an implicit tag), primitive or, as BER
 * senders sometimes write, constructed from pieces. */
export function octets(buf, node) {
  if (!(node.tag & 0x20)) return node.value;
  const pieces = children(buf, node).map((c) => octets(buf, c));
  const out = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function expect(node, tag, what) {
  if (!node || node.tag !== tag) throw new DerError(`${what}: unexpected DER element`);
  return node;
}

/** OID content octets as hex (compared with the constants below). */
export const oidHex = (node) => {
  expect(node, 0x06, "OBJECT IDENTIFIER");
  return hex(node.value);
};

export function smallInt(node) {
  expect(node, 0x02, "INTEGER");
  if (node.value.length === 0 || node.value.length > 4) throw new DerError("INTEGER out of range");
  let n = 0;
  for (const b of node.value) n = n * 256 + b;
  return n;
}

/** The DER of the SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 4.1), for
 * importKey("spki"). Only its place in the structure is checked; WebCrypto checks the rest. */
export function certificateSpki(der) {
  const cert = tlv(der, 0);
  if (cert.tag !== 0x30 || cert.end !== der.length) throw new DerError("not a DER certificate");
  const tbs = expect(children(der, cert)[0], 0x30, "TBSCertificate");
  const fields = children(der, tbs);
  const at = fields[0] && fields[0].tag === 0xa0 ? 1 : 0; // [0] EXPLICIT version, optional
  // serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
  const spki = expect(fields[at + 5], 0x30, "SubjectPublicKeyInfo");
  expect(children(der, spki)[0], 0x30, "AlgorithmIdentifier");
  return der.subarray(spki.pos, spki.end);
}

export const OID = {
  data: "2a864886f70d010701", // 1.2.840.113549.1.7.1
  enveloped: "2a864886f70d010703", // 1.2.840.113549.1.7.3
  authEnveloped: "2a864886f70d0109100117", // 1.2.840.113549.1.9.16.1.23
  aes256gcm: "60864801650304012e", // 2.16.840.1.101.3.4.1.46
  aes256cbc: "60864801650304012a", // 2.16.840.1.101.3.4.1.42
  rsaesOaep: "2a864886f70d010107", // 1.2.840.113549.1.1.7
  rsaEncryption: "2a864886f70d010101", // 1.2.840.113549.1.1.1
  mgf1: "2a864886f70d010108", // 1.2.840.113549.1.1.8
  pSpecified: "2a864886f70d010109", // 1.2.840.113549.1.1.9
  sha256: "608648016503040201", // 2.16.840.1.101.3.4.2.1
};
