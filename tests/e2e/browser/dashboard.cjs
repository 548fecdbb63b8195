// Drive the dashboard in the system Chromium (playwright-core, never a downloaded browser) for
// tests/e2e/test_dashboard.py: one browser for the whole module, commands as JSON lines on stdin, one JSON answer
// line per command on stdout ({"ok": true, ...} or {"ok": false, "error": ...}).
// Usage: node dashboard.cjs <base url> <download dir>
const path = require('path');
const fs = require('fs');
const readline = require('readline');
const tools = process.env.GROKEMU_TOOLS || path.resolve(__dirname, '../../../.tools');
const { chromium } = require(path.join(tools, 'node_modules', 'playwright-core'));
const AXE = path.join(tools, 'node_modules', 'axe-core', 'axe.min.js');

const card = (kind, name) => `#${kind === 'image' ? 'images' : 'containers'} .card[data-name="${name}"]`;

async function main() {
  const [base, downloads] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 }, acceptDownloads: true });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('dialog', (d) => d.accept());

  const ops = {
    async login({ key }) {
      const response = await page.goto(base + '/');
      const form = await page.locator('#key').count();
      const loginAxe = await ops.axe();
      await page.fill('#key', key);
      await Promise.all([page.waitForURL(base + '/'), page.click('button[type=submit]')]);
      await page.waitForSelector('#containers');
      const cookies = (await context.cookies(base)).filter((c) => c.name === 'auth')
        .map((c) => ({ httpOnly: c.httpOnly, sameSite: c.sameSite }));
      return { status: response.status(), form, cookies, loginAxe, html: await page.content(), live: await ops.waitLive({}) };
    },
    async waitLive({ timeout = 15000 }) {
      await page.waitForFunction(() => document.body.dataset.live === 'live', null, { timeout });
      return true;
    },
    async reloads() { return page.evaluate(() => performance.getEntriesByType('navigation').length); },
    async navigationCount() { return ops.navigations; },
    async waitCard({ kind, name, status, timeout = 120000 }) {
      const sel = card(kind, name) + (status ? `[data-status="${status}"]` : '');
      await page.waitForSelector(sel, { timeout, state: 'attached' });
      return ops.cardInfo({ kind, name });
    },
    async waitCardStatus({ kind, name, statuses, timeout = 120000 }) {
      await page.waitForFunction(([s, st]) => {
        const c = document.querySelector(s);
        return c && st.includes(c.dataset.status);
      }, [card(kind, name), statuses], { timeout, polling: 50 });
      return ops.cardInfo({ kind, name });
    },
    async cardInfo({ kind, name }) {
      return page.$eval(card(kind, name), (c) => {
        const dot = c.querySelector('.dot');
        const cs = getComputedStyle(dot);
        return { id: c.dataset.id, status: c.dataset.status, dot: dot.dataset.dot, color: cs.backgroundColor,
          display: cs.display, animation: cs.animationName, text: c.innerText, hidden: c.hidden };
      });
    },
    async watchDots({ kind, name, ms }) {
      // sample the dot a card shows, every 50 ms: the sequence of (status, dot, computed colour, display)
      return page.evaluate(([s, ms]) => new Promise((resolve) => {
        const seen = [];
        const t0 = Date.now();
        const timer = setInterval(() => {
          const c = document.querySelector(s);
          if (c) {
            const dot = c.querySelector('.dot');
            const cs = getComputedStyle(dot);
            const row = [c.dataset.status, dot.dataset.dot, cs.backgroundColor, cs.display, cs.animationName].join('|');
            if (seen[seen.length - 1] !== row) seen.push(row);
          }
          if (Date.now() - t0 > ms) { clearInterval(timer); resolve(seen); }
        }, 50);
      }), [card(kind, name), ms]);
    },
    async waitCardText({ kind, name, contains, timeout = 30000 }) {
      await page.waitForFunction(([s, t]) => {
        const c = document.querySelector(s);
        return c && c.innerText.includes(t);
      }, [card(kind, name), contains], { timeout, polling: 50 });
      return ops.cardInfo({ kind, name });
    },
    async select({ kind, name }) {
      await page.click(`${card(kind, name)} .select`);
      await page.waitForSelector('#pane-body:not([hidden])');
      return ops.pane({});
    },
    async pane() {
      return page.evaluate(() => ({
        title: document.getElementById('pane-title').textContent,
        fields: [...document.querySelectorAll('#pane-fields dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]),
        logsHeading: document.getElementById('logs-heading').textContent,
        logs: document.getElementById('logs').textContent,
        snippet: document.getElementById('snippet').textContent,
      }));
    },
    async waitLogs({ contains, timeout = 30000 }) {
      await page.waitForFunction((t) => document.getElementById('logs').textContent.includes(t), contains,
        { timeout, polling: 100 });
      return ops.pane({});
    },
    async menu({ kind, name, item, keyboard = false }) {
      if (keyboard) {
        await page.focus(`${card(kind, name)} .select`);
        await page.keyboard.press('Shift+F10');
      } else {
        await page.click(`${card(kind, name)} .select`, { button: 'right' });
      }
      await page.waitForSelector('#menu:not([hidden])');
      const items = await page.$$eval('#menu [role=menuitem]', (xs) => xs.map((x) => ({
        label: x.textContent, disabled: x.getAttribute('aria-disabled') === 'true' })));
      const focused = await page.evaluate(() => document.activeElement.getAttribute('role'));
      if (keyboard) {
        const index = items.findIndex((x) => x.label === item);
        for (let i = 0; i < index; i++) await page.keyboard.press('ArrowDown');
        await page.keyboard.press('Enter');
      } else {
        await page.click(`#menu [role=menuitem]:text-is("${item}")`);
      }
      return { items, focused };
    },
    async download({ name }) {
      const [dl] = await Promise.all([page.waitForEvent('download'),
        ops.menu({ kind: 'image', name, item: 'Download context' })]);
      const target = path.join(downloads, dl.suggestedFilename());
      await dl.saveAs(target);
      return { path: target, name: dl.suggestedFilename() };
    },
    async tryIt({ path: p, method = 'GET' }) {
      await page.selectOption('#try-method', method);
      await page.fill('#try-path', p);
      await page.evaluate(() => { delete document.getElementById('try-result').dataset.status; });
      await page.click('#try-send');
      await page.waitForFunction(() => document.getElementById('try-result').dataset.status, null, { timeout: 120000 });
      return page.evaluate(() => ({ result: document.getElementById('try-result').textContent,
        status: document.getElementById('try-result').dataset.status,
        body: document.getElementById('try-body-out').textContent,
        snippet: document.getElementById('snippet').textContent }));
    },
    async search({ text }) {
      const before = await page.evaluate(() => document.body.dataset.updated);
      await page.fill('#search', text);
      await page.waitForTimeout(600);
      return page.$$eval('.card', (cs) => cs.filter((c) => !c.hidden).map((c) => c.dataset.name));
    },
    async dropSocket() {
      // what a network blip looks like to the page: the feed's socket closes
      return page.evaluate(() => new Promise((resolve) => {
        const seen = [];
        const obs = new MutationObserver(() => seen.push(document.body.dataset.live));
        obs.observe(document.body, { attributes: true, attributeFilter: ['data-live'] });
        // the page's sockets, as the init script below recorded them
        window.__sockets.forEach((s) => s.close());
        setTimeout(() => { obs.disconnect(); resolve({ seen, banner: document.getElementById('live-banner').textContent }); }, 200);
      }));
    },
    async banner() {
      return page.evaluate(() => ({ hidden: document.getElementById('live-banner').hidden,
        text: document.getElementById('live-banner').textContent, live: document.body.dataset.live }));
    },
    async viewport({ width, height }) {
      await page.setViewportSize({ width, height });
      return page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth }));
    },
    async screenshot({ file, full = true }) {
      await page.screenshot({ path: file, fullPage: full });
      return { file };
    },
    async axe() {
      await page.evaluate(fs.readFileSync(AXE, 'utf8')); // evaluated over CDP: the page's CSP does not apply
      const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
      return { violations: r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) })) };
    },
    async eval({ js }) { return page.evaluate(js); },
    async consoleErrors() { return consoleErrors; },
    async reload() { await page.reload(); return ops.waitLive({}); },
    async close() { await browser.close(); return true; },
  };
  // count the page's own navigations: "without a reload" is asserted on this
  ops.navigations = 0;
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) ops.navigations += 1; });
  // let dropSocket reach the page's WebSockets
  await context.addInitScript(() => {
    window.__sockets = [];
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...args) { super(...args); window.__sockets.push(this); }
    };
  });

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const { op, ...args } = JSON.parse(line);
    try {
      const value = await ops[op](args);
      process.stdout.write(JSON.stringify({ ok: true, value }) + '\n');
      if (op === 'close') break;
    } catch (e) {
      process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack || e) }) + '\n');
    }
  }
  await browser.close().catch(() => {});
}
main().catch((e) => { console.error(e); process.exit(1); });
