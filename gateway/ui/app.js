// toolgate operator dashboard: plain JavaScript, no build step, no
// dependency. It talks only to the management API with the session
// cookie (HttpOnly: this script never sees it) and sends the session's
// CSRF token on every change. Nothing secret is kept in a URL or in
// storage; a new key's secret is shown once and dropped from the page.
'use strict';

const POLL_MS = 2000;
const KEYS_SHOWN = 200;
const S = { role: null, csrf: null, timer: null, refresh: null, range: 'hour' };
const OUTCOMES = ['allowed', 'denied', 'quota_exceeded', 'spend_cap_exceeded', 'insufficient_credits',
  'unauthenticated', 'payment_required', 'payment_invalid', 'settle_failed', 'upstream_error',
  'unknown_tool', 'method_not_allowed', 'store_unavailable', 'payment_unavailable'];
const CLASS_ORDER = (c) => { const i = ['light', 'medium', 'heavy'].indexOf(c); return i < 0 ? 9 : i; };
const COLORS = {
  allowed: '#2e8b57', denied: '#c0392b', quota_exceeded: '#e67e22', spend_cap_exceeded: '#8e44ad',
  insufficient_credits: '#d35400', unauthenticated: '#7f8c8d', payment_required: '#2980b9',
  payment_invalid: '#16a085', settle_failed: '#f1c40f', upstream_error: '#34495e', unknown_tool: '#95a5a6',
};

// h builds an element: attrs (class, text, style, svg: true for the SVG
// namespace, on: {event: fn}, others as attributes) and children (nodes, strings, arrays; null skipped). Text
// always goes in as text, never as HTML.
function h(tag, attrs, ...kids) {
  const el = attrs && attrs.svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false || k === 'svg') continue;
    if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'text') el.textContent = v;
    else if (k === 'style') el.style.cssText = v; // CSSOM: allowed by the page's CSP, a style attribute is not
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  const add = (c) => {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) c.forEach(add);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  };
  kids.forEach(add);
  return el;
}
const $ = (id) => document.getElementById(id);
const usd = (v) => v === null || v === undefined ? '—' : '$' + Number(v).toFixed(Math.abs(v) < 1 && v !== 0 ? 4 : 2);
const when = (t) => t ? new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—';
const readOnly = () => S.role !== 'admin';
function announce(msg) { $('status').textContent = msg; }

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = S.csrf || '';
  let r;
  try {
    r = await fetch(path, { method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)) });
  } catch (e) {
    return { status: 0, ok: false, data: { error: 'Gateway unreachable' } };
  }
  const text = await r.text();
  let data = null;
  if ((r.headers.get('Content-Type') || '').includes('ndjson')) {
    data = text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  } else if (text) {
    try { data = JSON.parse(text); } catch (e) { data = { error: text }; }
  }
  if (r.status === 401 && path !== '/ui/session') showSignIn('Your session has ended; sign in again.');
  return { status: r.status, ok: r.ok, data };
}
const errText = (r) => (r.data && r.data.error) || ('HTTP ' + r.status);

// ---- session ----

function showSignIn(msg) {
  clearTimeout(S.timer);
  S.role = S.csrf = S.refresh = null;
  $('main').replaceChildren();
  $('nav').hidden = $('who').hidden = $('signout').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = msg || '';
  $('token').focus();
}

function showApp(sess) {
  S.role = sess.role;
  S.csrf = sess.csrf_token;
  $('signin').hidden = true;
  $('nav').hidden = $('signout').hidden = $('who').hidden = false;
  $('who').textContent = sess.role === 'admin' ? 'admin' : 'viewer (read-only)';
  route();
}

async function boot() {
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const tok = $('token');
    const r = await api('POST', '/ui/session', { token: tok.value });
    tok.value = '';
    if (!r.ok) { $('signin-error').textContent = errText(r); tok.focus(); return; }
    showApp(r.data);
    $('main').focus();
  });
  $('signout').addEventListener('click', async () => {
    await api('DELETE', '/ui/session');
    showSignIn('Signed out.');
  });
  window.addEventListener('hashchange', () => { if (S.role) route(); });
  const r = await api('GET', '/ui/session');
  if (r.ok) showApp(r.data); else showSignIn('');
}

// ---- routing and live refresh ----

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const name = VIEWS[parts[0]] ? parts[0] : 'overview';
  const arg = decodeURIComponent(parts.slice(1).join('/'));
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  clearTimeout(S.timer);
  const main = $('main');
  main.replaceChildren();
  document.title = 'toolgate · ' + name;
  S.refresh = VIEWS[name](main, arg);
  // Keyboard users land in the new view, not back in the navigation.
  if (!main.contains(document.activeElement)) main.focus();
  schedule();
}

function schedule() {
  clearTimeout(S.timer);
  S.timer = setTimeout(async () => {
    if (S.refresh && !document.hidden) {
      try { await S.refresh(); } catch (e) { console.warn('refresh', e); }
    }
    if (S.role) schedule();
  }, POLL_MS);
}

// ---- small widgets ----

