// The session's private key in IndexedDB (docs/portal.md 2.3): database "mss-portal", store
// "keys", key "patient". What is stored is never a CryptoKey: it is {iv, wrapped} (Uint8Arrays),
// the PKCS#8 wrapped (AES-256-GCM) under the session key K_s that only the server's session row
// holds. Each page fetches K_s (GET /portal/api/session/key) and unwraps a non-extractable key
// into memory; once the session is gone, so is K_s, and what is left here opens with nothing.

import { checkKeyAgainstCertificate, unwrapForSession, wrapForSession } from "./keys.js";

const DB = "mss-portal";
const STORE = "keys";
const KEY = "patient";

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
    req.onblocked = () => reject(new Error("IndexedDB blocked"));
  });
}

async function run(mode, action) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = action(tx.objectStore(STORE));
      let result;
      req.onsuccess = () => {
        result = req.result;
      };
      tx.oncomplete = () => resolve(result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** Keep the session's copy of `privateKey`, an EXTRACTABLE key just unwrapped from the record:
 * checked against `certificate` (DER; nothing is stored on a mismatch), wrapped under the
 * session key `sessionKey` (32 bytes from the server), and only that blob stored. The caller
 * drops its reference to `privateKey` at once. */
export async function keepForSession(privateKey, certificate, sessionKey) {
  await checkKeyAgainstCertificate(privateKey, certificate);
  const blob = await wrapForSession(privateKey, sessionKey);
  await clearKey();
  await run("readwrite", (s) => s.put(blob, KEY));
}

/** The stored blob ({iv, wrapped}), or null. */
export async function loadBlob() {
  try {
    const blob = await run("readonly", (s) => s.get(KEY));
    return blob && blob.iv instanceof Uint8Array && blob.wrapped instanceof Uint8Array ? blob : null;
  } catch {
    return null;
  }
}

/** The session's private key (non-extractable, in memory only) from the stored blob and the
 * session key; null when nothing is stored. KeyError("session_key") when the blob is not of
 * this session. */
export async function loadKey(sessionKey) {
  const blob = await loadBlob();
  return blob ? unwrapForSession(blob, sessionKey) : null;
}

export async function clearKey() {
  try {
    await run("readwrite", (s) => s.clear());
  } catch {
    /* nothing stored, or storage unavailable: nothing to clear */
  }
}
