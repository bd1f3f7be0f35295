// data-page="messages": each conversation's subject from its decrypted latest message, and
// the attachment mark when it has any.

import { listedAttachments } from "../message.js";
import { failureText } from "../render.js";
import { pool, readMessage } from "../reader.js";
import * as ui from "../ui.js";

const CONCURRENCY = 4;

export default async function messages() {
  const rows = [...document.querySelectorAll("#conversations li.conversation[data-latest]")];
  let noKey = false;
  await pool(rows, CONCURRENCY, async (li) => {
    const subject = li.querySelector("[data-sujet]");
    try {
      const { email } = await readMessage(li.dataset.latest);
      if (subject) subject.textContent = email.subject.trim() || "(sans objet)";
      const pj = li.querySelector("[data-pj]");
      if (pj && listedAttachments(email).length) pj.hidden = false;
    } catch (err) {
      if (err.code === "no_key") noKey = true;
      if (subject) subject.textContent = "Message illisible";
      if (err.code !== "no_key" && err.status === undefined) console.warn("message", li.dataset.latest, err);
      if (err.status && err.status !== 404) throw err;
    }
  });
  if (noKey) ui.alert(failureText({ code: "no_key" }));
}