function table(cols, rows, attrs) {
  return h('table', attrs || {},
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, 'None'))));
}
function field(label, input) {
  input.id = input.id || 'f-' + Math.random().toString(36).slice(2);
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input);
}
function kpi(label, value, id) {
  return h('div', { class: 'card kpi' }, h('div', { class: 'v', id }, value), h('div', { class: 'l' }, label));
}
function principalLink(p) {
  if (!p.startsWith('key:') && !p.startsWith('wallet:')) return h('span', {}, p);
  const short = p.startsWith('wallet:') ? p.slice(0, 14) + '…' + p.slice(-4) : p;
  return h('a', { href: '#/principals/' + encodeURIComponent(p), title: p }, short);
}
function outcomeBadge(o) {
  return h('span', { class: 'badge ' + (o === 'allowed' ? 'allowed' : 'refused') }, o);
}

// chart draws calls per step, stacked by outcome, as SVG bars.
function chart(series, stepS) {
  const n = series.points;
  const names = OUTCOMES.filter((o) => series.by_outcome[o]).concat(
    Object.keys(series.by_outcome).filter((o) => !OUTCOMES.includes(o)));
  let peak = 1;
  const totals = {};
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (const o of names) s += series.by_outcome[o][i];
    peak = Math.max(peak, s);
  }
  for (const o of names) totals[o] = series.by_outcome[o].reduce((a, b) => a + b, 0);
  const W = n, H = 100;
  const label = 'Calls per ' + (stepS === 60 ? 'minute' : (stepS / 60) + ' minutes') + ' by outcome: ' +
    (names.length ? names.map((o) => totals[o] + ' ' + o).join(', ') : 'no calls');
  const svg = h('svg', { svg: true, viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label });
  for (let i = 0; i < n; i++) {
    let y = H;
    for (const o of names) {
      const v = series.by_outcome[o][i];
      if (!v) continue;
      const bh = (v / peak) * (H - 4);
      y -= bh;
      svg.append(h('rect', { svg: true, x: i + 0.08, y, width: 0.84, height: bh, fill: COLORS[o] || '#555' }));
    }
  }
  const start = new Date(series.start), end = new Date(start.getTime() + n * stepS * 1000);
  return h('div', {},
    h('div', { class: 'row muted' }, h('span', {}, 'peak ' + peak + ' per step'),
      h('span', { style: null }, when(start) + ' → ' + when(end))),
    svg,
    h('ul', { class: 'legend', 'aria-label': 'Legend' }, names.map((o) =>
      h('li', {}, h('i', { style: 'background:' + (COLORS[o] || '#555') }), o + ' ' + totals[o]))));
}

// ---- Overview ----

function viewOverview(root) {
  const radios = ['hour', 'day'].map((r) => {
    const inp = h('input', { type: 'radio', name: 'range', id: 'range-' + r, value: r, checked: S.range === r,
      on: { change: () => { S.range = r; refresh(); } } });
    return h('span', {}, inp, h('label', { for: 'range-' + r }, r === 'hour' ? ' Last hour ' : ' Last day '));
  });
  const kpis = h('div', { class: 'kpis', id: 'kpis' });
  const clusterNote = h('p', { id: 'cluster-note', role: 'status' });
  const chartBox = h('div', { class: 'card wide chart', id: 'chart' });
  const denials = h('div', { class: 'card', id: 'denials' });
  const bySpend = h('div', { class: 'card', id: 'top-spend' });
  const byDenials = h('div', { class: 'card', id: 'top-denials' });
  const ledger = h('div', { class: 'card', id: 'ledger' });
  const tools = h('div', { class: 'card', id: 'tool-stats' });
  root.append(h('h1', {}, 'Overview'),
    h('fieldset', { class: 'row' }, h('legend', { class: 'sr-only' }, 'Range'), radios),
    clusterNote, kpis, h('div', { class: 'grid' }, chartBox, denials, bySpend, byDenials, tools, ledger));

  async function verify(btn) {
    btn.disabled = true;
    const r = await api('GET', '/audit/verify');
    btn.disabled = false;
    announce(r.ok && r.data.ok ? 'Ledger verified' : 'Ledger verification failed');
    refresh();
  }
  async function refresh() {
    const q = S.range === 'hour' ? 'since=1h&step=1m' : 'since=24h&step=15m';
    const r = await api('GET', '/stats?' + q + '&top=10');
    if (!r.ok) return;
    const s = r.data, t = s.totals;
    kpis.replaceChildren(kpi('Calls', t.calls, 'kpi-calls'), kpi('Denied', t.denied, 'kpi-denied'),
      kpi('Billed', usd(t.spend_usd), 'kpi-spend'), kpi('x402 revenue', usd(t.x402_revenue_usd), 'kpi-revenue'),
      kpi('Ledger head', '#' + s.ledger.head_seq, 'kpi-head'));
    // In cluster mode the figures are every node's, summed; a node that
    // did not answer is named, its calls missing from the sums.
    const answered = Object.keys(s.nodes || {}), missing = Object.entries(s.unreachable || {});
    clusterNote.replaceChildren(answered.length + missing.length === 0 ? '' :
      h('span', { class: missing.length ? 'bad' : 'muted' },
        `Cluster: figures of ${answered.length} of ${answered.length + missing.length} nodes`,
        missing.length ? ' — not answering, so not counted: ' + missing.map(([n, why]) => `${n} (${why})`).join(', ') : ''));
    chartBox.replaceChildren(h('h2', {}, S.range === 'hour' ? 'Calls per minute, last hour' : 'Calls per 15 minutes, last day'),
      chart(s.series, s.step_s));
    const reasons = Object.entries(t.denials_by_reason).sort((a, b) => b[1] - a[1]);
    denials.replaceChildren(h('h2', {}, 'Denials by reason'), table([{ label: 'Reason' }, { label: 'Calls', num: true }],
      reasons.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, v)))));
    const prow = (p) => h('tr', {}, h('td', {}, principalLink(p.principal)), h('td', { class: 'num' }, usd(p.spend_usd)),
      h('td', { class: 'num' }, p.denied), h('td', { class: 'num' }, p.calls));
    const pcols = [{ label: 'Principal' }, { label: 'Spend', num: true }, { label: 'Denied', num: true }, { label: 'Calls', num: true }];
    bySpend.replaceChildren(h('h2', {}, 'Top principals by spend'), table(pcols, s.top_principals.by_spend.map(prow)));
    byDenials.replaceChildren(h('h2', {}, 'Top principals by denials'), table(pcols, s.top_principals.by_denials.map(prow)));
    tools.replaceChildren(h('h2', {}, 'Calls by tool'), table([{ label: 'Tool' }, { label: 'Calls', num: true },
      { label: 'Denied', num: true }, { label: 'Billed', num: true }],
    s.tools.map((x) => h('tr', {}, h('td', {}, x.tool), h('td', { class: 'num' }, x.calls),
      h('td', { class: 'num' }, x.denied), h('td', { class: 'num' }, usd(x.spend_usd))))));
    const lv = s.ledger.last_verification;
    const btn = h('button', { type: 'button', class: 'secondary', id: 'verify-now', on: { click: (e) => verify(e.target) } }, 'Verify now');
    ledger.replaceChildren(h('h2', {}, 'Ledger'),
      h('p', {}, 'Head ', h('code', {}, '#' + s.ledger.head_seq + ' ' + (s.ledger.head_hash || '').slice(0, 16) + '…')),
      h('p', { id: 'last-verification' }, 'Last verification: ', lv
        ? h('span', { class: lv.ok ? 'ok' : 'bad' }, lv.ok ? `intact, ${lv.records} records, ${lv.checkpoints} checkpoints` :
          `broken at seq ${lv.first_bad_seq}: ${lv.reason}`, ' (' + when(lv.at) + ')')
        : h('span', { class: 'muted' }, 'not run since the gateway started')), btn);
  }
  refresh();
  return refresh;
}

