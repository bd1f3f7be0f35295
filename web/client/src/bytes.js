// Bytes <-> text helpers: base64 (RFC 4648 section 4, padded, what atob/btoa speak),
// base64url without padding (section 5: the auth key on the wire), hex, UTF-8.

const encoder = new TextEncoder();

export const utf8 = (text) => encoder.encode(text);

export function u8(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("bytes expected");
}

export function fromBase64(text) {
  const clean = String(text).replace(/[\s]/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean) || clean.length % 4 === 1) throw new Error("invalid base64");
  const bin = atob(clean);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function toBase64(data) {
  const bytes = u8(data);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

export const toBase64Url = (data) => toBase64(data).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

export const hex = (data) => Array.from(u8(data), (b) => b.toString(16).padStart(2, "0")).join("");

export function concat(...parts) {
  const all = parts.map(u8);
  const out = new Uint8Array(all.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of all) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
