// data-page="connexion": step 1 password (prelogin, PBKDF2 in the page, login with the auth
// key only), step 2 when the API says {"next":"totp"}: the code. The wrap key stays in memory.

import { post } from "../api.js";
import { KeyError } from "../keys.js";
import { clearKey } from "../keystore.js";
import * as ui from "../ui.js";
import { derive, finish, KEY_MISMATCH, login, WRONG_LOGIN } from "../unlock.js";

function keyProblem(err) {
  if (err instanceof KeyError) {
    if (err.code === "wrong_secret") return WRONG_LOGIN;
    if (err.code === "key_mismatch" || err.code === "bad_certificate") return KEY_MISMATCH;
    if (err.code === "weak_record") return "Le serveur a proposé des paramètres de sécurité trop faibles : connexion refusée.";
    return "Les données de votre clé sont illisibles. Contactez le support.";
  }
  return null;
}

export default function connexion() {
  clearKey(); // the sign-in page starts without a key (docs/portal.md 2.3)
  const form = document.getElementById("form-connexion");
  const totpForm = document.getElementById("form-totp");
  if (!form) return;
  let derived = null;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.clear();
    const name = document.getElementById("identifiant").value.trim();
    const password = document.getElementById("mot-de-passe").value;
    if (!name || !password) {
      ui.alert("Saisissez votre identifiant et votre mot de passe.");
      return;
    }
    await ui.busy(form, async () => {
      try {
        ui.status("Connexion en cours…");
        derived = await derive("/portal/api/prelogin", name, password);
        const answer = await login(name, derived);
        if (answer.next === "totp") {
          ui.status("Saisissez le code de vérification.");
          form.hidden = true;
          totpForm.hidden = false;
          document.getElementById("mot-de-passe").value = "";
          document.getElementById("code-totp").focus();
          return;
        }
        await finish(answer, derived);
      } catch (err) {
        ui.status("");
        ui.alert(keyProblem(err) || err.message);
      }
    });
  });

  totpForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.clear();
    const code = document.getElementById("code-totp").value.trim();
    if (!code) {
      ui.alert("Saisissez le code de vérification.");
      return;
    }
    if (!derived) {
      location.assign("/portal/connexion");
      return;
    }
    await ui.busy(totpForm, async () => {
      try {
        const answer = await post("/portal/api/totp", { code });
        await finish(answer, derived);
      } catch (err) {
        document.getElementById("code-totp").value = "";
        if (err.status === 401 && !/code/i.test(err.message)) {
          // The pending session is gone: start again with the password.
          totpForm.hidden = true;
          form.hidden = false;
          derived = null;
        }
        ui.alert(keyProblem(err) || err.message);
        (totpForm.hidden ? document.getElementById("identifiant") : document.getElementById("code-totp")).focus();
      }
    });
  });
}
