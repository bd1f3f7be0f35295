// The subject of an answer (POST …/answer {"subject"}): "Re: " + subject, never "Re: Re: …",
// on one line, at most 250 characters (web/portal/api.py MAX_SUBJECT).

export function replySubject(subject) {
  const s = String(subject || "").replace(/[\r\n\0]+/g, " ").trim();
  const out = /^re\s*:/i.test(s) ? s : `Re: ${s}`.trim();
  return out.slice(0, 250);
}
