// The page's two live regions (docs/portal.md 2.1): #statut (role=status) and #alerte (role=alert).

function region(id) {
  return document.getElementById(id);
}

function write(id, text) {
  const el = region(id);
  if (!el) return;
  el.replaceChildren();
  if (text) {
    const p = document.createElement("p");
    p.textContent = text;
    el.append(p);
  }
}

export const status = (text) => write("statut", text);
export const alert = (text) => write("alerte", text);

export function clear() {
  write("statut", "");
  write("alerte", "");
}

/** Disable a form's controls while `task` runs (no double submission); re-enabled after. */
export async function busy(form, task) {
  const controls = [...form.querySelectorAll("button, input, textarea, select")];
  const before = controls.map((c) => c.disabled);
  controls.forEach((c) => {
    c.disabled = true;
  });
  form.setAttribute("aria-busy", "true");
  try {
    return await task();
  } finally {
    controls.forEach((c, i) => {
      c.disabled = before[i];
    });
    form.removeAttribute("aria-busy");
  }
}

/** Only a path of this portal (never another origin: no open redirect from an API answer). */
export function portalPath(next, fallback = "/portal/messages") {
  return typeof next === "string" && /^\/portal\/[A-Za-z0-9/_?=&.-]*$/.test(next) && !next.startsWith("//") ? next : fallback;
}
