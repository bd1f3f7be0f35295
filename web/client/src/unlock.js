// Shared by the sign-in and activation pages: KDF parameters, derivation, the login request,
// and the session's key (unwrapped non-extractable, stored in IndexedDB).

import { post } from "./api.js";
import { checkParams, deriveKeys, unwrapPrivateKey } from "./keys.js";
import { storeKey } from "./keystore.js";
import { portalPath } from "./ui.js";

export const WRONG_LOGIN = "Identifiant ou mot de passe incorrect.";

/** Derived keys for `secret` under the parameters `path` answers for `login`. */
export async function derive(path, login, secret) {
  const params = checkParams(await post(path, { login }));
  return deriveKeys(secret, params);
}

/** The record -> the session's key in IndexedDB -> the next page. */
export async function finish(answer, derived) {
  const key = await unwrapPrivateKey(answer.record, derived.wrapKey);
  await storeKey(key, answer.record);
  location.assign(portalPath(answer.next));
}

/** POST login; {next:"totp"} or {next, record}. */
export const login = (name, derived) => post("/portal/api/login", { login: name, auth_key: derived.authKeyB64 });
