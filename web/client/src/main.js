// The portal's one script (docs/portal.md 2.1): dispatch on <body data-page>.

import activation from "./pages/activation.js";
import connexion from "./pages/connexion.js";
import conversation from "./pages/conversation.js";
import donnees from "./pages/donnees.js";
import messages from "./pages/messages.js";
import parametres from "./pages/parametres.js";
import { clearKey } from "./keystore.js";
import { startSession } from "./session.js";

const PAGES = { connexion, activation, messages, conversation, parametres, donnees };
// Pages of no session, where a key left behind has nothing to do (connexion clears it itself).
const KEYLESS = new Set(["activation", "cloturee"]);

function start() {
  startSession();
  if (KEYLESS.has(document.body.dataset.page)) clearKey();
  const page = PAGES[document.body.dataset.page];
  if (page) {
    Promise.resolve(page()).catch((err) => {
      console.error(err);
    });
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start, { once: true });
else start();