// ---- Principals ----

function viewPrincipals(root, arg) {
  const search = h('input', { type: 'search', id: 'principal-search', placeholder: 'key id, name or 0x wallet',
    on: { input: () => { renderList(); clearTimeout(typing); typing = setTimeout(refreshList, 250); } } });
  let typing = null;
  const list = h('div', { class: 'card wide', id: 'principal-list' });
  const detail = h('div', { class: 'card wide', id: 'principal-detail' });
  root.append(h('h1', {}, 'Principals'), h('div', { class: 'row' }, field('Search principals', search)),
    arg ? detail : '', list);
  let all = [];

  function renderList() {
    const q = search.value.trim().toLowerCase();
    let rows = all.filter((p) => !q || p.principal.toLowerCase().includes(q) || (p.name || '').toLowerCase().includes(q));
    if (/^0x[0-9a-f]{40}$/.test(q) && !rows.length) rows = [{ principal: 'wallet:' + q, name: '', status: '' }];
    list.replaceChildren(h('h2', {}, 'Keys, wallets and callers seen today'),
      table([{ label: 'Principal' }, { label: 'Name' }, { label: 'Status' }, { label: 'Spend (24h)', num: true }, { label: 'Denied (24h)', num: true }],
        rows.slice(0, 200).map((p) => h('tr', { class: p.principal === arg ? 'selected' : null }, h('td', {}, principalLink(p.principal)),
          h('td', {}, p.name || ''), h('td', {}, p.status || ''), h('td', { class: 'num' }, usd(p.spend)), h('td', { class: 'num' }, p.denied || 0)))));
  }
  async function refreshList() {
    const q = encodeURIComponent(search.value.trim());
    const [keys, st] = await Promise.all([api('GET', '/credits/keys?order=desc&limit=200&q=' + q), api('GET', '/stats?since=24h&step=60m&top=200')]);
    const m = new Map();
    if (keys.ok) for (const k of keys.data.keys) m.set('key:' + k.key_id, { principal: 'key:' + k.key_id, name: k.name, status: k.status });
    if (st.ok) {
      for (const p of st.data.top_principals.by_spend.concat(st.data.top_principals.by_denials)) {
        const e = m.get(p.principal) || { principal: p.principal };
        e.spend = p.spend_usd; e.denied = p.denied;
        m.set(p.principal, e);
      }
    }
    all = [...m.values()].sort((a, b) => a.principal.localeCompare(b.principal));
    renderList();
  }
  async function refreshDetail() {
    let q = null;
    if (arg.startsWith('key:')) q = 'key_id=' + encodeURIComponent(arg.slice(4));
    else if (arg.startsWith('wallet:')) q = 'wallet=' + encodeURIComponent(arg.slice(7));
    else if (arg.includes(':')) q = 'principal=' + encodeURIComponent(arg); // OAuth subjects (oidc:<alias>:<sub>)
    const [st, calls] = await Promise.all([q ? api('GET', '/authorization/status?' + q) : null,
      api('GET', '/audit?type=call&order=desc&limit=10&principal=' + encodeURIComponent(arg))]);
    const parts = [h('h2', {}, arg)];
    const left = [], right = [], below = [];
    if (st && !st.ok) parts.push(h('p', { class: 'error' }, errText(st)));
    if (st && st.ok) {
      const s = st.data;
      parts.push(h('p', {}, 'Tier ', h('code', {}, s.tier), s.status ? [' · status ', h('strong', {}, s.status)] : null,
        s.key ? [' · ', h('code', {}, s.key)] : null));
      const prov = s.provenance || {};
      left.push(h('h2', {}, 'Effective policy'), table([{ label: 'Field' }, { label: 'Value' }, { label: 'From' }],
        Object.entries(s.policy).map(([k, v]) => h('tr', { 'data-field': k }, h('td', {}, h('code', {}, k)),
          h('td', {}, h('code', {}, JSON.stringify(v))), h('td', { class: 'from' }, prov[k] || '')))));
      right.push(h('h2', {}, 'Quota windows (60 s)'), table([{ label: 'Rate class' }, { label: 'Used', num: true }, { label: 'Limit', num: true }, { label: 'Resets in', num: true }],
        Object.entries(s.quota_window).sort((a, b) => CLASS_ORDER(a[0]) - CLASS_ORDER(b[0])).map(([c, w]) => h('tr', { 'data-class': c }, h('td', {}, c), h('td', { class: 'num used' }, w.used),
          h('td', { class: 'num' }, w.limit === null ? 'unlimited' : w.limit), h('td', { class: 'num' }, w.reset_in_s + ' s'))), { id: 'quota' }));
      const cap = s.spend_limit_usd, spent = s.spend_today_usd;
      const pct = cap ? Math.min(100, (spent / cap) * 100) : 0;
      right.push(h('h2', {}, 'Spend today'), h('div', { class: 'row' },
        cap === null ? h('span', {}, usd(spent) + ' (no cap)') : [
          h('div', { class: 'bar' + (spent >= cap ? ' over' : ''), role: 'meter', 'aria-label': 'Spend today against the daily cap',
            'aria-valuemin': 0, 'aria-valuemax': cap, 'aria-valuenow': spent, id: 'spend-bar' }, h('span', { style: 'width:' + pct.toFixed(1) + '%' })),
          h('span', {}, usd(spent) + ' of ' + usd(cap) + ' · resets ' + when(s.spend_reset_at))],
        s.balance_usd !== undefined ? h('span', { id: 'credits' }, ' · credits ' + usd(s.balance_usd)) : null));
      below.push(h('div', {}, h('h2', {}, 'Recent denials'), table([{ label: 'At' }, { label: 'Tool' }, { label: 'Reason' }, { label: 'Status', num: true }],
        s.recent_denials.map((d) => h('tr', {}, h('td', {}, when(d.at)), h('td', {}, d.tool), h('td', {}, d.reason), h('td', { class: 'num' }, d.status))), { id: 'recent-denials' })));
    }
    if (calls.ok) {
      below.push(h('div', {}, h('h2', {}, 'Last calls'), table([{ label: 'Seq', num: true }, { label: 'At' }, { label: 'Tool' }, { label: 'Outcome' }, { label: 'Cost', num: true }],
        calls.data.map((c) => h('tr', {}, h('td', { class: 'num' }, c.seq), h('td', {}, when(c.at)), h('td', {}, c.tool || ''),
          h('td', {}, outcomeBadge(c.outcome), c.reason ? ' ' + c.reason : ''), h('td', { class: 'num' }, usd((c.cost_micros || 0) / 1e6)))), { id: 'last-calls' })));
    }
    detail.replaceChildren(...parts, h('div', { class: 'grid' }, h('div', {}, left), h('div', {}, right)), h('div', { class: 'grid' }, below));
  }
  async function refresh() { await Promise.all([refreshList(), arg ? refreshDetail() : null]); }
  refresh();
  search.focus();
  return refresh;
}

