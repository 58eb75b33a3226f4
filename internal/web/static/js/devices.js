import { api, el, clear, pill, stream, toast, options, fmtValue, fmtAgo } from './app.js';

const tbody = document.querySelector('#device-table tbody');
const count = document.getElementById('device-count');
const f = { site: document.getElementById('f-site'), status: document.getElementById('f-status'), text: document.getElementById('f-text') };
let devices = new Map();
const rows = new Map();

function visible(d) {
  if (f.site.value && d.site !== f.site.value) return false;
  if (f.status.value && d.status !== f.status.value) return false;
  const t = f.text.value.trim().toLowerCase();
  return !t || d.id.toLowerCase().includes(t) || (d.type || '').toLowerCase().includes(t) || (d.meta?.name || '').toLowerCase().includes(t);
}

// made is a discovered device's maker and model.
function made(d) {
  const m = d.meta?.discovery;
  return m ? [m.manufacturer, m.model].filter(Boolean).join(' ') : '';
}

function row(d) {
  return el('tr', { dataset: { device: d.id } },
    el('td', {}, el('a', { href: '/devices/' + encodeURIComponent(d.id) }, d.meta?.name || d.id),
      d.meta?.name ? el('small', { class: 'muted' }, ' ' + d.id) : null,
      made(d) ? el('small', { class: 'muted', title: d.meta.discovery.origin || 'Home Assistant discovery' }, ' · ' + made(d)) : null),
    el('td', {}, d.site), el('td', {}, d.type || ''), el('td', {}, pill(d.status || 'unknown', d.status)),
    el('td', { class: 'num value' }, fmtValue(d.last_value, d.units)),
    el('td', { class: 'seen', title: d.last_seen ? new Date(d.last_seen).toLocaleString() : '' }, fmtAgo(d.last_seen)));
}

function render() {
  const list = [...devices.values()].filter(visible).sort((a, b) => a.site.localeCompare(b.site) || a.id.localeCompare(b.id));
  rows.clear();
  clear(tbody, list.map(d => { const r = row(d); rows.set(d.id, r); return r; }));
  const on = list.filter(d => d.status === 'online').length;
  count.textContent = `${list.length} device${list.length === 1 ? '' : 's'}, ${on} online`;
}

async function load() {
  const ds = await api('GET', '/api/v1/devices');
  devices = new Map(ds.map(d => [d.id, d]));
  options(f.site, [...new Set(ds.map(d => d.site))].sort());
  render();
}

for (const x of Object.values(f)) x.addEventListener('input', render);
document.getElementById('device-filters').addEventListener('submit', e => e.preventDefault());
load().catch(e => toast(e.message, true));
setInterval(() => { for (const [id, r] of rows) { const d = devices.get(id); r.querySelector('.seen').textContent = fmtAgo(d.last_seen); } }, 5000);

stream(['reading', 'device'], {
  reload: () => load().catch(() => {}),
  reading: (m) => {
    const d = devices.get(m.device);
    if (!d) { load().catch(() => {}); return; }
    d.last_value = m.value; d.units = m.units; d.last_seen = new Date().toISOString(); d.status = 'online';
    const r = rows.get(d.id);
    if (r) {
      r.querySelector('.value').textContent = fmtValue(m.value, m.units);
      r.querySelector('.seen').textContent = fmtAgo(d.last_seen);
      r.classList.remove('flash'); void r.offsetWidth; r.classList.add('flash');
    }
  },
  device: (m) => {
    const d = devices.get(m.device);
    if (d) {
      if (m.status) d.status = m.status;
      if (m.name) d.meta = { ...(d.meta || {}), name: m.name };
      if (m.discovery) d.meta = { ...(d.meta || {}), discovery: m.discovery };
      render();
      return;
    }
    // A new device: shown at once from the message, then read whole once
    // it is stored.
    devices.set(m.device, { id: m.device, site: m.site, type: m.type || '', units: m.units || '', status: m.status || 'online',
      meta: m.name || m.discovery ? { name: m.name, discovery: m.discovery } : undefined });
    render();
    setTimeout(() => load().catch(() => {}), 1000);
  },
});
