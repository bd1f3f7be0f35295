// Shared by the sign-in and activation pages: KDF parameters, derivation, the login request,
// and the session's copy of the key (docs/portal.md 2.3: unwrapped EXTRACTABLE for a moment,
// checked against the certificate, wrapped under the session key K_s, only that blob stored).

import { post } from "./api.js";
import { fromBase64 } from "./bytes.js";
import { checkParams, deriveKeys, unwrapPrivateKey } from "./keys.js";
import { keepForSession } from "./keystore.js";
import { portalPath } from "./ui.js";

export const WRONG_LOGIN = "Identifiant ou mot de passe incorrect.";
export const KEY_MISMATCH =
  "La clé reçue ne correspond pas au certificat de votre espace : par sécurité, elle n'a pas été utilisée. Contactez le support.";

/** Derived keys for `secret` under the parameters `path` answers for `login`. */
export async function derive(path, login, secret) {
  const params = checkParams(await post(path, { login }));
  return deriveKeys(secret, params);
}

/** Store the session's copy of the key of `record` (a record under `derived`), given the
 * answer's base64 `certificate` and `sessionKey` (K_s). The extractable key lives only here. */
export async function keepRecordKey(record, derived, certificate, sessionKey) {
  await keepForSession(
    await unwrapPrivateKey(record, derived.wrapKey, { extractable: true }),
    fromBase64(certificate),
    fromBase64(sessionKey),
  );
}

/** The sign-in answer {next, record, certificate, session_key} -> the session's blob in
 * IndexedDB -> the next page. */
export async function finish(answer, derived) {
  await keepRecordKey(answer.record, derived, answer.certificate, answer.session_key);
  location.assign(portalPath(answer.next));
}

/** POST login; {next:"totp"} or {next, record}. */
export const login = (name, derived) => post("/portal/api/login", { login: name, auth_key: derived.authKeyB64 });