// ---- policy editing with the validator's problems at their JSON paths ----

// lineOf finds the line of a JSON path's last key in text (best effort).
function lineOf(text, path) {
  const keys = path.replace(/^\$\.?/, '').replace(/^policy\.?/, '').split(/[.[\]]/).filter(Boolean);
  let from = 0;
  for (const k of keys) {
    if (/^\d+$/.test(k)) continue;
    const i = text.indexOf('"' + k + '"', from);
    if (i < 0) return 0;
    from = i;
  }
  return keys.length ? text.slice(0, from).split('\n').length : 0;
}

// showProblems lists problems under a textarea and marks it invalid.
function showProblems(ul, ta, problems, text) {
  ul.replaceChildren(...problems.map((p) => {
    const line = text ? lineOf(text, p.path) : 0;
    return h('li', {}, 'at ', h('code', { class: 'path' }, p.path), ': ' + p.message, line ? ` (line ${line})` : '');
  }));
  ta.setAttribute('aria-invalid', problems.length ? 'true' : 'false');
}

// parsePolicy reads a textarea's JSON; a syntax error is a problem at "$".
function parsePolicy(text, path) {
  if (!text.trim()) return { value: undefined, problems: [] };
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return { problems: [{ path, message: 'must be a JSON object' }] };
    return { value: v, problems: [] };
  } catch (e) {
    return { problems: [{ path, message: 'not valid JSON: ' + e.message }] };
  }
}

