// Drive the Requests tab of the Dockers page (the request inspector, docs/inspector.md) in the system Chromium
// (playwright-core) for tests/e2e/test_inspector.py: JSON commands on stdin, one JSON answer line each on stdout.
// Usage: node inspector.cjs <base url>
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const tools = process.env.GROKEMU_TOOLS || path.resolve(__dirname, '../../../.tools');
const { chromium } = require(path.join(tools, 'node_modules', 'playwright-core'));
const AXE = path.join(tools, 'node_modules', 'axe-core', 'axe.min.js');

async function main() {
  const [base] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const rows = () => page.$$eval('#requests tbody tr', (trs) => trs.map((tr) => ({
    id: tr.dataset.id, cells: [...tr.cells].map((td) => td.textContent) })));
  const ops = {
    async login({ key }) {
      await page.goto(base + '/');
      await page.fill('#key', key);
      await Promise.all([page.waitForURL(base + '/'), page.click('button[type=submit]')]);
      await page.waitForFunction(() => document.body.dataset.live === 'live', null, { timeout: 15000 });
      return true;
    },
    async openRequests({ name }) {
      await page.click(`#containers .card[data-name="${name}"] .select`);
      await page.click('#tab-requests');
      await page.waitForSelector('#requests-section:not([hidden])');
      return { selected: await page.getAttribute('#tab-requests', 'aria-selected'),
        logsHidden: await page.$eval('#logs-section', (s) => s.hidden) };
    },
    async waitRows({ method, path: p, timeout = 30000 }) {
      await page.waitForFunction(([m, q]) => [...document.querySelectorAll('#requests tbody tr')]
        .some((tr) => tr.cells[2].textContent === m && tr.cells[3].textContent === q), [method, p], { timeout, polling: 100 });
      return rows();
    },
    async rows() { return rows(); },
    async pick({ method, path: p }) {
      const all = await rows();
      const row = all.find((r) => r.cells[2] === method && r.cells[3] === p);
      await page.click(`#requests tbody tr[data-id="${row.id}"]`);
      await page.waitForSelector('#request-detail:not([hidden])');
      return page.evaluate(() => ({
        title: document.getElementById('request-title').textContent,
        requestHeaders: document.getElementById('request-headers').textContent,
        requestBody: document.getElementById('request-body').textContent,
        responseBody: document.getElementById('response-body').textContent,
        curl: document.getElementById('curl').textContent,
        replayDisabled: document.getElementById('replay').disabled,
        html: document.documentElement.outerHTML,
      }));
    },
    async replay() {
      const before = (await rows()).length;
      await page.evaluate(() => { delete document.getElementById('replay-result').dataset.status; });
      await page.click('#replay');
      await page.waitForFunction(() => document.getElementById('replay-result').dataset.status, null, { timeout: 60000 });
      await page.waitForFunction((n) => document.querySelectorAll('#requests tbody tr').length > n, before,
        { timeout: 30000, polling: 100 });
      return { result: await page.textContent('#replay-result'), status: await page.getAttribute('#replay-result', 'data-status'),
        rows: await rows() };
    },
    async copyCurl() {
      await page.click('#copy-curl');
      return page.evaluate(() => navigator.clipboard.readText());
    },
    async axe() {
      await page.evaluate(fs.readFileSync(AXE, 'utf8')); // evaluated over CDP: the page's CSP does not apply
      const result = await page.evaluate(async () => window.axe.run('#pane', { runOnly: ['wcag2a', 'wcag2aa'] }));
      return result.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
    },
    async errors() { return errors; },
    async close() { await browser.close(); return true; },
  };
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const { op, ...args } = JSON.parse(line);
    try {
      const value = await ops[op](args);
      process.stdout.write(JSON.stringify({ ok: true, value }) + '\n');
      if (op === 'close') break;
    } catch (e) {
      process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack || e) }) + '\n');
    }
  }
  process.exit(0);
}
main().catch((e) => { console.error(e); process.exit(1); });
