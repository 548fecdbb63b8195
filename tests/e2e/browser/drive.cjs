// Drive the system Chromium with playwright-core (never a downloaded browser) as a Datagrok user would:
// logged in by the `auth` cookie, loading grokemu's dashboard and calling the proxy routes from the page.
// Usage: node drive.cjs <base url> <token> <screenshot path> [<container id> <http path> <ws path>]
// Prints one JSON object with what the page saw.
const path = require('path');
const tools = process.env.GROKEMU_TOOLS || path.resolve(__dirname, '../../../.tools');
const { chromium } = require(path.join(tools, 'node_modules', 'playwright-core'));

(async () => {
  const [base, token, shot, containerId, httpPath, wsPath] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const result = {};
  try {
    const context = await browser.newContext();
    const url = new URL(base);
    await context.addCookies([{ name: 'auth', value: token, domain: url.hostname, path: '/' }]);
    const page = await context.newPage();
    const response = await page.goto(base + '/');
    result.status = response.status();
    result.title = await page.title();
    // the dashboard's cards (web/templates/dashboard.html): on the page once it has loaded
    result.containers = await page.locator('#containers .card').allInnerTexts();
    result.images = await page.locator('#images .card').allInnerTexts();
    await page.screenshot({ path: shot, fullPage: true });
    if (containerId) {
      // fetchProxy as the JS API does it: credentials 'include', the cookie authenticates.
      result.fetch = await page.evaluate(async ([id, p]) => {
        const r = await fetch(`/api/docker/containers/proxy/${id}${p}`, { credentials: 'include' });
        return { status: r.status, body: await r.text(), cold: r.headers.get('x-grokemu-cold-start-ms') };
      }, [containerId, httpPath]);
      // many more, as a page that fires fetchProxy calls does, mixed with API calls on the same kept-alive
      // connections (Chromium keeps six per host): one after another, then 24 at once
      result.many = await page.evaluate(async ([id, p]) => {
        const one = async (i) => {
          const r = await fetch(`/api/docker/containers/proxy/${id}${p}?i=${i}`, { credentials: 'include' });
          return r.status === 200 ? await r.text() : `status ${r.status}`;
        };
        const sequential = [];
        for (let i = 0; i < 30; i++) {
          sequential.push(await one(i));
          if (i % 10 === 9) {
            const api = await fetch('/api/docker/containers', { credentials: 'include' });
            sequential.push(`api ${api.status} ${Array.isArray(await api.json())}`);
          }
        }
        const concurrent = await Promise.all([...Array(24).keys()].map(one));
        return { sequential, concurrent };
      }, [containerId, httpPath]);
      if (wsPath) {
        // webSocketProxy as the JS API does it: wait for CONNECTED, then the app's frames.
        result.ws = await page.evaluate(async ([id, p]) => new Promise((resolve) => {
          const frames = [];
          const ws = new WebSocket(`ws://${location.host}/api/docker/containers/proxy-ws/${id}${p}`);
          ws.onmessage = (e) => {
            frames.push(e.data);
            if (e.data === 'CONNECTED') ws.send('hello from the browser');
            else ws.close(1000);
          };
          ws.onclose = (e) => resolve({ frames, code: e.code, reason: e.reason });
          setTimeout(() => resolve({ frames, timeout: true }), 60000);
        }), [containerId, wsPath]);
      }
    }
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
