// The portal bundle: src/main.js -> ../static/build/portal.js (served as /portal/static/portal.js).
// One ES module, minified, no source map, license comments kept (make assets, npm run build).
import * as esbuild from "esbuild";

await esbuild.build({
  entryPoints: ["src/main.js"],
  outfile: "../static/build/portal.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020", "chrome90", "firefox90", "safari15"],
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  charset: "ascii",
  logLevel: "warning",
  banner: {
    js: "/*! MSS patient portal (AGPL-3.0-or-later). Bundles DOMPurify (MPL-2.0 OR Apache-2.0), postal-mime (MIT-0), fflate (MIT). */",
  },
});
