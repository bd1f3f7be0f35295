// Fetch and open stored messages with the session's key, a few at a time.

import { getBytes, getJson } from "./api.js";
import { fromBase64 } from "./bytes.js";
import { loadBlob, loadKey } from "./keystore.js";
import { openStored } from "./message.js";

export class NoKey extends Error {
  constructor() {
    super("no key in this browser");
    this.code = "no_key";
  }
}

let keyPromise = null;
/** The session's private key, non-extractable, in this page's memory only: the blob in
 * IndexedDB unwrapped under the session key the server hands this session (docs/portal.md 2.3).
 * NoKey when this browser holds no blob, or one of another session. */
export function sessionKey() {
  keyPromise ??= (async () => {
    if (!(await loadBlob())) throw new NoKey();
    const { key } = await getJson("/portal/api/session/key", { signedIn: true });
    let k = null;
    try {
      k = await loadKey(fromBase64(key));
    } catch {
      /* not this session's blob */
    }
    if (!k) throw new NoKey();
    return k;
  })();
  keyPromise.catch((err) => {
    if (!(err instanceof NoKey)) keyPromise = null; // a later call may try again (after a 503, say)
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
