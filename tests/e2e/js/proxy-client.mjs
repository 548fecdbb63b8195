// Datagrok's real JS client (datagrok-api 1.27.9) against grokemu, for tests/e2e/test_proxy_js_client.py.
//   node tests/e2e/js/proxy-client.mjs API_URL TOKEN '<async js body using grok, token, wsText>'
// prints the body's result as JSON (exit 1 and the error on stderr when it throws).
//
// Node 20 has no global WebSocket, and a Node client sends no cookie, so `webSocketProxy` gets the `ws` package
// (installed next to datagrok-api) wrapped as a browser-like global that presents the session the way a browser
// does: in the `auth` cookie (docs/datagrok-api.md §1.3). fetchProxy callers pass
// `{headers: {Authorization: token}}` themselves: Node's fetch has no cookie jar either.
import {createRequire} from 'node:module';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {startDapi} from '../../../scripts/dapi-node.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TOOLS = process.env.GROKEMU_TOOLS || path.join(HERE, '..', '..', '..', '.tools');

export function installWebSocket(token) {
  const WS = createRequire(path.join(TOOLS, 'package.json'))('ws');
  globalThis.WebSocket = class CookieWebSocket extends WS {
    constructor(url, protocols) {
      super(url, protocols, {headers: {cookie: `auth=${token}`}});
    }
  };
}

/** The next message on a socket that `webSocketProxy` resolved, as text (binary frames as byte counts). */
export function nextMessage(socket, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message in time')), timeoutMs);
    socket.onmessage = (event) => {
      clearTimeout(timer);
      resolve(typeof event.data === 'string' ? event.data : {binary: event.data.length ?? event.data.byteLength});
    };
  });
}

/** Resolves with {code, reason} when the socket closes. */
export function closed(socket, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('not closed in time')), timeoutMs);
    socket.onclose = (event) => { clearTimeout(timer); resolve({code: event.code, reason: event.reason}); };
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [apiUrl, token, body] = process.argv.slice(2);
  installWebSocket(token);
  const grok = await startDapi({apiUrl, apiToken: token});
  try {
    const run = new Function('grok', 'token', 'nextMessage', 'closed', `return (async () => { ${body} })()`);
    const result = await run(grok, token, nextMessage, closed);
    process.stdout.write(JSON.stringify(result ?? null, (k, v) => (k === 'dart' ? undefined : v)) + '\n');
    process.exit(0);
  } catch (e) {
    process.stderr.write(`${e?.stack ?? e}\n`);
    process.exit(1);
  }
}
