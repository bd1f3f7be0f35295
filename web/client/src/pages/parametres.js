// data-page="parametres": the password change. Only the client sees the passwords: the KDF
// parameters of the signed-in patient's record (GET /portal/api/password/params), the old keys,
// the record and certificate (after the server checks the old auth key), unwrap EXTRACTABLE,
// check against the certificate, re-wrap under the new password (fresh salt and IV, the same
// cost or more), then a fresh session copy of the key (wrapped under K_s) in IndexedDB.

import { getJson, post } from "../api.js";
import { deriveKeys, KeyError, passwordProblem, rewrap, checkParams } from "../keys.js";
import { fromBase64 } from "../bytes.js";
import * as ui from "../ui.js";
import { KEY_MISMATCH, keepRecordKey } from "../unlock.js";

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

    await ui.busy(form, async () => {
      try {
        ui.status("Changement du mot de passe en cours…");
        const params = checkParams(await getJson("/portal/api/password/params", { signedIn: true }));
        const oldKeys = await deriveKeys(old, params);
        const { record, certificate } = await post("/portal/api/password/record", { old_auth_key: oldKeys.authKeyB64 }, { signedIn: true });
        const out = await rewrap(oldKeys, record, password, { certificate: fromBase64(certificate) });
        await post("/portal/api/password", { old_auth_key: out.oldAuthKeyB64, auth_key: out.authKeyB64, record: out.record }, { signedIn: true });
        const { key } = await getJson("/portal/api/session/key", { signedIn: true });
        await keepRecordKey(out.record, out.derived, certificate, key);
        for (const id of ["mot-de-passe-actuel", "nouveau-mot-de-passe", "confirmation-mot-de-passe"]) field(id).value = "";
        ui.status("Votre mot de passe a été changé.");
      } catch (err) {
        ui.status("");
        if (err instanceof KeyError) {
          if (err.code === "wrong_secret") ui.alert("Le mot de passe actuel est incorrect.");
          else if (err.code === "key_mismatch" || err.code === "bad_certificate") ui.alert(KEY_MISMATCH);
          else ui.alert("Les données de votre clé sont illisibles. Contactez le support.");
        } else {
          ui.alert(err.message);
        }
      }
    });
  });
}
