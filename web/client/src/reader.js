// Fetch and open stored messages with the session's key, a few at a time.

import { getBytes } from "./api.js";
import { loadKey } from "./keystore.js";
import { openStored } from "./message.js";

export class NoKey extends Error {
  constructor() {
    super("no key in this browser");
    this.code = "no_key";
  }
}

let keyPromise = null;
/** The session's private key from IndexedDB (NoKey when this browser has none). */
export function sessionKey() {
  keyPromise ??= loadKey().then((k) => {
    if (!k) throw new NoKey();
    return k;
  });
  return keyPromise;
}

/** {email, payload, headers, head} of the message at `url`. */
export async function readMessage(url) {
  const key = await sessionKey();
  const bytes = await getBytes(url, { signedIn: true });
  return openStored(bytes, key);
}

/** Run `task(item, index)` over `items`, at most `limit` at once; results in order
 * ({ok, value} | {ok:false, error}). */
export async function pool(items, limit, task) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = { ok: true, value: await task(items[i], i) };
      } catch (error) {
        results[i] = { ok: false, error };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
