// data-page="activation": the code unwraps the key (extractable for this moment only), the new
// password re-wraps it (fresh salt and IV), then the page signs in with the new password.

import { post } from "../api.js";
import { fromBase64 } from "../bytes.js";
import { KeyError, normaliseActivationCode, passwordProblem, rewrap, sameParams, checkParams, deriveKeys } from "../keys.js";
import * as ui from "../ui.js";
import { derive, finish, KEY_MISMATCH, login } from "../unlock.js";

const WRONG_ACTIVATION = "Identifiant ou code d'activation incorrect.";

export default function activation() {
  const form = document.getElementById("form-activation");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.clear();
    const field = (id) => document.getElementById(id);
    const name = field("identifiant").value.trim();
    const code = normaliseActivationCode(field("code-activation").value);
    const password = field("nouveau-mot-de-passe").value;
    const confirmation = field("confirmation-mot-de-passe").value;
    const refuse = (text, id) => {
      ui.alert(text);
      field(id).focus();
    };
    if (!name) return refuse("Saisissez votre identifiant.", "identifiant");
    if (!code) return refuse("Le code d'activation n'est pas valide : vérifiez-le (16 caractères, par groupes de 4).", "code-activation");
    const problem = passwordProblem(password, { activationCode: code });
    if (problem) return refuse(problem, "nouveau-mot-de-passe");
    if (password !== confirmation) return refuse("Les deux mots de passe ne sont pas identiques.", "confirmation-mot-de-passe");

    await ui.busy(form, async () => {
      try {
        ui.status("Activation en cours…");
        const byCode = await derive("/portal/api/activation/prelogin", name, code);
        const { record, certificate } = await post("/portal/api/activation/key", { login: name, auth_key: byCode.authKeyB64 });
        let out;
        try {
          // Checked against the certificate before anything is re-wrapped or sent.
          out = await rewrap(byCode, record, password, { certificate: fromBase64(certificate) });
        } catch (err) {
          if (err instanceof KeyError && err.code === "wrong_secret") throw new Error(WRONG_ACTIVATION);
          throw err;
        }
        await post("/portal/api/activation", {
          login: name,
          activation_auth_key: out.oldAuthKeyB64,
          auth_key: out.authKeyB64,
          record: out.record,
        });
        ui.status("Votre espace est activé. Connexion en cours…");
        // Sign in with the new password (its parameters are those just written: no new PBKDF2).
        const params = await post("/portal/api/prelogin", { login: name });
        const derived = sameParams(params, out.derived) ? out.derived : await deriveKeys(password, checkParams(params));
        const answer = await login(name, derived);
        if (answer.next === "totp") {
          location.assign("/portal/connexion");
          return;
        }
        await finish(answer, derived);
      } catch (err) {
        ui.status("");
        if (err instanceof KeyError && (err.code === "key_mismatch" || err.code === "bad_certificate")) ui.alert(KEY_MISMATCH);
        else ui.alert(err instanceof KeyError ? "Les données de votre clé sont illisibles. Contactez le support." : err.message);
      }
    });
  });
}