function policyForm(ta) {
  const inputs = {
    allow_tools: h('input', { type: 'text', placeholder: 'email/*, pack/research' }),
    deny_tools: h('input', { type: 'text', placeholder: 'code_execute' }),
    light: h('input', { type: 'number', min: 0 }), medium: h('input', { type: 'number', min: 0 }), heavy: h('input', { type: 'number', min: 0 }),
    daily_spend_cap_usd: h('input', { type: 'text', inputmode: 'decimal' }),
    mode: h('select', {}, h('option', { value: '' }, '(inherit)'), h('option', { value: 'open' }, 'open'), h('option', { value: 'strict' }, 'strict')),
  };
  const apply = () => {
    let cur = {};
    try { cur = ta.value.trim() ? JSON.parse(ta.value) : {}; } catch (e) { return; }
    const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
    if (inputs.allow_tools.value.trim()) cur.allow_tools = list(inputs.allow_tools.value);
    if (inputs.deny_tools.value.trim()) cur.deny_tools = list(inputs.deny_tools.value);
    for (const c of ['light', 'medium', 'heavy']) {
      if (inputs[c].value !== '') { cur.rate_class_quota = cur.rate_class_quota || {}; cur.rate_class_quota[c] = Number(inputs[c].value); }
    }
    if (inputs.daily_spend_cap_usd.value.trim()) cur.daily_spend_cap_usd = inputs.daily_spend_cap_usd.value.trim() === 'none' ? null : Number(inputs.daily_spend_cap_usd.value);
    if (inputs.mode.value) cur.mode = inputs.mode.value;
    ta.value = JSON.stringify(cur, null, 2);
  };
  return h('details', {}, h('summary', {}, 'Edit as a form'),
    h('div', { class: 'row' }, field('Allow tools (comma-separated)', inputs.allow_tools), field('Deny tools', inputs.deny_tools),
      field('Light / min', inputs.light), field('Medium / min', inputs.medium), field('Heavy / min', inputs.heavy),
      field('Daily cap USD ("none": no cap)', inputs.daily_spend_cap_usd), field('Mode', inputs.mode),
      h('button', { type: 'button', class: 'secondary', on: { click: apply } }, 'Apply to JSON')));
}

// ---- Keys ----

