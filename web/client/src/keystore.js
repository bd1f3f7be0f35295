// The session's non-extractable private CryptoKey in IndexedDB (docs/portal.md 2.3): database
// "mss-portal", store "keys", key "patient". Structured clone keeps it non-extractable.
// Next to it, key "params": the KDF parameters ({v, kdf, iterations, salt}, not secret) of the
// record it came from, for the password change.

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

/** Store the session's key (non-extractable only) and, when given, its record's KDF parameters. */
export async function storeKey(cryptoKey, record = null) {
  if (cryptoKey.extractable) throw new Error("only a non-extractable key is stored");
  await run("readwrite", (s) => s.put(cryptoKey, KEY));
  if (record) {
    const { v, kdf, iterations, salt } = record;
    await run("readwrite", (s) => s.put({ v, kdf, iterations, salt }, "params"));
  }
}

/** The KDF parameters stored with the key, or null. */
export async function loadParams() {
  try {
    return (await run("readonly", (s) => s.get("params"))) || null;
  } catch {
    return null;
  }
}

/** The stored key, or null. */
export async function loadKey() {
  try {
    return (await run("readonly", (s) => s.get(KEY))) || null;
  } catch {
    return null;
  }
}

export async function clearKey() {
  try {
    await run("readwrite", (s) => s.clear());
  } catch {
    /* nothing stored, or storage unavailable: nothing to clear */
  }
}
