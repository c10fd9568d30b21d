// Builds the gateway's browser pages into gateway/web/static (or the folder given as the first
// argument): one bundle of JavaScript and one of CSS per page, named by a hash of their
// content (served as immutable), and the pages' HTML naming them. The output depends only on
// the sources and the locked packages, so tests can rebuild and compare it with what is
// committed.
//
//   npm ci && node build.mjs [OUTDIR]        (or: make web)

import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outdir = resolve(process.argv[2] ?? join(here, '..', 'gateway', 'web', 'static'));
const assets = join(outdir, 'assets');
const pages = { 'index.html': 'terminal', 'console.html': 'console' };
const clients = resolve(here, '..', 'clients', 'js');

// The end-to-end client (../clients/js/src) is bundled from its sources; the packages it
// imports come from web/'s own lock file, whether or not clients/js has a node_modules.
const packagesFromWeb = {
  name: 'packages-from-web',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (args.pluginData === 'web' || !args.importer.startsWith(clients)) return undefined;
      return b.resolve(args.path, { kind: args.kind, resolveDir: here, pluginData: 'web' });
    });
  },
};

rmSync(outdir, { recursive: true, force: true });
mkdirSync(assets, { recursive: true });

const result = await build({
  absWorkingDir: here,
  entryPoints: { terminal: 'src/terminal.js', console: 'src/console.js' },
  bundle: true,
  format: 'esm',
  target: ['es2020', 'chrome90', 'firefox90', 'safari15'],
  minify: true,
  legalComments: 'eof',
  charset: 'utf8',
  outdir: assets,
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  write: true,
  plugins: [packagesFromWeb],
  logLevel: 'warning',
});

// entry name -> { js, css }: the public paths of its outputs
const names = {};
const entries = { 'src/terminal.js': 'terminal', 'src/console.js': 'console' };
for (const [path, meta] of Object.entries(result.metafile.outputs)) {
  const name = entries[meta.entryPoint];
  if (!name) continue;
  names[`${name}.js`] = `/assets/${basename(path)}`;
  if (meta.cssBundle) names[`${name}.css`] = `/assets/${basename(meta.cssBundle)}`;
}

for (const [page, entry] of Object.entries(pages)) {
  let html = readFileSync(join(here, 'src', page), 'utf8');
  html = html.replace(/\{\{([a-z]+\.(?:js|css))\}\}/g, (_, key) => {
    if (!names[key]) throw new Error(`${page}: no output for ${key} (entry ${entry})`);
    return names[key];
  });
  writeFileSync(join(outdir, page), html);
}
copyFileSync(join(here, 'src', 'favicon.svg'), join(outdir, 'favicon.svg'));
writeFileSync(
  join(outdir, 'manifest.json'),
  JSON.stringify(Object.fromEntries(Object.entries(names).sort()), null, 2) + '\n',
);
console.log(`built ${Object.values(names).join(', ')} into ${outdir}`);
