import assert from "node:assert/strict";
import { test } from "node:test";
import { replySubject } from "../src/subject.js";

test("the answer's subject: Re: once", () => {
  assert.equal(replySubject("Résultats"), "Re: Résultats");
  assert.equal(replySubject("Re: Résultats"), "Re: Résultats");
  assert.equal(replySubject("RE : Résultats"), "RE : Résultats");
  assert.equal(replySubject("Réf : dossier"), "Re: Réf : dossier");
  assert.equal(replySubject(""), "Re:");
  assert.equal(replySubject("a\r\nb"), "Re: a b");
  assert.equal(replySubject("x".repeat(400)).length, 250);
});
