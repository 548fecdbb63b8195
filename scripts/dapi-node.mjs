// Load datagrok-api 1.27.9 (Datagrok's compiled Dart client, grok_shared.dart.js) in plain Node 20 and
// point `grok.dapi` at a server. The package ships tsc output meant for webpack/tsx (extensionless
// imports, `require` inside ESM, `import * as dayjs`), so this file doubles as the ESM hooks that fix that.
//   import {startDapi} from './scripts/dapi-node.mjs';
//   const grok = await startDapi({apiUrl: 'http://127.0.0.1:8080/api', apiToken: token});
//   await grok.dapi.docker.dockerContainers.list();
// CLI: node scripts/dapi-node.mjs API_URL TOKEN 'return await grok.dapi.docker.dockerContainers.list()'
//   prints the result as JSON. Tools dir: $GROKEMU_TOOLS or <repo>/.tools.
import {createRequire, register} from 'node:module';
import {fileURLToPath, pathToFileURL} from 'node:url';
import path from 'node:path';

// --- ESM hooks (run in the loader thread once registered) ---
export async function resolve(spec, ctx, next) {
  try { return await next(spec, ctx); } catch (e) {
    if (e.code !== 'ERR_MODULE_NOT_FOUND' && e.code !== 'ERR_UNSUPPORTED_DIR_IMPORT') throw e;
    for (const suffix of ['.js', '/index.js']) { try { return await next(spec + suffix, ctx); } catch {} }
    throw e;
  }
}
export async function load(url, ctx, next) {
  if (/\.(css|scss|svg|png|jpg|gif|woff2?|ttf|eot)$/.test(url))
    return {format: 'module', source: 'export default {};', shortCircuit: true};
  const r = await next(url, ctx);
  if (url.includes('/node_modules/datagrok-api/') && r.source && !url.endsWith('grok_shared.dart.js')) {
    // dayjs and wu are CommonJS functions: a namespace import lacks their methods without interop.
    const source = String(r.source).replace(/import \* as (dayjs|wu) from (['"])(dayjs|wu)\2/g, 'import $1 from $2$3$2');
    return {...r, format: 'module', source};
  }
  return r;
}

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TOOLS = process.env.GROKEMU_TOOLS || path.join(HERE, '..', '.tools');

/** Start the Datagrok runtime in detached mode (no /admin/startup_data) and return `grok`. */
export async function startDapi({apiUrl, apiToken, tools = TOOLS}) {
  if (!globalThis.grok) {
    register(import.meta.url);
    const entry = createRequire(path.join(tools, 'package.json')).resolve('datagrok-api/datagrok');
    globalThis.require ??= createRequire(entry);   // datagrok.js calls require('ws') from ESM scope
    const {startDatagrok} = await import(pathToFileURL(entry).href);
    const log = console.log; console.log = () => {};   // "Initializing Datagrok environment" etc.
    try { await startDatagrok({apiUrl, apiToken, detached: true}); } finally { console.log = log; }
  }
  globalThis.grok.dapi.root = apiUrl;
  globalThis.grok.dapi.token = apiToken;
  return globalThis.grok;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [apiUrl, apiToken, body] = process.argv.slice(2);
  const grok = await startDapi({apiUrl, apiToken});
  try {
    const result = await new Function('grok', `return (async () => { ${body} })()`)(grok);
    process.stdout.write(JSON.stringify(result ?? null, (k, v) => (k === 'dart' ? undefined : v)) + '\n');
    process.exit(0);
  } catch (e) {
    process.stderr.write(`${e?.stack ?? e}\n`);
    process.exit(1);
  }
}
