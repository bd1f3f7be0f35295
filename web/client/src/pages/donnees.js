// data-page="donnees": every message decrypted in the page, zipped as .eml files
// ("mes-donnees.zip", fflate), saved through a blob: URL.

import { zipSync } from "fflate";
import { getJson } from "../api.js";
import { toEml } from "../message.js";
import { saveFile } from "../render.js";
import { pool, readMessage } from "../reader.js";
import * as ui from "../ui.js";

const CONCURRENCY = 4;

function entryName(m, index) {
  const at = String(m.at || "").replace(/[^0-9T]/g, "").slice(0, 15) || "date-inconnue";
  const dir = m.direction === "out" ? "envoye" : "recu";
  const conv = String(m.conversation ?? "0").replace(/[^0-9A-Za-z_-]/g, "");
  return `conversation-${conv}/${at}-${dir}-${String(index + 1).padStart(4, "0")}.eml`;
}

export default function donnees() {
  const button = document.getElementById("telecharger-donnees");
  if (!button) return;
  button.addEventListener("click", async () => {
    ui.clear();
    button.disabled = true;
    try {
      const { messages } = await getJson("/portal/api/export", { signedIn: true });
      const list = Array.isArray(messages) ? messages.filter((m) => /^\/portal\/api\/messages\/\d+$/.test(m.url)) : [];
      let done = 0;
      ui.status(`Déchiffrement de vos messages : 0 sur ${list.length}…`);
      const results = await pool(list, CONCURRENCY, async (m, i) => {
        const { payload, head } = await readMessage(m.url);
        done++;
        ui.status(`Déchiffrement de vos messages : ${done} sur ${list.length}…`);
        return [entryName(m, i), toEml(head, payload)];
      });
      const files = {};
      for (const r of results) if (r.ok) files[r.value[0]] = [r.value[1], { level: 6 }];
      const failed = results.filter((r) => !r.ok);
      if (failed.some((r) => r.error && r.error.code === "no_key")) {
        ui.status("");
        ui.alert("Votre clé n'est plus disponible dans ce navigateur : reconnectez-vous pour télécharger vos données.");
        return;
      }
      if (failed.length) {
        files["LISEZ-MOI.txt"] = new TextEncoder().encode(
          `${failed.length} message(s) n'ont pas pu être déchiffrés et ne figurent pas dans ce fichier.\r\n`,
        );
      }
      saveFile(zipSync(files), "mes-donnees.zip");
      const ok = results.length - failed.length;
      ui.status(
        `Vos données sont prêtes : ${ok} message${ok > 1 ? "s" : ""} dans « mes-donnees.zip ».` +
          (failed.length ? ` ${failed.length} message${failed.length > 1 ? "s n'ont" : " n'a"} pas pu être déchiffré${failed.length > 1 ? "s" : ""}.` : ""),
      );
    } catch (err) {
      ui.status("");
      ui.alert(err.message);
    } finally {
      button.disabled = false;
    }
  });
}
