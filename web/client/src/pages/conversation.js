// data-page="conversation": every message decrypted and rendered in order, the subject in the
// title, Répondre / Envoyer.

import { post } from "../api.js";
import { failureText, renderFailure, renderMessage } from "../render.js";
import { pool, readMessage } from "../reader.js";
import { replySubject } from "../subject.js";
import * as ui from "../ui.js";

const CONCURRENCY = 3;

export default async function conversation() {
  const items = [...document.querySelectorAll("#messages li.message[data-message]")];
  const title = document.querySelector("h1[data-sujet]");
  let subject = "";
  let noKey = false;
  const results = await pool(items, CONCURRENCY, async (li, index) => {
    const corps = li.querySelector(".corps");
    try {
      const { email } = await readMessage(li.dataset.message);
      if (corps) renderMessage(corps, email);
      if (index === 0 && email.subject.trim() && title) title.textContent = email.subject.trim();
      return { email, direction: li.dataset.direction };
    } catch (err) {
      if (err.code === "no_key") noKey = true;
      if (corps) renderFailure(corps, err);
      throw err;
    }
  });
  if (noKey) ui.alert(failureText({ code: "no_key" }));
  const opened = results.filter((r) => r.ok).map((r) => r.value);
  const original = opened.find((m) => m.email.subject.trim()) || null;
  const lastIn = [...opened].reverse().find((m) => m.direction === "in" && m.email.subject.trim());
  subject = (lastIn || original)?.email.subject || "";

  const button = document.getElementById("repondre");
  const form = document.getElementById("form-reponse");
  const text = document.getElementById("reponse");
  if (!button || !form || !text) return;
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", "form-reponse");
  button.addEventListener("click", () => {
    form.hidden = false;
    button.setAttribute("aria-expanded", "true");
    text.focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.clear();
    if (!text.value.trim()) {
      ui.alert("Votre réponse est vide.");
      text.focus();
      return;
    }
    const action = form.dataset.action || "";
    if (!/^\/portal\/api\/conversations\/\d+\/answer$/.test(action)) return;
    await ui.busy(form, async () => {
      try {
        await post(action, { subject: replySubject(subject), text: text.value }, { signedIn: true });
        text.value = "";
        form.hidden = true;
        ui.status("Votre message a été envoyé.");
        setTimeout(() => location.reload(), 1500);
      } catch (err) {
        ui.alert(err.message);
      }
    });
  });
}
