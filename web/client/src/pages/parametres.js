// data-page="parametres": the password change. Only the client sees the passwords: prelogin
// parameters for data-login, the old keys, the record (after the server checks the old auth key),
// unwrap EXTRACTABLE, re-wrap under the new password (fresh salt and IV, the same cost or more),
// then a fresh non-extractable key for the session.

import { ApiError, post } from "../api.js";
import { deriveKeys, KeyError, passwordProblem, rewrap, unwrapPrivateKey, checkParams } from "../keys.js";
import { loadParams, storeKey } from "../keystore.js";
import * as ui from "../ui.js";

/** The KDF parameters of the current record: the prelogin answer for data-login, else (when the
 * server refuses prelogin from a signed-in page) those stored with the session's key. */
async function currentParams(login) {
  try {
    return await post("/portal/api/prelogin", { login });
  } catch (err) {
    const stored = await loadParams();
    if (err instanceof ApiError && err.status === 403 && stored) return stored;
    throw err;
  }
}

export default function parametres() {
  const form = document.getElementById("form-mot-de-passe");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.clear();
    const field = (id) => document.getElementById(id);
    const old = field("mot-de-passe-actuel").value;
    const password = field("nouveau-mot-de-passe").value;
    const confirmation = field("confirmation-mot-de-passe").value;
    const refuse = (text, id) => {
      ui.alert(text);
      field(id).focus();
    };
    if (!old) return refuse("Saisissez votre mot de passe actuel.", "mot-de-passe-actuel");
    const problem = passwordProblem(password, { old });
    if (problem) return refuse(problem, "nouveau-mot-de-passe");
    if (password !== confirmation) return refuse("Les deux mots de passe ne sont pas identiques.", "confirmation-mot-de-passe");
    const login = form.dataset.login || "";

    await ui.busy(form, async () => {
      try {
        ui.status("Changement du mot de passe en cours…");
        const params = checkParams(await currentParams(login));
        const oldKeys = await deriveKeys(old, params);
        const { record } = await post("/portal/api/password/record", { old_auth_key: oldKeys.authKeyB64 }, { signedIn: true });
        const out = await rewrap(oldKeys, record, password);
        await post("/portal/api/password", { old_auth_key: out.oldAuthKeyB64, auth_key: out.authKeyB64, record: out.record }, { signedIn: true });
        await storeKey(await unwrapPrivateKey(out.record, out.derived.wrapKey), out.record);
        for (const id of ["mot-de-passe-actuel", "nouveau-mot-de-passe", "confirmation-mot-de-passe"]) field(id).value = "";
        ui.status("Votre mot de passe a été changé.");
      } catch (err) {
        ui.status("");
        if (err instanceof KeyError) {
          ui.alert(err.code === "wrong_secret" ? "Le mot de passe actuel est incorrect." : "Les données de votre clé sont illisibles. Contactez le support.");
        } else {
          ui.alert(err.message);
        }
      }
    });
  });
}
