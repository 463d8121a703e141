#!/usr/bin/env node
// The single-file build: dist/bakker.mjs, one ES module with every dependency bundled (esbuild)
// and bakker's native helper inside it (base64; written to a private temporary folder and loaded
// at start). Copy it to a Debian server with Node 20 and libzstd1 and run it:
//   node bakker.mjs backup /data --store /backups/server1
// ssh2's optional native speed-ups (cpu-features, sshcrypto) are left out: ssh2 uses its pure
// JavaScript code then. Run after `npm run build` (npm run build:single does both).
import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeFile = path.join(root, 'build/Release/bakker_native.node');
if (!fs.existsSync(nativeFile)) throw new Error(`${nativeFile} is missing: run npm ci (it builds the native helper) first`);
const entry = path.join(root, 'dist/single-entry.mjs');
fs.writeFileSync(
  entry,
  `globalThis.__bakkerNative = ${JSON.stringify(fs.readFileSync(nativeFile).toString('base64'))};
process.env.UV_THREADPOOL_SIZE ??= '6';
const { main } = await import('./src/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
`,
);
const out = path.join(root, 'dist/bakker.mjs');
await build({
  entryPoints: [entry],
  outfile: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['*.node', 'cpu-features'],
  banner: { js: "#!/usr/bin/env -S node --max-semi-space-size=4 --expose-gc\nimport { createRequire as __bakkerCreateRequire } from 'node:module';\nconst require = __bakkerCreateRequire(import.meta.url);" },
  legalComments: 'none',
  logLevel: 'warning',
});
fs.rmSync(entry);
fs.chmodSync(out, 0o755);
console.log(`wrote ${path.relative(root, out)} (${(fs.statSync(out).size / 1e6).toFixed(1)} MB)`);
