// IHE XDM (ITI TF-3 3.32): a zip with IHE_XDM/<submission set>/METADATA.XML, an ebRS
// SubmitObjectsRequest whose ExtrinsicObjects (the documents) carry Name/LocalizedString@value.

import { unzipSync } from "fflate";

const MAX_METADATA = 4 * 1024 * 1024;
const METADATA = /^IHE_XDM\/[^/]+\/METADATA\.XML$/i;

export const isXdm = (name) => /(^|\/)IHE_XDM\.zip$/i.test(String(name || ""));

/** The titles of the documents in an IHE_XDM.zip (Uint8Array); [] when none can be read. */
export function xdmTitles(zipBytes) {
  let files;
  try {
    files = unzipSync(zipBytes, { filter: (f) => METADATA.test(f.name) && f.originalSize <= MAX_METADATA });
  } catch {
    return [];
  }
  const titles = [];
  for (const name of Object.keys(files).sort()) {
    const doc = new DOMParser().parseFromString(new TextDecoder().decode(files[name]), "application/xml");
    if (doc.getElementsByTagName("parsererror").length) continue;
    for (const eo of doc.getElementsByTagNameNS("*", "ExtrinsicObject")) {
      const nameEl = [...eo.children].find((c) => c.localName === "Name");
      const ls = nameEl && [...nameEl.children].find((c) => c.localName === "LocalizedString");
      const title = ls?.getAttribute("value")?.trim();
      if (title) titles.push(title);
    }
  }
  return titles;
}
