// Mail HTML -> a string safe for the sandboxed frame (../shared/PORTAL.md 5; docs/portal.md 2.1):
// DOMPurify (HTML profile: no SVG, no MathML, no script, no event handler, no javascript:)
// plus hooks that drop every remote reference: src other than data:/cid:, srcset, background,
// poster, CSS url()/@import/image-set in style attributes and <style>, <base>, <meta>, <link>,
// forms, frames, media; links keep only https:/mailto: hrefs (rel=noopener noreferrer,
// target=_blank). cid: images become data: URLs from the message's own parts.

import createDOMPurify from "dompurify";

const FORBID_TAGS = [
  "script", "base", "meta", "link", "form", "input", "button", "select", "option", "optgroup", "textarea",
  "fieldset", "legend", "label", "iframe", "frame", "frameset", "object", "embed", "applet", "param",
  "video", "audio", "source", "track", "picture", "portal", "svg", "math", "noscript", "template", "dialog",
];
const FORBID_ATTR = [
  "srcset", "background", "poster", "action", "formaction", "ping", "lowsrc", "dynsrc", "longdesc",
  "xlink:href", "data", "usemap", "manifest", "integrity", "autofocus",
];
const SAFE_DATA_IMAGE = /^data:image\/(png|jpeg|gif|webp|bmp);base64,[a-z0-9+/=\s]*$/i;
const LINK = /^(https:|mailto:)/i;

/** CSS without any remote reference (null when nothing is left); `state.removed` set if cut. */
export function cleanCss(css, state) {
  // Decode CSS escapes first (\75 rl( is url(), \@import...), drop comments.
  let s = String(css)
    .replace(/\\([0-9a-f]{1,6})\s?/gi, (_, h) => {
      const cp = Number.parseInt(h, 16);
      return cp > 0 && cp <= 0x10ffff ? String.fromCodePoint(cp) : "";
    })
    .replace(/\\(.)/g, "$1")
    .replace(/\/\*[\s\S]*?(\*\/|$)/g, "");
  const before = s;
  // Repeat until nothing changes: one pass would rebuild what it cuts out of itself
  // ("@im@import;port" becomes "@import"). Whatever still changes after a few passes, or
  // still names a remote reference, is dropped whole.
  for (let pass = 0; pass < MAX_CSS_PASSES; pass++) {
    const next = stripRemote(s);
    if (next === s) break;
    s = next;
  }
  if (stripRemote(s) !== s || REMOTE_LEFT.test(s)) {
    state.removed = true;
    return null;
  }
  if (s !== before) state.removed = true;
  return s.trim() ? s : null;
}

const MAX_CSS_PASSES = 8;
const REMOTE_LEFT = /@import|@font-face|url\s*\(|image-set|expression\s*\(|javascript:/i;

function stripRemote(s) {
  return s
    .replace(/@import[^;]*;?/gi, "")
    .replace(/@font-face\s*\{[^}]*\}/gi, "")
    .replace(/(?:-webkit-)?image-set\s*\([^)]*\)/gi, "none")
    .replace(/url\s*\((?:[^()"']|"[^"]*"|'[^']*')*\)/gi, "none")
    .replace(/\b(?:url|src|image|cross-fade|element|paint)\s*\(/gi, "none(")
    .replace(/expression\s*\(|behavior\s*:|-moz-binding\s*:|javascript:/gi, "x-removed(");
}

let purifier = null;
const state = { removed: false, cids: new Map() };

function instance() {
  if (purifier) return purifier;
  purifier = createDOMPurify(globalThis.window);
  purifier.addHook("uponSanitizeElement", (node, data) => {
    if (FORBID_TAGS.includes(data.tagName) || data.tagName === "style") {
      if (data.tagName === "style") {
        const css = cleanCss(node.textContent || "", state);
        node.textContent = css || "";
      } else {
        state.removed = true;
      }
    }
  });
  purifier.addHook("uponSanitizeAttribute", (node, data) => {
    const name = data.attrName;
    const value = String(data.attrValue || "").trim();
    if (name.startsWith("on") || FORBID_ATTR.includes(name)) {
      state.removed = true;
      data.keepAttr = false;
      return;
    }
    if (name === "style") {
      const css = cleanCss(value, state);
      if (css === null) data.keepAttr = false;
      else data.attrValue = css;
      return;
    }
    if (name === "src") {
      if (/^cid:/i.test(value)) {
        const url = state.cids.get(decodeURIComponent(value.slice(4)).replace(/^<|>$/g, "").trim().toLowerCase());
        if (url && node.nodeName === "IMG") {
          data.attrValue = url; // (not forceKeepAttr: DOMPurify would then keep the old value)
          return;
        }
      } else if (node.nodeName === "IMG" && SAFE_DATA_IMAGE.test(value)) {
        return;
      }
      state.removed = true;
      data.keepAttr = false;
      return;
    }
    if (name === "href") {
      if (node.nodeName === "A" || node.nodeName === "AREA") {
        if (LINK.test(value)) return;
      }
      if (/^(https?:|\/\/|javascript:|data:|vbscript:|ftp:|file:)/i.test(value) || value.includes("://")) state.removed = true;
      data.keepAttr = false;
    }
  });
  purifier.addHook("afterSanitizeAttributes", (node) => {
    if (node.nodeName === "A" && node.hasAttribute("href")) {
      node.setAttribute("rel", "noopener noreferrer");
      node.setAttribute("target", "_blank");
    } else if (node.nodeName === "A") {
      node.removeAttribute("target");
    }
  });
  return purifier;
}

/** {html, removed}: the sanitised body of a mail; `cids` maps Content-ID (lower case, no <>)
 * to a data: URL. */
export function sanitizeHtml(html, cids = new Map()) {
  const p = instance();
  state.removed = false;
  state.cids = cids;
  const clean = p.sanitize(String(html), {
    USE_PROFILES: { html: true },
    FORBID_TAGS,
    FORBID_ATTR,
    ALLOW_DATA_ATTR: false,
    ALLOW_UNKNOWN_PROTOCOLS: false,
    ALLOWED_URI_REGEXP: /^(?:https:|mailto:|cid:|data:image\/)/i,
    WHOLE_DOCUMENT: false,
    KEEP_CONTENT: true,
    ADD_TAGS: ["style"],
    FORCE_BODY: true,
  });
  const removed = state.removed;
  state.cids = new Map();
  return { html: clean, removed };
}

/** The frame's CSP (docs/portal.md 2.1); the frame inherits the page's as well. */
export const FRAME_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'; base-uri 'none'";

/** The srcdoc of the sandboxed frame: its own CSP first, then the sanitised body. */
export function frameDocument(cleanHtml) {
  return (
    `<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8">` +
    `<meta http-equiv="Content-Security-Policy" content="${FRAME_CSP}">` +
    `<meta name="referrer" content="no-referrer"></head><body>${cleanHtml}</body></html>`
  );
}
