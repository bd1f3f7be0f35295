// The CSS half of the mail sanitiser (src/sanitize.js), which needs no DOM: every remote
// reference goes, however it is spelt or nested (the HTML half runs in the browser tests).
import assert from "node:assert/strict";
import { test } from "node:test";

import { cleanCss } from "../src/sanitize.js";

const REMOTE = /evil|url\s*\(|@import|image-set/i;

function clean(css) {
  const state = { removed: false };
  return { css: cleanCss(css, state), removed: state.removed };
}

test("CSS that names nothing remote is kept as it is", () => {
  assert.deepEqual(clean("color: #333; font-weight: bold"), { css: "color: #333; font-weight: bold", removed: false });
});

test("remote references are removed however they are written", () => {
  const corpus = [
    'background: url("https://evil.test/a.png")',
    "background:url(//evil.test/a.png)",
    "background: \\75 rl(https://evil.test/a.png)",
    "background: u\\rl(https://evil.test/a.png)",
    '@import "https://evil.test/x.css"; color: red',
    "@import url(https://evil.test/x.css);",
    '@im@import;port "https://evil.test/x.css";',
    "@imp@import;ort url(https://evil.test/x.css);",
    "@font-face{font-family:x;src:url(https://evil.test/f.woff)}",
    "@font@font-face{}-face{src:url(https://evil.test/f.woff)}",
    "background-image: image-set('https://evil.test/a.png' 1x)",
    "background: -webkit-image-set(url(https://evil.test/a.png) 1x)",
    "list-style: u/**/rl(https://evil.test/a.png)",
    "width: expression(alert(1))",
    "background: url(https://evil.test/a.png) /* */ url(https://evil.test/b.png)",
  ];
  for (const css of corpus) {
    const out = clean(css);
    assert.equal(out.removed, true, css);
    assert.ok(out.css === null || !REMOTE.test(out.css), `${css} -> ${out.css}`);
  }
});