function viewKeys(root) {
  const ro = readOnly();
  const name = h('input', { type: 'text', id: 'new-name', maxlength: 200 });
  const expires = h('input', { type: 'datetime-local', id: 'new-expires' });
  const credits = h('input', { type: 'text', inputmode: 'decimal', id: 'new-credits', placeholder: '0.00' });
  const pol = h('textarea', { id: 'new-policy', 'aria-describedby': 'new-policy-problems', spellcheck: 'false',
    placeholder: '{"deny_tools": ["code_execute"], "rate_class_quota": {"heavy": 5}}' });
  const probs = h('ul', { class: 'problems', id: 'new-policy-problems', 'aria-live': 'polite' });
  const formErr = h('p', { class: 'error', id: 'new-key-error', role: 'alert' });
  const secretBox = h('div', { id: 'secret-box' });
  const tableBox = h('div', { class: 'card wide', id: 'keys' });
  const editor = h('div', { class: 'card wide', id: 'policy-editor', hidden: true });
  let busy = false, last = '';

  function body() {
    const b = {};
    if (name.value.trim()) b.name = name.value.trim();
    if (expires.value) b.expires_at = new Date(expires.value).toISOString().replace(/\.\d+Z$/, 'Z');
    if (credits.value.trim()) b.credits_usd = credits.value.trim();
    const p = parsePolicy(pol.value, 'policy');
    if (p.problems.length) return { problems: p.problems };
    if (p.value !== undefined) b.policy = p.value;
    return { body: b };
  }
  async function submit(dry) {
    formErr.textContent = '';
    const b = body();
    if (b.problems) { showProblems(probs, pol, b.problems, pol.value); return; }
    const r = await api('POST', '/credits/keys' + (dry ? '?dry_run=true' : ''), b.body);
    if (r.status === 400 && r.data.problems) {
      showProblems(probs, pol, r.data.problems.filter((p) => p.path.startsWith('policy')), pol.value);
      const other = r.data.problems.filter((p) => !p.path.startsWith('policy'));
      formErr.textContent = other.map((p) => p.path + ': ' + p.message).join('; ');
      return;
    }
    showProblems(probs, pol, [], '');
    if (!r.ok) { formErr.textContent = errText(r); return; }
    if (dry) { announce('Policy is valid'); probs.replaceChildren(h('li', { class: 'ok' }, 'Valid: nothing saved yet.')); return; }
    const k = r.data;
    name.value = credits.value = pol.value = expires.value = '';
    const done = h('button', { type: 'button', on: { click: () => { secretBox.replaceChildren(); name.focus(); } } }, 'I have stored it');
    secretBox.replaceChildren(h('div', { class: 'secret', role: 'status', id: 'secret' },
      h('p', {}, h('strong', {}, 'New key ' + k.key_id + '. '), 'Copy the secret now: it is shown once and never again.'),
      h('p', {}, h('code', { id: 'secret-value' }, k.secret)), done));
    done.focus();
    refresh();
  }
  const form = h('form', { id: 'new-key', on: { submit: (e) => { e.preventDefault(); submit(false); } } },
    h('div', { class: 'row' }, field('Name', name), field('Expires (optional)', expires), field('Prepaid credits, USD (optional)', credits)),
    h('label', { for: 'new-policy' }, 'Policy override, JSON (optional)'), pol, probs, policyForm(pol),
    h('div', { class: 'row' }, h('button', { type: 'button', class: 'secondary', id: 'check-policy', disabled: ro, on: { click: () => submit(true) } }, 'Check policy'),
      h('button', { type: 'submit', id: 'create-key', disabled: ro }, 'Create key')), formErr);
  root.append(h('h1', {}, 'Keys'), ro ? h('p', { class: 'muted' }, 'Read-only session: keys can be viewed, not changed.') : '',
    h('div', { class: 'grid' }, h('div', { class: 'card wide' }, h('h2', {}, 'Create a key'), form, secretBox), tableBox, editor));

  async function action(fn) { busy = true; try { await fn(); } finally { busy = false; } refresh(true); }
  function actions(k) {
    const cell = h('td', { class: 'actions' });
    const normal = () => cell.replaceChildren(
      h('button', { type: 'button', class: 'secondary', 'aria-label': 'Edit policy of ' + k.key_id, on: { click: () => edit(k) } }, 'Policy'),
      ' ', h('button', { type: 'button', class: 'secondary', disabled: ro || k.status !== 'active', 'aria-label': 'Top up ' + k.key_id, on: { click: topup } }, 'Top up'),
      ' ', h('button', { type: 'button', class: 'danger', disabled: ro || k.status === 'revoked', 'aria-label': 'Revoke ' + k.key_id, on: { click: confirm } }, 'Revoke'));
    function confirm() {
      busy = true;
      const yes = h('button', { type: 'button', class: 'danger', 'aria-label': 'Confirm revoking ' + k.key_id,
        on: { click: () => action(async () => { const r = await api('DELETE', '/credits/keys/' + k.key_id); announce(r.ok ? 'Revoked ' + k.key_id : errText(r)); }) } }, 'Confirm revoke');
      cell.replaceChildren(yes, ' ', h('button', { type: 'button', class: 'secondary', on: { click: () => { busy = false; normal(); } } }, 'Cancel'));
      yes.focus();
    }
    function topup() {
      busy = true;
      const amt = h('input', { type: 'text', inputmode: 'decimal', size: 8, id: 'topup-' + k.key_id });
      const err = h('span', { class: 'error', role: 'alert' });
      const f = h('form', { class: 'row', on: { submit: (e) => { e.preventDefault(); action(async () => {
        const r = await api('POST', '/credits/keys/' + k.key_id + '/credits', { amount_usd: amt.value.trim() });
        if (!r.ok) throw (err.textContent = (r.data.problems || []).map((p) => p.message).join('; ') || errText(r));
        announce('Added credits to ' + k.key_id);
      }).catch(() => {}); } } },
      field('Amount, USD, for ' + k.key_id, amt), h('button', { type: 'submit' }, 'Add credits'),
      h('button', { type: 'button', class: 'secondary', on: { click: () => { busy = false; normal(); } } }, 'Cancel'), err);
      cell.replaceChildren(f);
      amt.focus();
    }
    normal();
    return cell;
  }
  async function edit(k) {
    const r = await api('GET', '/credits/keys/' + k.key_id + '/policy');
    if (!r.ok) return;
    const ta = h('textarea', { id: 'edit-policy', 'aria-describedby': 'edit-policy-problems', spellcheck: 'false', readonly: ro });
    ta.value = JSON.stringify(r.data.override || {}, null, 2);
    const ul = h('ul', { class: 'problems', id: 'edit-policy-problems', 'aria-live': 'polite' });
    const eff = h('pre', { id: 'edit-effective' }, JSON.stringify(r.data.effective, null, 2));
    const send = async (method, dry) => {
      let text = ta.value;
      if (method === 'PUT') {
        const p = parsePolicy(text, '$');
        if (p.problems.length) { showProblems(ul, ta, p.problems, text); return; }
        if (p.value === undefined) text = '{}';
      }
      const res = await api(method, '/credits/keys/' + k.key_id + '/policy' + (dry ? '?dry_run=true' : ''), method === 'PUT' ? text : undefined);
      if (res.status === 400 && res.data.problems) { showProblems(ul, ta, res.data.problems, text); return; }
      if (!res.ok) { showProblems(ul, ta, [{ path: '$', message: errText(res) }], ''); return; }
      showProblems(ul, ta, [], '');
      ul.replaceChildren(h('li', { class: 'ok' }, dry ? 'Valid: nothing saved yet.' : 'Saved.'));
      eff.textContent = JSON.stringify(res.data.effective, null, 2);
      if (method === 'DELETE') ta.value = '{}';
      if (!dry) refresh(true);
    };
    editor.hidden = false;
    editor.replaceChildren(h('h2', {}, 'Policy override of ' + k.key_id + (k.name ? ' (' + k.name + ')' : '')),
      h('label', { for: 'edit-policy' }, 'Override, JSON'), ta, ul, ro ? '' : policyForm(ta),
      h('div', { class: 'row' },
        h('button', { type: 'button', class: 'secondary', id: 'validate-policy', disabled: ro, on: { click: () => send('PUT', true) } }, 'Validate'),
        h('button', { type: 'button', id: 'save-policy', disabled: ro, on: { click: () => send('PUT', false) } }, 'Save'),
        h('button', { type: 'button', class: 'danger', id: 'remove-policy', disabled: ro, on: { click: () => send('DELETE', false) } }, 'Remove override'),
        h('button', { type: 'button', class: 'secondary', on: { click: () => { editor.hidden = true; } } }, 'Close')),
      h('h2', {}, 'Effective policy'), eff);
    ta.focus();
  }
  async function refresh(force) {
    if (busy && !force) return;
    const r = await api('GET', '/credits/keys?order=desc&limit=' + KEYS_SHOWN);
    if (!r.ok) return;
    const sig = JSON.stringify(r.data);
    if (sig === last && !force) return;
    last = sig;
    const shown = r.data.keys.length < r.data.total ? ` (newest ${r.data.keys.length} of ${r.data.total}; find others under Principals)` : '';
    tableBox.replaceChildren(h('h2', {}, 'Keys' + shown), table([{ label: 'Key ID' }, { label: 'Name' }, { label: 'Key' }, { label: 'Status' },
      { label: 'Created' }, { label: 'Expires' }, { label: 'Credits', num: true }, { label: 'Policy' }, { label: 'Actions' }],
    r.data.keys.map((k) => h('tr', { 'data-key-id': k.key_id }, h('td', {}, principalLink('key:' + k.key_id)), h('td', {}, k.name || ''),
      h('td', {}, h('code', {}, k.key)), h('td', { class: 'status' }, k.status), h('td', {}, when(k.created_at)), h('td', {}, when(k.expires_at)),
      h('td', { class: 'num' }, k.balance_usd === undefined ? '—' : usd(k.balance_usd)), h('td', {}, k.policy ? 'override' : 'tier'), actions(k)))));
  }
  refresh();
  return refresh;
}

