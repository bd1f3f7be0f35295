// A decrypted message inside its <div class="corps"> (docs/portal.md 2.1): the text part via
// textContent, the HTML part sanitised in a sandboxed frame (links only) with its own CSP, the attachments
// with blob: download links and previews (PDF, PNG, JPEG), the titles inside an IHE_XDM.zip.

import { post } from "./api.js";
import { toBase64 } from "./bytes.js";
import { cidOf, listedAttachments } from "./message.js";
import { frameDocument, sanitizeHtml } from "./sanitize.js";
import { isXdm, xdmTitles } from "./xdm.js";

/** The message frame's sandbox: no scripts, no same origin, no forms, no top navigation; only
 * links (target=_blank, https:/mailto:, sanitize.js) open, in a new unsandboxed top-level tab. */
export const FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox";

const el = (tag, props = {}, text) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
};

export function formatSize(n) {
  if (n < 1024) return `${n} octet${n > 1 ? "s" : ""}`;
  const units = ["Ko", "Mo", "Go"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toLocaleString("fr-FR", { maximumFractionDigits: v < 10 ? 1 : 0 })} ${units[i]}`;
}

/** What the bytes are, by their first octets (never by the sender's word). */
export function sniff(bytes) {
  const b = bytes;
  if (b.length > 4 && b[0] === 0x25 && b[1] === 0x50 && b[2] === 0x44 && b[3] === 0x46 && b[4] === 0x2d) return "application/pdf";
  if (b.length > 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) return "image/png";
  if (b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image/jpeg";
  return null;
}

// Every blob: URL made for this page, revoked when it goes away.
const urls = new Set();
export function blobUrl(bytes, type) {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  urls.add(url);
  return url;
}
export function revoke(url) {
  if (urls.delete(url)) URL.revokeObjectURL(url);
}
globalThis.addEventListener?.("pagehide", () => [...urls].forEach(revoke));

/** A download link whose blob: URL is revoked after use (and renewed for the next click). */
export function downloadLink(bytes, filename, label = "Télécharger") {
  const a = el("a", { download: filename }, label);
  const fresh = () => {
    a.href = blobUrl(bytes, "application/octet-stream");
  };
  fresh();
  a.addEventListener("click", () => {
    const used = a.href;
    setTimeout(() => {
      revoke(used);
      fresh();
    }, 1000);
  });
  return a;
}

/** Save bytes as a file at once (export): a temporary link, clicked, then revoked. */
export function saveFile(bytes, filename) {
  const a = downloadLink(bytes, filename);
  a.hidden = true;
  document.body.append(a);
  a.click();
  setTimeout(() => a.remove(), 2000);
}

function preview(bytes, type, name, holder, button) {
  if (holder.firstChild) {
    const shown = holder.firstChild.getAttribute("src");
    holder.replaceChildren();
    revoke(shown);
    holder.hidden = true;
    button.setAttribute("aria-expanded", "false");
    return;
  }
  // The blob carries the sniffed type only (never text/html: a blob: document has this origin).
  const url = blobUrl(bytes, type);
  const view =
    type === "application/pdf"
      ? el("iframe", { src: url, title: `Aperçu de ${name}`, referrerpolicy: "no-referrer", class: "apercu-pdf" })
      : el("img", { src: url, alt: `Aperçu de ${name}`, class: "apercu-image" });
  holder.append(view);
  holder.hidden = false;
  button.setAttribute("aria-expanded", "true");
}

/** Bidi overrides, zero-width and other format or control characters go: "facture\u202Efdp.exe"
 * would show as "factureexe.pdf" and save as an .exe. */
export function safeName(name) {
  return String(name || "").replace(/[\p{Cf}\p{Cc}]/gu, "").trim();
}

/** The access journal notes a download (no file name: it may say what the document is about). */
function journalDownload() {
  post("/portal/api/journal", { action: "attachment_download" }, { signedIn: true }).catch(() => {});
}

function attachmentItem(att, index) {
  const bytes = new Uint8Array(att.content);
  const name = safeName(att.filename) || `piece-jointe-${index + 1}`;
  const type = att.mimeType || "application/octet-stream";
  const li = el("li", { class: "piece-jointe" });
  li.append(el("span", { class: "nom-fichier" }, name), " ", el("span", { class: "type" }, type), " ", el("span", { class: "taille" }, formatSize(bytes.length)), " ");
  const link = downloadLink(bytes, name.replace(/[\\/:*?"<>|\0-\x1f]/g, "_"));
  link.addEventListener("click", journalDownload);
  li.append(link);
  const kind = sniff(bytes);
  const claimed = type.toLowerCase();
  if (kind && (claimed === kind || claimed === "application/octet-stream" || (kind === "image/jpeg" && claimed === "image/jpg"))) {
    const button = el("button", { type: "button", class: "apercu", "aria-expanded": "false" }, "Aperçu");
    const holder = el("div", { class: "apercu-contenu" });
    holder.hidden = true;
    button.addEventListener("click", () => preview(bytes, kind, name, holder, button));
    li.append(" ", button, holder);
  }
  if (isXdm(name)) {
    const titles = xdmTitles(bytes);
    if (titles.length) {
      const ul = el("ul", { class: "documents-xdm", "aria-label": `Documents de ${name}` });
      for (const t of titles) ul.append(el("li", {}, t));
      li.append(ul);
    }
  }
  return li;
}

/** cid -> data: URL of the message's image parts (for <img src="cid:…">). */
function cidMap(email) {
  const map = new Map();
  for (const a of email.attachments) {
    if (!a.contentId) continue;
    const bytes = new Uint8Array(a.content);
    const kind = sniff(bytes) || (/^image\/(gif|webp)$/i.test(a.mimeType || "") ? a.mimeType.toLowerCase() : null);
    if (kind && kind.startsWith("image/")) map.set(cidOf(a.contentId), `data:${kind};base64,${toBase64(bytes)}`);
  }
  return map;
}

/** Fill `corps` with the message. Returns {attachments: number listed}. */
export function renderMessage(corps, email) {
  corps.replaceChildren();
  if (email.html) {
    const cids = cidMap(email);
    const { html, removed } = sanitizeHtml(email.html, cids);
    if (removed) corps.append(el("p", { class: "note-contenu" }, "Des contenus distants ont été bloqués."));
    const frame = el("iframe", { sandbox: FRAME_SANDBOX, title: "Contenu du message", referrerpolicy: "no-referrer", class: "contenu-html" });
    frame.srcdoc = frameDocument(html);
    corps.append(frame);
    if (email.text && email.text.trim()) {
      // The plain version too, in the page (textContent): it reflows and a screen reader reads it.
      const details = el("details", { class: "version-texte" });
      details.append(el("summary", {}, "Version texte du message"), el("div", { class: "texte" }, email.text));
      corps.append(details);
    }
  } else {
    corps.append(el("div", { class: "texte" }, email.text || ""));
  }
  const listed = listedAttachments(email);
  if (listed.length) {
    const ul = el("ul", { class: "pieces-jointes", "aria-label": "Pièces jointes" });
    listed.forEach((a, i) => ul.append(attachmentItem(a, i)));
    corps.append(ul);
  }
  return { attachments: listed.length };
}

/** A message that could not be opened: a French sentence, never the technical detail. */
export function renderFailure(corps, err) {
  corps.replaceChildren(el("p", { class: "erreur-message" }, failureText(err)));
}

export function failureText(err) {
  switch (err && err.code) {
    case "altered":
      return "Ce message a été modifié après son envoi : il ne peut pas être affiché.";
    case "no_recipient":
    case "unsupported":
      return "Ce message n'est pas chiffré pour votre clé et ne peut pas être lu ici.";
    case "no_key":
      return "Votre clé n'est plus disponible dans ce navigateur : reconnectez-vous pour lire ce message.";
    default:
      return "Ce message n'a pas pu être déchiffré.";
  }
}
