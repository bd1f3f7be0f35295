// One stored message (docs/patient-keys.md 2.6): the outer header fields the server keeps,
// then a base64 CMS body. Split it, decrypt the CMS, parse the inner (header-protected) MIME.

import PostalMime from "postal-mime";
import { fromBase64 } from "./bytes.js";
import { CmsError, openCms } from "./cms.js";

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

/** [{name, value}] of a header block (unfolded; values as UTF-8 where they decode). */
export function parseHeaderBlock(text) {
  const out = [];
  for (const line of text.replace(/\r\n/g, "\n").replace(/\n[ \t]+/g, " ").split("\n")) {
    const at = line.indexOf(":");
    if (at > 0) out.push({ name: line.slice(0, at).trim(), value: line.slice(at + 1).trim() });
  }
  return out;
}

export const header = (headers, name) => headers.find((h) => h.name.toLowerCase() === name.toLowerCase())?.value ?? null;

/** {head: Uint8Array (raw header bytes, separator included), headers, der} of a stored message. */
export function splitStored(bytes) {
  let at = -1;
  let sep = 0;
  for (let i = 0; i + 1 < bytes.length; i++) {
    if (bytes[i] === 0x0a && bytes[i + 1] === 0x0a) {
      at = i;
      sep = 2;
      break;
    }
    if (bytes[i] === 0x0d && bytes[i + 1] === 0x0a && bytes[i + 2] === 0x0d && bytes[i + 3] === 0x0a) {
      at = i;
      sep = 4;
      break;
    }
  }
  if (at < 0) throw new CmsError("not_smime", "message has no body");
  const head = bytes.subarray(0, at + sep);
  const headers = parseHeaderBlock(utf8.decode(head));
  const type = (header(headers, "Content-Type") || "").toLowerCase();
  if (!/^application\/(x-)?pkcs7-mime\b/.test(type)) throw new CmsError("not_smime", "message is not S/MIME encrypted");
  const cte = (header(headers, "Content-Transfer-Encoding") || "base64").toLowerCase();
  const body = bytes.subarray(at + sep);
  let der;
  if (cte === "base64") {
    try {
      der = fromBase64(latin1.decode(body));
    } catch {
      throw new CmsError("bad_cms", "the body is not base64");
    }
  } else if (cte === "binary") {
    der = body;
  } else {
    throw new CmsError("bad_cms", `unsupported transfer encoding ${cte}`);
  }
  return { head, headers, der };
}

/** The decrypted payload (Uint8Array) and the outer headers of a stored message. */
export async function decryptStored(bytes, privateKey) {
  const { head, headers, der } = splitStored(bytes);
  return { head, headers, payload: await openCms(der, privateKey) };
}

const SIGNATURE_TYPES = /^application\/(x-)?pkcs7-signature$/i;

/** The parsed inner message: postal-mime's Email, with `attachments` without the detached S/MIME
 * signature, `subject` from the protected headers (RFC 9788), `outer` the stored headers. */
export async function parseMessage(payload, outerHeaders = []) {
  const email = await PostalMime.parse(payload, { attachmentEncoding: "arraybuffer" });
  email.attachments = (email.attachments || []).filter((a) => !SIGNATURE_TYPES.test(a.mimeType || ""));
  email.outer = outerHeaders;
  if (email.subject === undefined || email.subject === null) email.subject = "";
  return email;
}

/** Fetch-free helper: stored bytes -> {email, payload, headers}. */
export async function openStored(bytes, privateKey) {
  const { headers, payload, head } = await decryptStored(bytes, privateKey);
  return { email: await parseMessage(payload, headers), payload, headers, head };
}

/** The Content-IDs the HTML part references (lower case, without <>). */
export function usedCids(email) {
  const used = new Set();
  for (const m of String(email.html || "").matchAll(/cid:([^"'\s>)]+)/gi)) {
    try {
      used.add(cidOf(decodeURIComponent(m[1])));
    } catch {
      used.add(cidOf(m[1]));
    }
  }
  return used;
}

/** The attachments a reader sees: inline images the HTML shows (cid:) are not listed. */
export function listedAttachments(email, used = usedCids(email)) {
  return email.attachments.filter((a) => !(a.contentId && used.has(cidOf(a.contentId)) && a.disposition !== "attachment"));
}

export const cidOf = (contentId) => String(contentId || "").replace(/^<|>$/g, "").trim().toLowerCase();

const MIME_FIELDS = new Set(["mime-version", "content-type", "content-disposition", "content-transfer-encoding"]);

/** An .eml for the export: the outer fields (minus its MIME fields and those the payload
 * carries itself, e.g. the protected Subject), then the decrypted payload. */
export function toEml(head, payload) {
  const payloadHead = (() => {
    const text = utf8.decode(payload.subarray(0, Math.min(payload.length, 64 * 1024)));
    const end = text.search(/\r?\n\r?\n/);
    return parseHeaderBlock(end >= 0 ? text.slice(0, end) : "");
  })();
  const inner = new Set(payloadHead.map((h) => h.name.toLowerCase()));
  const lines = [];
  const raw = latin1.decode(head).replace(/\r?\n\r?\n$/, "").split(/\r?\n/);
  let keep = false;
  for (const line of raw) {
    if (/^[ \t]/.test(line)) {
      if (keep) lines.push(line);
      continue;
    }
    const name = line.slice(0, Math.max(0, line.indexOf(":"))).trim().toLowerCase();
    keep = !!name && !MIME_FIELDS.has(name) && !inner.has(name);
    if (keep) lines.push(line);
  }
  if (!inner.has("mime-version")) lines.push("MIME-Version: 1.0");
  const prefix = new Uint8Array(Array.from(lines.map((l) => l + "\r\n").join(""), (c) => c.charCodeAt(0) & 0xff));
  const out = new Uint8Array(prefix.length + payload.length);
  out.set(prefix, 0);
  out.set(payload, prefix.length);
  return out;
}
