// Signed-in pages: the session expiry warning (dialog#expiration, data-session-expires-in and
// data-session-warn on <body>), "Rester connecté" (/portal/api/session/extend), the redirect
// at expiry, and the logout form clearing the key from IndexedDB before it is submitted.

import { getJson, post, whenSessionGone } from "./api.js";
import { clearKey } from "./keystore.js";
import * as ui from "./ui.js";

const CONNEXION = "/portal/connexion";
// The server reports whole seconds (rounded down): ask a moment after the real end.
const CHECK_MARGIN_MS = 1000;
let timers = [];

async function gone() {
  stop();
  await clearKey();
  location.assign(CONNEXION);
}

function stop() {
  timers.forEach(clearTimeout);
  timers = [];
}

function dialog() {
  return document.getElementById("expiration");
}

function closeDialog() {
  const d = dialog();
  if (d && d.open) d.close();
}

function schedule(expiresIn, warnBefore) {
  stop();
  const warnIn = Math.max(0, expiresIn - warnBefore);
  timers.push(
    setTimeout(() => {
      const d = dialog();
      if (d && !d.open) {
        if (typeof d.showModal === "function") d.showModal();
        else d.setAttribute("open", "");
        document.getElementById("expiration-prolonger")?.focus();
      }
    }, warnIn * 1000),
  );
  // Just after expiry, ask the server (another tab may have extended the session). The check
  // is not activity (the server does not push the expiry back for it).
  timers.push(setTimeout(check, expiresIn * 1000 + CHECK_MARGIN_MS));
}

async function check() {
  try {
    const s = await getJson("/portal/api/session", { signedIn: true });
    if (s.expires_in > 0) {
      closeDialog();
      schedule(s.expires_in, s.warn_before);
      return;
    }
  } catch (err) {
    if (err.status !== 401) {
      timers.push(setTimeout(check, 30_000));
      return;
    }
  }
  await gone();
}

async function extend() {
  try {
    const s = await post("/portal/api/session/extend", {}, { signedIn: true });
    closeDialog();
    schedule(s.expires_in, s.warn_before);
    ui.status("Votre session a été prolongée.");
  } catch (err) {
    if (err.status !== 401) ui.alert(err.message);
  }
}

export function startSession() {
  const body = document.body.dataset;
  whenSessionGone(gone);
  const logout = document.getElementById("form-deconnexion");
  if (logout) {
    logout.addEventListener("submit", async (event) => {
      event.preventDefault();
      stop();
      await clearKey();
      logout.submit(); // does not fire "submit" again
    });
  }
  if (body.sessionExpiresIn === undefined) return;
  const expiresIn = Number.parseInt(body.sessionExpiresIn, 10);
  const warn = Number.parseInt(body.sessionWarn || "60", 10);
  if (!Number.isFinite(expiresIn)) return;
  document.getElementById("expiration-prolonger")?.addEventListener("click", extend);
  schedule(expiresIn, Number.isFinite(warn) ? warn : 60);
}