// ---- Audit ----

function viewAudit(root) {
  const f = {
    principal: h('input', { type: 'text', id: 'q-principal', placeholder: 'key:k_… or wallet:0x…' }),
    tool: h('input', { type: 'text', id: 'q-tool' }),
    outcome: h('select', { id: 'q-outcome' }, h('option', { value: '' }, 'any'), OUTCOMES.map((o) => h('option', { value: o }, o))),
    since: h('input', { type: 'text', id: 'q-since', value: '1h' }),
    until: h('input', { type: 'text', id: 'q-until', placeholder: 'now' }),
    limit: h('input', { type: 'number', id: 'q-limit', value: '100', min: 1, max: 100000 }),
    order: h('select', { id: 'q-order' }, h('option', { value: 'desc' }, 'newest first'), h('option', { value: 'asc' }, 'oldest first')),
  };
  const live = h('input', { type: 'checkbox', id: 'q-live', checked: true });
  const err = h('p', { class: 'error', id: 'audit-error', role: 'alert' });
  const results = h('div', { class: 'card wide', id: 'audit-results' });
  const detail = h('pre', { id: 'audit-detail', tabindex: '0', 'aria-label': 'Record detail' }, 'Select a record to see it in full.');
  const verifyOut = h('p', { id: 'verify-result', 'aria-live': 'polite' });
  const exportSel = h('a', { id: 'export-selection', download: 'audit-selection.jsonl' }, 'Download the selection (JSON lines)');
  const exportChain = h('a', { id: 'export-chain', download: 'audit-export.jsonl' }, 'Export with signed checkpoints (verifiable offline)');
  const form = h('form', { id: 'audit-form', on: { submit: (e) => { e.preventDefault(); search(); } } },
    h('div', { class: 'row' }, field('Principal', f.principal), field('Tool', f.tool), field('Outcome', f.outcome),
      field('Since (RFC 3339 or duration)', f.since), field('Until', f.until), field('Limit', f.limit), field('Order', f.order),
      h('button', { type: 'submit', id: 'audit-search' }, 'Search'),
      h('span', {}, live, h('label', { for: 'q-live' }, ' refresh automatically'))), err);
  const verifyBtn = h('button', { type: 'button', id: 'verify-chain', on: { click: verify } }, 'Verify chain');
  root.append(h('h1', {}, 'Audit'), h('div', { class: 'card wide' }, form, h('div', { class: 'row' }, exportSel, ' · ', exportChain)),
    h('div', { class: 'grid' }, results, h('div', { class: 'card' }, h('h2', {}, 'Record'), detail),
      h('div', { class: 'card' }, h('h2', {}, 'Chain verification'), verifyBtn, verifyOut)));

  function query() {
    const p = new URLSearchParams();
    for (const k of ['principal', 'tool', 'outcome', 'since', 'until', 'limit', 'order']) {
      const v = f[k].value.trim();
      if (v) p.set(k, v);
    }
    return p.toString();
  }
  async function search() {
    const q = query();
    exportSel.href = '/audit?' + q;
    const ep = new URLSearchParams();
    if (f.since.value.trim()) ep.set('since', f.since.value.trim());
    if (f.until.value.trim()) ep.set('until', f.until.value.trim());
    exportChain.href = '/audit/export?' + ep.toString();
    const r = await api('GET', '/audit?' + q);
    if (!r.ok) { err.textContent = errText(r); return; }
    err.textContent = '';
    const recs = r.data || [];
    results.replaceChildren(h('h2', {}, recs.length + ' records'), table([{ label: 'Seq', num: true }, { label: 'At' }, { label: 'Type' },
      { label: 'Principal' }, { label: 'Tool' }, { label: 'Outcome / kind' }, { label: 'Status', num: true }, { label: 'Cost', num: true }],
    recs.map((x) => h('tr', { 'data-seq': x.seq },
      h('td', { class: 'num' }, h('button', { type: 'button', class: 'secondary', 'aria-label': 'Show record ' + x.seq,
        on: { click: () => { detail.textContent = JSON.stringify(x, null, 2); detail.focus(); } } }, String(x.seq))),
      h('td', {}, when(x.at)), h('td', {}, x.type), h('td', {}, x.principal ? principalLink(x.principal) : ''), h('td', {}, x.tool || ''),
      h('td', {}, x.outcome ? outcomeBadge(x.outcome) : (x.kind || '')), h('td', { class: 'num' }, x.status || ''),
      h('td', { class: 'num' }, usd(((x.cost_micros || 0) + (x.amount_micros || 0)) / 1e6))))));
  }
  async function verify() {
    verifyBtn.disabled = true;
    verifyOut.textContent = 'Verifying…';
    const r = await api('GET', '/audit/verify');
    verifyBtn.disabled = false;
    if (!r.ok) { verifyOut.textContent = errText(r); return; }
    const v = r.data;
    verifyOut.replaceChildren(v.ok ? h('span', { class: 'ok' }, `Intact: ${v.records} records, ${v.checkpoints} signed checkpoints.`)
      : h('span', { class: 'bad' }, `Broken at seq ${v.first_bad_seq}: ${v.reason}`));
  }
  search();
  return () => (live.checked ? search() : null);
}

