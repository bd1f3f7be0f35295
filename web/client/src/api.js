// The portal's JSON API (docs/portal.md 2.2): same-origin fetch, X-CSRF-Token from the meta
// tag on every state-changing request, JSON errors as ApiError (with the server's French text).

export const GENERIC_ERROR = "Le service est momentanément indisponible. Réessayez dans quelques instants.";

export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.getAttribute("content") || "";
}

/** Called on a 401 of a signed-in page (the session is gone); set by session.js. */
let onSessionGone = null;
export function whenSessionGone(handler) {
  onSessionGone = handler;
}

async function failure(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    /* not JSON */
  }
  const header = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  const retry = Number.isFinite(body.retry_after) ? body.retry_after : Number.isFinite(header) ? header : null;
  let message = typeof body.error === "string" && body.error ? body.error : GENERIC_ERROR;
  if (response.status === 429 && retry !== null && !/\d/.test(message)) {
    message += ` Réessayez dans ${Math.ceil(retry)} seconde${retry > 1 ? "s" : ""}.`;
  }
  return new ApiError(response.status, message, retry);
}

async function request(method, path, { body, signedIn = false } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store", redirect: "error" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = csrfToken();
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "Le serveur ne répond pas. Vérifiez votre connexion puis réessayez.");
  }
  if (!response.ok) {
    const err = await failure(response);
    if (response.status === 401 && signedIn && onSessionGone) onSessionGone();
    throw err;
  }
  return response;
}

/** POST a JSON body; the JSON answer. `signedIn`: a 401 means the session ended. */
export async function post(path, body = {}, options = {}) {
  return (await request("POST", path, { ...options, body })).json();
}

export async function getJson(path, options = {}) {
  return (await request("GET", path, options)).json();
}

/** A stored message (or any binary answer) as a Uint8Array. */
export async function getBytes(path, options = {}) {
  return new Uint8Array(await (await request("GET", path, options)).arrayBuffer());
}
