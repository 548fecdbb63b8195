// grokemu's dashboard (web/ui.py): Datagrok's Manage -> Dockers view, live. No build step, no library, no CDN: the
// page's CSP is default-src 'self'. Entity JSON keeps Datagrok's wire keys (docs/datagrok-api.md §2); what grokemu
// adds is under `grokemu` (services/dashboard.py). Everything from the server is put on the page as text, never as
// HTML. Start / Stop / Delete call the Datagrok API routes the JS client calls (web/api.py); Rebuild and Download
// context are grokemu's own routes (web/dashboard.py); the feed is the WebSocket /_grokemu/live.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    containers: [], images: [], offset: 0, // server clock minus ours, in seconds
    selected: null, // {kind: 'container'|'image', id}
    filter: null, // null, or {containers: Set, images: Set} of ids the search matched
    busy: new Set(), socket: null, retry: 0, ended: false, logsFor: null, buildLogsKey: null,
    tab: 'logs', requests: [], requestsFor: null, request: null, // the Requests tab (the request inspector)
  };

  // -- status dots (the help page's "Managing docker containers and images") -------------------------------
  const PENDING_CONTAINER = ['pending start', 'starting', 'checking', 'pending user stop', 'pending system stop',
    'stopping'];
  function dotOf(kind, status) {
    if (status === 'error') return 'red';
    if (kind === 'image') return status === 'ready' ? 'green' : 'grey'; // pending validation, validating
    if (status === 'started') return 'green';
    if (PENDING_CONTAINER.includes(status)) return 'grey';
    return 'none'; // stopped by user / by system: no dot
  }
  const isStopped = (c) => c.status.startsWith('stopped') || c.status === 'error';

  // -- small helpers ---------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  const serverNow = () => Date.now() / 1000 + state.offset;
  const clock = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : '');
  function ago(t) {
    const s = Math.max(0, Math.round(serverNow() - t));
    return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.floor(s / 60)}m ago` : `${Math.floor(s / 3600)}h ago`;
  }
  function mmss(seconds) {
    const s = Math.max(0, Math.round(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  }
  let toastTimer = null;
  function toast(message, ok) {
    const t = $('toast');
    t.textContent = message;
    t.className = ok ? 'toast ok' : 'toast';
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, ok ? 3000 : 8000);
  }
  async function call(method, url) {
    const r = await fetch(url, { method, credentials: 'same-origin' });
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      try { message = (await r.json()).message || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return r;
  }
  const find = (kind, id) => (kind === 'container' ? state.containers : state.images).find((x) => x.id === id);

  // -- cards -----------------------------------------------------------------------------------------------
  function containerLines(c) {
    const g = c.grokemu || {};
    const out = [el('div', { class: 'line', text: [c.namespace, c.dockerImage].filter(Boolean).join(' · ') })];
    const stats = [`${g.requests || 0} request${g.requests === 1 ? '' : 's'}`];
    if (g.lastStatus) stats.push(`last ${g.lastStatus} at ${clock(g.lastAt)}`);
    if (g.lastColdStartMs !== null && g.lastColdStartMs !== undefined) stats.push(`cold start ${Math.round(g.lastColdStartMs)} ms`);
    out.push(el('div', { class: 'stats', 'data-field': 'stats', text: stats.join(' · ') }));
    if (c.shutdownTimeout !== null && c.shutdownTimeout !== undefined) {
      out.push(el('div', { class: 'countdown', 'data-field': 'countdown', 'data-idle-at': g.idleAt || '',
        text: countdownText(c) }));
    }
    // the first line says why (domain/exits.py); the details show the last log lines too
    if (c.errorMessage) out.push(el('div', { class: 'problem', text: c.errorMessage.split('\n')[0] }));
    return out;
  }
  function countdownText(c) {
    const g = c.grokemu || {};
    if (g.idleAt) return `idle shutdown in ${mmss(g.idleAt - serverNow())}`;
    if (c.status === 'started' && g.activeHolds) return 'in use: no idle shutdown while held';
    return `stops after ${c.shutdownTimeout} min idle`;
  }
  function imageLines(i) {
    return [el('div', { class: 'line', text: `${i.namespace} · ${i.dockerFullName} · v${i.version}` })];
  }
  function card(kind, x) {
    const dot = dotOf(kind, x.status);
    const selected = state.selected && state.selected.kind === kind && state.selected.id === x.id;
    const name = x.name;
    const node = el('div', { class: `card${selected ? ' selected' : ''}${state.busy.has(x.id) ? ' busy' : ''}`,
      role: 'listitem', 'data-id': x.id, 'data-kind': kind, 'data-status': x.status, 'data-name': name,
      'aria-busy': state.busy.has(x.id) ? 'true' : null },
    el('button', { type: 'button', class: 'select', 'aria-pressed': selected ? 'true' : 'false',
      'aria-keyshortcuts': 'Shift+F10' },
    el('span', { class: `dot dot-${dot}`, 'data-dot': dot, 'aria-hidden': 'true' }),
    el('span', { class: 'name', text: name })),
    el('button', { type: 'button', class: 'more', 'aria-haspopup': 'menu', 'aria-label': `Actions for ${name}`,
      text: '\u22ee' }),
    el('div', { class: 'status', text: x.status + (state.busy.has(x.id) ? ' (working…)' : '') }),
    ...(kind === 'container' ? containerLines(x) : imageLines(x)));
    return node;
  }
  function renderList(kind) {
    const list = kind === 'container' ? state.containers : state.images;
    const host = $(kind === 'container' ? 'containers' : 'images');
    const hadFocus = document.activeElement && host.contains(document.activeElement)
      ? [document.activeElement.closest('.card').dataset.id, document.activeElement.className] : null;
    const matched = state.filter ? state.filter[kind === 'container' ? 'containers' : 'images'] : null;
    const nodes = list.map((x) => {
      const n = card(kind, x);
      if (matched && !matched.has(x.id)) n.hidden = true;
      return n;
    });
    host.replaceChildren(...nodes);
    $(kind === 'container' ? 'containers-empty' : 'images-empty').hidden = list.length > 0;
    if (hadFocus) {
      const again = host.querySelector(`.card[data-id="${CSS.escape(hadFocus[0])}"] .${hadFocus[1].split(' ')[0]}`);
      if (again) again.focus();
    }
  }
  function render() {
    renderList('container');
    renderList('image');
    renderPane();
  }

  // -- the context pane ------------------------------------------------------------------------------------
  function field(dl, label, value) {
    if (value === null || value === undefined || value === '') return;
    dl.append(el('dt', { text: label }), el('dd', { text: String(value) }));
  }
  function limits(c) {
    const parts = [];
    // container.json units (domain/container_config.py): cpu cores, memory and shm_size MB, storage GB
    if (c.cpu !== null && c.cpu !== undefined) parts.push(`cpu ${c.cpu}`);
    if (c.memory !== null && c.memory !== undefined) parts.push(`memory ${c.memory} MB`);
    if (c.gpu) parts.push(`gpu ${c.gpu}`);
    if (c.sharedMemSize) parts.push(`shm ${c.sharedMemSize} MB`);
    if (c.storage) parts.push(`storage ${c.storage} GB`);
    return parts.join(', ') || 'none set';
  }
  function renderPane() {
    const sel = state.selected && find(state.selected.kind, state.selected.id);
    $('pane-body').hidden = !sel;
    $('pane-hint').hidden = !!sel;
    if (!sel) {
      $('pane-title').textContent = 'Context pane';
      return;
    }
    const kind = state.selected.kind;
    $('pane-title').textContent = `${kind === 'container' ? 'Container' : 'Image'} ${sel.name}`;
    const dl = $('pane-fields');
    dl.replaceChildren();
    field(dl, 'Status', sel.status);
    field(dl, 'Package', sel.namespace);
    if (kind === 'container') {
      const image = state.images.find((i) => i.id === (sel.dockerfile || {}).id);
      field(dl, 'Image', sel.dockerImage);
      field(dl, 'Version', image ? image.version : '');
      field(dl, 'Limits', limits(sel));
      field(dl, 'On demand', sel.onDemand ? 'yes' : 'no');
      field(dl, 'Shutdown timeout', sel.shutdownTimeout ? `${sel.shutdownTimeout} min` : '');
      field(dl, 'Address', sel.address ? `${sel.address}:${sel.port}` : '');
      field(dl, 'Last active', sel.lastActive ? new Date(sel.lastActive).toLocaleString() : 'never');
      const g = sel.grokemu || {};
      field(dl, 'Status since', g.statusSince ? `${clock(g.statusSince)} (${ago(g.statusSince)})` : '');
      field(dl, 'Requests', String(g.requests || 0));
      if (g.lastStatus) field(dl, 'Last request', `${g.lastStatus} at ${clock(g.lastAt)} (${ago(g.lastAt)})`);
      if (g.lastColdStartMs !== null && g.lastColdStartMs !== undefined) field(dl, 'Last cold start', `${Math.round(g.lastColdStartMs)} ms`);
      const unknown = Object.keys(sel.unknownConfigKeys || {});
      field(dl, 'Unknown container.json keys', unknown.join(', '));
      field(dl, 'Warnings', (sel.warnings || []).join('\n'));
      field(dl, 'Error', sel.errorMessage);
    } else {
      field(dl, 'Version', sel.version);
      field(dl, 'Image', sel.dockerFullName);
      field(dl, 'Dockerfile', sel.dockerfilePath);
      field(dl, 'Port', sel.port);
      field(dl, 'Digest', sel.digest);
      field(dl, 'Updated', sel.updatedOn ? new Date(sel.updatedOn).toLocaleString() : '');
    }
    renderFunctions(kind === 'container' ? sel.grokemu || {} : {});
    $('logs-heading').textContent = kind === 'container' ? 'Logs' : 'Build logs';
    $('pane-tabs').hidden = kind !== 'container';
    showTab(kind === 'container' ? state.tab : 'logs');
    $('try-section').hidden = kind !== 'container';
    $('snippet-section').hidden = kind !== 'container';
    if (kind === 'container') {
      $('snippet').textContent = `const response = await grok.dapi.docker.dockerContainers.fetchProxy(\n  '${sel.id}', '${tryPath()}');\nconsole.log(response.status, await response.text());`;
    } else {
      const key = `${sel.id}|${sel.status}|${sel.updatedOn}`;
      if (state.buildLogsKey !== key) {
        state.buildLogsKey = key;
        loadBuildLogs(sel.id);
      }
    }
  }
  // A Celery worker's functions (as plugin code calls them) and its calls, running first (services/dashboard.py).
  function renderFunctions(g) {
    const functions = g.functions || [], calls = g.calls || [];
    $('functions-section').hidden = !g.functions;
    const row = (...cells) => el('tr', {}, ...cells.map((c) => el('td', { text: String(c ?? '') })));
    $('functions').tBodies[0].replaceChildren(...functions.map((f) =>
      row(f.nqName, f.params.join(', '), f.outputs.join(', '))));
    $('calls').tBodies[0].replaceChildren(...calls.map((c) =>
      row(c.function, c.status, `${Math.round(c.durationMs)} ms`, c.login, clock(c.started))));
    $('calls-empty').hidden = calls.length > 0;
    $('calls').hidden = calls.length === 0;
  }
  async function loadBuildLogs(id) {
    try {
      const image = await (await call('GET', `/api/docker/images/${encodeURIComponent(id)}`)).json();
      if (state.selected && state.selected.id === id) setLogs(image.logs || '(no build logs yet)');
    } catch (e) {
      setLogs(`(could not load the build logs: ${e.message})`);
    }
  }
  function setLogs(text) {
    const pre = $('logs');
    const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 30;
    pre.textContent = text;
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
  function select(kind, id) {
    const changed = !state.selected || state.selected.id !== id;
    state.selected = { kind, id };
    if (changed) {
      state.requests = [];
      state.requestsFor = kind === 'container' ? id : null;
      state.request = null;
      renderRequests();
      setLogs(kind === 'container' ? '(loading logs…)' : '(loading build logs…)');
      state.buildLogsKey = null;
      $('try-result').textContent = '';
      $('try-body-out').textContent = '';
    }
    follow(kind === 'container' ? id : null);
    render();
  }
  function follow(id) {
    state.logsFor = id;
    if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify({ follow: id }));
  }

  // -- try it: the request fetchProxy makes (datagrok-api: fetch(`${root}/docker/containers/proxy/${id}${path}`))
  function tryPath() {
    const p = $('try-path').value.trim() || '/';
    return p.startsWith('/') ? p : `/${p}`;
  }
  $('try-path').addEventListener('input', () => renderPane());
  $('try-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const sel = state.selected;
    if (!sel || sel.kind !== 'container') return;
    const method = $('try-method').value;
    const init = { method, credentials: 'include' };
    if (method !== 'GET' && method !== 'DELETE' && $('try-body').value) init.body = $('try-body').value;
    $('try-result').textContent = 'sending…';
    const t0 = performance.now();
    try {
      const r = await fetch(`/api/docker/containers/proxy/${encodeURIComponent(sel.id)}${tryPath()}`, init);
      const body = await r.text();
      const ms = Math.round(performance.now() - t0);
      const cold = r.headers.get('x-grokemu-cold-start-ms');
      $('try-result').textContent = `${r.status} ${r.statusText} in ${ms} ms${cold ? ` (cold start ${cold} ms)` : ''}`;
      $('try-result').dataset.status = String(r.status);
      $('try-body-out').textContent = body.length > 20000 ? `${body.slice(0, 20000)}\n… (${body.length} characters)` : body;
    } catch (e) {
      $('try-result').textContent = `failed: ${e.message}`;
    }
  });
  $('copy-snippet').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('snippet').textContent);
      toast('Snippet copied', true);
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents($('snippet'));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      toast('Press Ctrl+C to copy the selected snippet', true);
    }
  });

  // -- the Requests tab: the request inspector's entries (GET /_grokemu/requests, docs/inspector.md), live ----
  // Credentials are redacted by the server before an entry exists: replay sends the recorded request again through
  // fetchProxy with this page's own session (the auth cookie), and the curl line names $GROKEMU_TOKEN instead.
  function showTab(tab) {
    for (const [name, panel] of [['logs', 'logs-section'], ['requests', 'requests-section']]) {
      const selected = name === tab;
      const button = $(`tab-${name}`);
      button.setAttribute('aria-selected', selected ? 'true' : 'false');
      button.tabIndex = selected ? 0 : -1;
      $(panel).hidden = !selected;
    }
  }
  function pickTab(tab) {
    state.tab = tab;
    showTab(tab);
    if (tab === 'requests') loadRequests();
  }
  $('tab-logs').addEventListener('click', () => pickTab('logs'));
  $('tab-requests').addEventListener('click', () => pickTab('requests'));
  $('pane-tabs').addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowLeft' && ev.key !== 'ArrowRight') return;
    const next = state.tab === 'logs' ? 'requests' : 'logs';
    pickTab(next);
    $(`tab-${next}`).focus();
    ev.preventDefault();
  });
  async function loadRequests() {
    const id = state.requestsFor;
    if (!id) return;
    try {
      const got = await (await call('GET', `/_grokemu/requests?container=${encodeURIComponent(id)}&limit=50`)).json();
      if (state.requestsFor === id) { state.requests = got; renderRequests(); }
    } catch (e) {
      toast(`Requests: ${e.message}`);
    }
  }
  const RED = '[redacted]';
  function renderRequests() {
    const rows = state.requests.map((e) => {
      const tr = el('tr', { 'data-id': String(e.id), tabindex: '0',
        'aria-selected': state.request === e.id ? 'true' : 'false' },
      ...[clock(e.time), e.kind, e.method, e.path, String(e.status ?? ''), e.durationMs === null ? (e.open ? 'open' : '') : `${Math.round(e.durationMs)} ms`]
        .map((c) => el('td', { text: c })));
      return tr;
    });
    $('requests').tBodies[0].replaceChildren(...rows);
    $('requests-empty').hidden = rows.length > 0;
    $('requests').hidden = rows.length === 0;
    renderRequest();
  }
  const headerText = (headers) => (headers || []).map(([k, v]) => `${k}: ${v}`).join('\n');
  function bodyText(data, encoding, size, what) {
    if (data === null || data === undefined) return size ? `(${size} bytes, not shown)` : '(none)';
    return encoding === 'hex' ? `(hex) ${data}` : data;
  }
  function renderRequest() {
    const e = state.requests.find((x) => x.id === state.request);
    $('request-detail').hidden = !e;
    if (!e) return;
    $('request-title').textContent = `${e.method} ${e.path} → ${e.status ?? ''}${e.error ? ` (${e.error})` : ''}`;
    $('request-headers').textContent = headerText(e.requestHeaders);
    $('request-body').textContent = bodyText(e.requestBody, e.requestBodyEncoding, e.requestSize);
    $('response-headers').textContent = headerText(e.responseHeaders);
    let response = bodyText(e.responseBody, e.responseBodyEncoding, e.responseSize);
    if (e.kind === 'websocket') {
      response = `${e.framesSent} frames sent, ${e.framesReceived} received${e.closeCode ? `, closed ${e.closeCode} by ${e.closedBy}` : ''}\n`
        + e.frames.map((f) => `${f.direction === 'sent' ? '→' : '←'} ${f.opcode} ${f.size} B ${f.data ?? ''}`).join('\n');
    }
    $('response-body').textContent = response;
    $('response-body-heading').textContent = e.kind === 'websocket' ? 'Frames' : 'Response body';
    $('replay').disabled = !replayable(e);
    $('replay').title = replayable(e) ? '' : 'Only an HTTP request whose whole body was recorded can be replayed';
    $('curl').textContent = asCurl(e);
  }
  function requestBytes(e) {
    if (!e.requestBody) return new Uint8Array(0);
    if (e.requestBodyEncoding === 'hex') return new Uint8Array(e.requestBody.match(/../g).map((h) => parseInt(h, 16)));
    return new TextEncoder().encode(e.requestBody);
  }
  const replayable = (e) => e.kind === 'http' && requestBytes(e).length === e.requestSize;
  // headers a page cannot or must not set again: the browser's own, the hop's, the credentials (redacted anyway)
  const NOT_REPLAYED = new Set(['host', 'content-length', 'connection', 'cookie', 'authorization', 'origin', 'referer',
    'accept-encoding', 'user-agent', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'expect', 'x-user-api-key']);
  function replayHeaders(e) {
    const out = [];
    for (const [k, v] of e.requestHeaders || []) {
      const l = k.toLowerCase();
      if (v === RED || NOT_REPLAYED.has(l) || l.startsWith('sec-') || l.startsWith('proxy-') || l.startsWith('x-forwarded-')) continue;
      out.push([k, v]);
    }
    return out;
  }
  const proxyUrl = (e) => `/api/docker/containers/proxy/${encodeURIComponent(e.container)}${e.path}`;
  $('replay').addEventListener('click', async () => {
    const e = state.requests.find((x) => x.id === state.request);
    if (!e || !replayable(e)) return;
    const init = { method: e.method, headers: replayHeaders(e), credentials: 'same-origin' };
    if (e.requestSize) init.body = requestBytes(e);
    $('replay-result').textContent = 'sending…';
    const t0 = performance.now();
    try {
      const r = await fetch(proxyUrl(e), init);
      await r.arrayBuffer();
      $('replay-result').textContent = `replayed: ${r.status} ${r.statusText} in ${Math.round(performance.now() - t0)} ms`;
      $('replay-result').dataset.status = String(r.status);
      loadRequests();
    } catch (err) {
      $('replay-result').textContent = `replay failed: ${err.message}`;
    }
  });
  const shellQuote = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;
  function asCurl(e) {
    if (e.kind !== 'http') return `(a ${e.kind} entry: no curl line)`;
    const parts = [`curl -X ${e.method} ${shellQuote(location.origin + proxyUrl(e))}`, '-H "Authorization: $GROKEMU_TOKEN"'];
    for (const [k, v] of replayHeaders(e)) parts.push(`-H ${shellQuote(`${k}: ${v}`)}`);
    let line = parts.join(' ');
    if (e.requestBody) {
      line = e.requestBodyEncoding === 'hex'
        ? `echo ${e.requestBody} | xxd -r -p | ${line} --data-binary @-`
        : `${line} --data-binary ${shellQuote(e.requestBody)}`;
    }
    if (!replayable(e) && e.requestSize) line += `  # the body was ${e.requestSize} bytes: only its first ${requestBytes(e).length} were recorded`;
    return line;
  }
  $('copy-curl').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('curl').textContent);
      toast('curl command copied', true);
    } catch (err) {
      const range = document.createRange();
      range.selectNodeContents($('curl'));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      toast('Press Ctrl+C to copy the selected curl command', true);
    }
  });
  function pickRequest(tr) {
    if (!tr) return;
    state.request = Number(tr.dataset.id);
    for (const row of $('requests').tBodies[0].rows) row.setAttribute('aria-selected', row === tr ? 'true' : 'false');
    renderRequest();
  }
  $('requests').addEventListener('click', (ev) => pickRequest(ev.target.closest('tr[data-id]')));
  $('requests').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') { pickRequest(ev.target.closest('tr[data-id]')); ev.preventDefault(); }
  });

  // -- the context menu ------------------------------------------------------------------------------------
  const menu = $('menu');
  let menuReturn = null;
  function menuItems(kind, x) {
    if (kind === 'container') {
      return [
        ['Start', isStopped(x), () => act(x, 'Start', 'GET', `/api/docker/containers/${x.id}/run?awaitStart=true`)],
        ['Stop', !isStopped(x), () => act(x, 'Stop', 'GET', `/api/docker/containers/${x.id}/stop?awaitStop=true`)],
        ['Delete', true, () => {
          if (window.confirm(`Delete container ${x.name}? It is stopped and removed.`)) {
            act(x, 'Delete', 'DELETE', `/api/docker/containers/${x.id}`);
          }
        }],
      ];
    }
    const context = (x.grokemu || {}).hasBuildContext;
    return [
      [context ? 'Rebuild' : 'Revalidate', true, () => act(x, 'Rebuild', 'POST', `/_grokemu/images/${x.id}/rebuild`)],
      ['Download context', !!context, () => download(x)],
    ];
  }
  function openMenu(cardNode, at) {
    const kind = cardNode.dataset.kind;
    const x = find(kind, cardNode.dataset.id);
    if (!x) return;
    select(kind, x.id);
    menuReturn = cardNode.dataset.id;
    menu.replaceChildren(...menuItems(kind, x).map(([label, enabled, run]) => {
      const b = el('button', { type: 'button', role: 'menuitem', tabindex: '-1', 'aria-disabled': enabled ? null : 'true',
        text: label });
      b.addEventListener('click', () => { if (!enabled) return; closeMenu(); run(); });
      return b;
    }));
    menu.hidden = false;
    const r = menu.getBoundingClientRect();
    menu.style.left = `${Math.max(4, Math.min(at.x, innerWidth - r.width - 4))}px`;
    menu.style.top = `${Math.max(4, Math.min(at.y, innerHeight - r.height - 4))}px`;
    menu.querySelector('[role=menuitem]').focus();
  }
  function closeMenu(refocus) {
    if (menu.hidden) return;
    menu.hidden = true;
    if (refocus && menuReturn) {
      const b = document.querySelector(`.card[data-id="${CSS.escape(menuReturn)}"] .more`);
      if (b) b.focus();
    }
  }
  menu.addEventListener('keydown', (ev) => {
    const items = [...menu.querySelectorAll('[role=menuitem]')];
    const i = items.indexOf(document.activeElement);
    if (ev.key === 'ArrowDown') items[(i + 1) % items.length].focus();
    else if (ev.key === 'ArrowUp') items[(i - 1 + items.length) % items.length].focus();
    else if (ev.key === 'Home') items[0].focus();
    else if (ev.key === 'End') items[items.length - 1].focus();
    else if (ev.key === 'Escape' || ev.key === 'Tab') closeMenu(true);
    else return;
    ev.preventDefault();
  });
  document.addEventListener('click', (ev) => { if (!menu.contains(ev.target)) closeMenu(false); });
  window.addEventListener('blur', () => closeMenu(false));

  for (const host of [$('containers'), $('images')]) {
    host.addEventListener('click', (ev) => {
      const c = ev.target.closest('.card');
      if (!c) return;
      if (ev.target.closest('.more')) {
        ev.stopPropagation();
        const r = ev.target.getBoundingClientRect();
        openMenu(c, { x: r.left, y: r.bottom + 2 });
      } else {
        select(c.dataset.kind, c.dataset.id);
      }
    });
    host.addEventListener('contextmenu', (ev) => {
      const c = ev.target.closest('.card');
      if (!c) return;
      ev.preventDefault();
      openMenu(c, { x: ev.clientX, y: ev.clientY });
    });
    host.addEventListener('keydown', (ev) => {
      const c = ev.target.closest('.card');
      if (!c) return;
      if ((ev.key === 'F10' && ev.shiftKey) || ev.key === 'ContextMenu') {
        ev.preventDefault();
        const r = c.getBoundingClientRect();
        openMenu(c, { x: r.left + 20, y: r.top + 20 });
      }
    });
  }

  async function act(x, label, method, url) {
    state.busy.add(x.id);
    render();
    try {
      await call(method, url);
      toast(`${label} ${x.name}: done`, true);
      if (label === 'Delete' && state.selected && state.selected.id === x.id) { state.selected = null; follow(null); }
    } catch (e) {
      toast(`${label} ${x.name} failed: ${e.message}`);
    } finally {
      state.busy.delete(x.id);
      render();
    }
  }
  function download(x) {
    const a = el('a', { href: `/_grokemu/images/${encodeURIComponent(x.id)}/context.zip`, download: '' });
    document.body.append(a);
    a.click();
    a.remove();
  }

  // -- search: the API's own `text` filter, so the semantics are the same (domain/query.py) -----------------
  let searchTimer = null;
  let searchSeq = 0;
  async function applySearch() {
    const text = $('search').value.trim();
    const seq = ++searchSeq;
    if (!text) { state.filter = null; render(); return; }
    // the Dart client encodes `text` twice and the server decodes it twice (docs/datagrok-api.md §4.5)
    const q = encodeURIComponent(encodeURIComponent(text));
    try {
      const [cs, is] = await Promise.all([`/api/docker/containers?text=${q}`, `/api/docker/images?text=${q}`]
        .map(async (u) => (await call('GET', u)).json()));
      if (seq !== searchSeq) return;
      state.filter = { containers: new Set(cs.map((c) => c.id)), images: new Set(is.map((i) => i.id)) };
    } catch (e) {
      if (seq !== searchSeq) return;
      state.filter = { containers: new Set(), images: new Set() };
      toast(`Search: ${e.message}`);
    }
    render();
  }
  $('search').addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(applySearch, 200); });

  // -- the live feed ---------------------------------------------------------------------------------------
  function applySnapshot(s) {
    state.offset = s.now - Date.now() / 1000;
    state.containers = s.containers;
    state.images = s.images;
    if (s.docker) {  // the daemon going away and coming back (services/spawner/watch.py `docker_state`)
      $('docker-state').textContent = s.docker.reachable ? 'Docker reachable' : 'Docker unreachable';
      $('docker-banner').textContent = s.docker.reachable ? '' : s.docker.message;
      $('docker-banner').hidden = s.docker.reachable;
      document.body.dataset.docker = s.docker.reachable ? 'reachable' : 'unreachable';
    }
    if (state.selected && !find(state.selected.kind, state.selected.id)) { state.selected = null; follow(null); }
    document.body.dataset.updated = String(Date.now());
    if (state.filter) applySearch(); else render();
  }
  function setLive(text, banner) {
    $('live-state').textContent = text;
    $('live-banner').textContent = banner || '';
    $('live-banner').hidden = !banner;
    document.body.dataset.live = banner ? 'stale' : 'live';
  }
  function connect() {
    if (state.ended) return;
    const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/_grokemu/live`);
    state.socket = ws;
    ws.onopen = () => {
      state.retry = 0;
      setLive('live');
      if (state.logsFor) ws.send(JSON.stringify({ follow: state.logsFor }));
    };
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.type === 'snapshot') applySnapshot(m);
      else if (m.type === 'logs' && state.selected && m.id === state.selected.id) setLogs(m.text || '(no output yet)');
      else if (m.type === 'requests' && m.id === state.requestsFor) { state.requests = m.entries; renderRequests(); }
      else if (m.type === 'bye') { state.ended = true; setLive('signed out', `${m.reason} Reload the page.`); }
    };
    ws.onclose = () => {
      if (state.socket !== ws) return;
      state.socket = null;
      if (state.ended) return;
      const wait = Math.min(10, 2 ** state.retry++);
      setLive('offline', `Live updates lost: reconnecting in ${wait} s. What you see may be out of date.`);
      setTimeout(async () => {
        try {
          const r = await fetch('/api/users/current', { credentials: 'same-origin' });
          if (r.status === 401) {
            state.ended = true;
            setLive('signed out', 'Your session ended: reload the page to sign in again. What you see is out of date.');
            return;
          }
        } catch (e) { /* grokemu is down: keep trying */ }
        connect();
      }, wait * 1000);
    };
  }

  // countdowns and "… ago" texts move every second without a message
  setInterval(() => {
    for (const n of document.querySelectorAll('[data-field=countdown]')) {
      const c = find('container', n.closest('.card').dataset.id);
      if (c) n.textContent = countdownText(c);
    }
  }, 1000);

  applySnapshot(JSON.parse($('snapshot').textContent));
  connect();
}());