// ---- Tools ----

function viewTools(root) {
  const box = h('div', { class: 'card wide', id: 'tools' });
  const pol = h('div', { class: 'card', id: 'policies' });
  const bazaar = h('div', { class: 'card', id: 'bazaar' });
  root.append(h('h1', {}, 'Tools'), h('div', { class: 'grid' }, box, pol, bazaar));
  let last = '';
  async function refresh() {
    const [c, d] = await Promise.all([api('GET', '/catalog'), api('GET', '/discovery/resources')]);
    if (!c.ok) return;
    const sig = JSON.stringify([c.data, d.data && d.data.items]);
    if (sig === last) return;
    last = sig;
    box.replaceChildren(h('h2', {}, c.data.tools.length + ' tools · x402 ' + (c.data.x402 ? 'on' : 'off') + ' · config ' + (c.data.config_hash || '').slice(0, 12)),
      table([{ label: 'Tool' }, { label: 'Route' }, { label: 'Rate class' }, { label: 'Price', num: true }, { label: 'Packs' },
        { label: 'Settle' }, { label: 'Timeout', num: true }, { label: 'x402' }, { label: 'Description' }],
      c.data.tools.map((t) => h('tr', {}, h('td', {}, h('code', {}, t.id)), h('td', {}, t.methods.join(', ') + ' ' + t.path),
        h('td', {}, t.rate_class), h('td', { class: 'num' }, t.price_usd === '0.00' ? 'free' : '$' + t.price_usd),
        h('td', {}, t.packs.join(', ')), h('td', {}, t.settle), h('td', { class: 'num' }, t.timeout_ms + ' ms'),
        h('td', {}, t.x402 ? 'offered' : '—'), h('td', {}, t.description || (t.mcp_server ? 'MCP: ' + t.mcp_server : ''))))));
    pol.replaceChildren(h('h2', {}, 'Policies (defaults and tiers)'), h('pre', {}, JSON.stringify(c.data.policies, null, 2)));
    const items = (d.ok && d.data.items) || [];
    bazaar.replaceChildren(h('h2', {}, 'x402 / Bazaar listing preview'),
      items.length ? h('ul', {}, items.map((it) => h('li', {}, h('code', {}, it.resource), ' ',
        (it.accepts || []).map((a) => {
          const n = Number(a.amount || a.maxAmountRequired);
          return usd(n / 1e6) + ' on ' + a.network + ' (' + n + ' atomic units)';
        }).join(' / ')))) :
        h('p', { class: 'muted' }, c.data.x402 ? 'No priced tools.' : 'x402 is off (--x402-pay-to): nothing is listed.'),
      items.length ? h('details', {}, h('summary', {}, 'Full listing (GET /discovery/resources)'), h('pre', {}, JSON.stringify(d.data, null, 2))) : '');
  }
  refresh();
  return refresh;
}

const VIEWS = { overview: viewOverview, principals: viewPrincipals, keys: viewKeys, audit: viewAudit, tools: viewTools };
document.addEventListener('DOMContentLoaded', boot);
