// A real Chromium session as an attacker meets it: the user signed in to grokemu's dashboard (the login form sets
// the `auth` cookie), and a page of another origin is open in the same browser. Phase `evil`: that page (a cross-site
// origin and a same-site one, i.e. another port of localhost) tries reset, publish, stop, a webSocketProxy and reading
// the request inspector.
// Phase `own`: the same actions from grokemu's own page. Prints one JSON object with what each page saw.
// Usage: node attack.cjs <phase> <grokemu base url> <evil base url> <container id> <package zip, base64>
const path = require('path');
const tools = process.env.GROKEMU_TOOLS || path.resolve(__dirname, '../../../.tools');
const { chromium } = require(path.join(tools, 'node_modules', 'playwright-core'));

// Runs inside a page: every action a page can take against grokemu, with what the page gets to see.
async function attempts([base, id, zipB64, mode]) {
  const seen = {};
  const zip = Uint8Array.from(atob(zipB64), (c) => c.charCodeAt(0));
  const wsBase = base.replace(/^http/, 'ws');
  async function attempt(name, url, init) {
    try {
      const r = await fetch(url, { credentials: 'include', mode, ...init });
      seen[name] = { status: r.status, type: r.type };
    } catch (e) {
      seen[name] = { error: String(e) };
    }
  }
  await attempt('stop', `${base}/api/docker/containers/${id}/stop?awaitStop=true`, {});
  // the CLI's key-in-path form with a text/plain body: a CORS "simple request", sent without a preflight
  await attempt('publishKeyInPath', `${base}/api/packages/dev/admin/@acme/frompage?debug=true`,
    { method: 'POST', body: zip, headers: { 'Content-Type': 'text/plain' } });
  await attempt('publish', `${base}/api/packages/dev/@acme/frompage?debug=true`,
    { method: 'POST', body: zip, headers: { 'Content-Type': 'text/plain' } });
  seen.ws = await new Promise((resolve) => {
    const frames = [];
    let ws;
    try { ws = new WebSocket(`${wsBase}/api/docker/containers/proxy-ws/${id}/ws`); } catch (e) {
      resolve({ error: String(e) }); return;
    }
    ws.onmessage = (e) => { frames.push(e.data); if (e.data === 'CONNECTED') ws.send('hi'); else ws.close(1000); };
    ws.onerror = () => frames.push('error');
    ws.onclose = (e) => resolve({ frames, code: e.code });
    setTimeout(() => resolve({ frames, timeout: true }), 60000);
  });
  // an <img> / navigation-style GET carries the cookie with no Origin header at all
  seen.img = await new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve('load');
    img.onerror = () => resolve('error');
    img.src = `${base}/api/docker/containers/${id}/stop`;
  });
  // the request inspector's entries (GET /_grokemu/requests): can the page read what went to the container?
  try {
    const r = await fetch(`${base}/_grokemu/requests?container=${id}`, { credentials: 'include', mode });
    seen.requests = { status: r.status, type: r.type, read: (await r.text()).length };
  } catch (e) {
    seen.requests = { error: String(e) };
  }
  await attempt('reset', `${base}/_grokemu/reset`, { method: 'POST' });
  return seen;
}

(async () => {
  const [phase, base, evil, id, zipB64] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const result = {};
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(base + '/');
    await page.fill('#key', 'admin');
    await page.click('button[type=submit]');
    result.signedIn = await page.waitForSelector('#containers', { timeout: 15000 }).then(() => true, () => false);
    result.cookie = (await context.cookies(base)).filter((c) => c.name === 'auth')
      .map((c) => ({ httpOnly: c.httpOnly, sameSite: c.sameSite }));
    if (phase === 'evil') {
      const crossSite = evil.replace('localhost', '127.0.0.1');
      for (const [name, origin] of [['crossSite', crossSite], ['sameSite', evil]]) {
        const other = await context.newPage();
        await other.goto(origin + '/');
        result[name] = { noCors: await other.evaluate(attempts, [base, id, zipB64, 'no-cors']),
          cors: await other.evaluate(attempts, [base, id, zipB64, 'cors']) };
        await other.close();
      }
    } else {
      result.own = await page.evaluate(attempts, [base, id, zipB64, 'same-origin']);
    }
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
