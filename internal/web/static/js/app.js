// Vigil's common browser code: the API client, the live event stream,
// the alert banner, small DOM helpers and formatting. Every page's script
// imports it.

export const me = {
  user: document.body.dataset.user || '',
  role: document.body.dataset.role || '',
  get admin() { return this.role === 'admin'; },
};
export const params = { id: document.body.dataset.id || '', site: document.body.dataset.site || '', camera: document.body.dataset.camera || '' };
const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || '';

// ApiError carries the API's status and message.
export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// api calls the JSON API; state-changing requests carry the CSRF token.
// A lost session sends the browser to the login page.
export async function api(method, path, body) {
  busy(1);
  try { return await request(method, path, body); } finally { busy(-1); }
}

// data-inflight counts the API requests under way (the browser tests wait
// for a page's first answers with it).
let inFlight = 0;
function busy(d) {
  inFlight += d;
  document.documentElement.dataset.inflight = String(inFlight);
}

async function request(method, path, body) {
  const opts = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (method !== 'GET' && method !== 'HEAD') opts.headers['X-CSRF-Token'] = csrf();
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let data = null;
  const text = await resp.text();
  if (text) { try { data = JSON.parse(text); } catch { data = null; } }
  if (resp.status === 401 && document.body.dataset.page !== 'login') {
    location.href = '/login?next=' + encodeURIComponent(location.pathname + location.search);
    throw new ApiError(401, 'signed out');
  }
  if (!resp.ok) {
    let msg = (data && data.error) || resp.statusText;
    if (resp.status === 429) msg += ' (retry in ' + (resp.headers.get('Retry-After') || '?') + ' s)';
    throw new ApiError(resp.status, msg);
  }
  return data;
}

// el builds an element: el('a', {href: '/x', class: 'btn'}, 'text', child).
// Text is always text, never HTML.
export function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') n.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(n.dataset, v);
    else n.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    n.append(k instanceof Node ? k : String(k));
  }
  return n;
}

export function clear(n, ...kids) { n.replaceChildren(...kids.flat().filter(k => k !== undefined && k !== null && k !== false)); return n; }

export function pill(text, cls) { return el('span', { class: 'pill ' + (cls || text) }, text); }

// toast shows a short message at the bottom of the page.
let toastTimer;
export function toast(msg, bad) {
  const t = document.getElementById('toast');
  if (!t) return;
  t.textContent = msg;
  t.className = 'toast show' + (bad ? ' bad' : '');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = 'toast'; }, bad ? 6000 : 3000);
}

// guard runs an action and shows its error, if any.
export async function guard(f) {
  try { return await f(); } catch (e) { if (e.status !== 401) toast(e.message, true); throw e; }
}

// Formatting.
export function fmtTime(t) {
  if (!t) return '';
  const d = new Date(t);
  const today = new Date();
  const opts = { hour: '2-digit', minute: '2-digit', second: '2-digit' };
  if (d.toDateString() !== today.toDateString()) Object.assign(opts, { year: 'numeric', month: 'short', day: 'numeric' });
  return d.toLocaleString(undefined, opts);
}
export function fmtAgo(t) {
  if (!t) return '';
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}
export function fmtValue(v, units) {
  if (v === null || v === undefined) return '–';
  const n = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  return units ? n + ' ' + shortUnits(units) : n;
}
export function shortUnits(u) { return ({ Celsius: '°C', Fahrenheit: '°F', percent: '%', meters: 'm', metres: 'm' })[u] || u; }
export function fmtDuration(ms) {
  const s = Math.round(ms / 1000);
  return s < 60 ? s + ' s' : Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
}
export function timeEl(t) { return el('time', { datetime: t, title: new Date(t).toLocaleString() }, fmtTime(t)); }

// stream opens the one server-sent events stream with the events a page
// wants (plus alerts, for the banner). handlers: {event: fn(data)}, and
// reload(), called when updates may have been missed (after a reconnect,
// or when the server dropped some for a slow connection). It reconnects by
// itself; the dot in the header shows its state.
export function stream(events, handlers, query) {
  const q = new URLSearchParams({ events: [...new Set([...events, 'alerts'])].join(',') });
  for (const [k, v] of Object.entries(query || {})) q.set(k, v);
  const dot = document.getElementById('live-status');
  const state = (cls, label) => { if (dot) { dot.className = 'live-dot ' + cls; dot.setAttribute('aria-label', label); dot.title = label; } };
  const es = new EventSource('/api/v1/stream?' + q);
  let opened = false;
  es.onopen = () => {
    state('on', 'Live updates: connected');
    if (opened) { handlers.reload?.(); api('GET', '/api/v1/alerts').then(showAlerts).catch(() => {}); }
    opened = true;
  };
  es.onerror = () => state('off', 'Live updates: reconnecting');
  es.addEventListener('dropped', () => handlers.reload?.());
  const all = { ...handlers, alerts: (a) => { showAlerts(a); handlers.alerts?.(a); } };
  for (const [name, fn] of Object.entries(all)) {
    if (name === 'reload') continue;
    es.addEventListener(name, (e) => { let d; try { d = JSON.parse(e.data); } catch { return; } fn(d); });
  }
  addEventListener('pagehide', () => es.close());
  return es;
}

// showAlerts fills the banner with what needs attention.
export function showAlerts(list) {
  const b = document.getElementById('banner');
  if (!b) return;
  if (!list || list.length === 0) { b.hidden = true; b.replaceChildren(); return; }
  b.hidden = false;
  b.className = 'banner ' + (list.some(a => a.level === 'critical') ? 'critical' : 'warning');
  clear(b, el('ul', {}, list.map(a => el('li', {}, el('strong', {}, a.title), a.detail ? ' — ' + a.detail : '', ' ', el('small', {}, '(since ' + fmtTime(a.since) + ')')))));
}

// Pages with the header: logout and the first banner.
if (document.getElementById('logout')) {
  document.getElementById('logout').addEventListener('click', async () => {
    try { await api('POST', '/api/v1/logout'); } finally { location.href = '/login'; }
  });
  api('GET', '/api/v1/alerts').then(showAlerts).catch(() => {});
}

// options fills a <select> with values, keeping its first option (the
// "all" choice) and the current selection.
export function options(select, values) {
  const cur = select.value;
  const first = select.options[0];
  clear(select, first, values.map(v => el('option', { value: v }, v)));
  if (values.includes(cur)) select.value = cur;
}
