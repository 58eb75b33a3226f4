import { api, el, clear, pill, params, stream, toast, fmtValue, fmtTime, fmtAgo, shortUnits } from './app.js';
import { chart } from './chart.js';

const id = params.id;
const chartEl = document.getElementById('chart');
const note = document.getElementById('chart-note');
const facts = document.getElementById('device-facts');
const latest = document.querySelector('#latest tbody');
const LIVE_WINDOW = 10 * 60 * 1000;
let range = 'live';
let device = null;
let points = []; // [t, v] for live and short ranges
let band = null;

function fact(k, v) { return [el('dt', {}, k), el('dd', {}, v)]; }
function renderFacts() {
  const d = device;
  clear(facts, fact('Site', d.site), fact('Type', d.type || '–'), fact('Status', pill(d.status, d.status)),
    fact('Last value', el('span', { id: 'last-value' }, fmtValue(d.last_value, d.units))), fact('Last seen', fmtAgo(d.last_seen)),
    fact('First seen', fmtTime(d.first_seen)), d.meta?.name ? fact('Name', d.meta.name) : null, d.meta?.zone ? fact('Zone', d.meta.zone) : null);
}

// A device read through Home Assistant discovery: what its config says,
// why its last message was not read, and where it is placed.
const disc = document.getElementById('discovery');
async function renderDiscovery() {
  const m = device.meta?.discovery;
  disc.hidden = !m;
  if (!m) return;
  let v = null;
  try { v = await api('GET', `/api/v1/devices/${encodeURIComponent(id)}/discovery`); } catch { /* another node reads it */ }
  const e = v?.entity;
  const av = e?.availability?.length ? e.availability.map(a => a.topic).join(', ') + (e.availability.length > 1 ? ` (${e.availability_mode})` : '') : 'always available';
  clear(document.getElementById('discovery-facts'),
    fact('Device', [m.device_name, m.manufacturer, m.model].filter(Boolean).join(' · ') || '–'),
    m.via_device ? fact('Through', m.via_device) : null,
    m.origin ? fact('Published by', m.origin) : null,
    fact('Entity', `${m.component}${m.device_class ? ' · ' + m.device_class : ''}${m.unique_id ? ' · ' + m.unique_id : ''}`),
    fact('Config', el('a', { href: `/api/v1/devices/${encodeURIComponent(id)}/discovery` }, m.config_topic)),
    fact('State topic', m.state_topic),
    e?.value_template ? fact('Value template', el('code', {}, e.value_template)) : null,
    fact('Availability', av),
    m.removed ? fact('Removed', 'its config was deleted; the readings are kept') : null);
  const err = document.getElementById('discovery-error');
  err.textContent = v?.error ? `Last message not read: ${v.error} (${v.errors} so far)` : (v ? `${v.errors} unreadable messages` : '');
  const form = document.getElementById('placement');
  if (form && !form.dataset.touched) { form.site.value = device.site; form.zone.value = device.meta?.zone || ''; }
}
document.getElementById('placement')?.addEventListener('input', e => { e.currentTarget.dataset.touched = '1'; });
document.getElementById('placement')?.addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  try {
    await api('PUT', `/api/v1/devices/${encodeURIComponent(id)}/placement`, { site: f.site.value, zone: f.zone.value });
    delete f.dataset.touched;
    toast('Placed');
    setTimeout(() => load().catch(() => {}), 500);
  } catch (x) { toast(x.message, true); }
});

document.getElementById('device-delete')?.addEventListener('click', async () => {
  if (!confirm(`Delete ${id} and all its readings? A device that reports again comes back as new.`)) return;
  try {
    await api('DELETE', '/api/v1/devices/' + encodeURIComponent(id));
    location.href = '/devices';
  } catch (x) { toast(x.message, true); }
});

function draw() {
  const unit = shortUnits(device?.units || '');
  const now = Date.now();
  if (range === 'live') {
    const from = now - LIVE_WINDOW;
    points = points.filter(p => p[0] >= from - 60000);
    chart(chartEl, { series: [{ name: device?.type || 'value', points }], yUnit: unit, from, to: now, label: `${id}, last 10 minutes` });
    note.textContent = points.length ? `${points.length} readings in the last 10 minutes; new ones appear as they arrive.` : 'Waiting for readings…';
  } else {
    const span = parseFloat(range) * 3600000;
    chart(chartEl, { series: [{ name: 'average', points }], band, yUnit: unit, from: now - span, to: now, label: `${id}, last ${range}` });
    note.textContent = band ? `Average per bucket, with the minimum–maximum band.` : '';
  }
}

function renderLatest(rs) {
  clear(latest, rs.slice(-10).reverse().map(r => el('tr', {}, el('td', {}, fmtTime(r.timestamp)), el('td', { class: 'num' }, fmtValue(r.value, r.units)), el('td', { class: 'num' }, r.seq ?? ''))));
}

let loads = 0;
async function load() {
  const n = ++loads; // a newer load (another range) wins
  const d = await api('GET', '/api/v1/devices/' + encodeURIComponent(id));
  if (n !== loads) return;
  device = d;
  document.getElementById('device-title').textContent = device.meta?.name ? `${device.meta.name} (${id})` : id;
  renderFacts();
  renderDiscovery().catch(() => {});
  if (range === 'live') {
    const rs = await api('GET', `/api/v1/devices/${encodeURIComponent(id)}/telemetry?since=10m&limit=10000`);
    if (n !== loads) return;
    points = rs.map(r => [new Date(r.timestamp).getTime(), r.value]);
    band = null;
    renderLatest(rs);
  } else {
    const bs = await api('GET', `/api/v1/devices/${encodeURIComponent(id)}/telemetry/summary?since=${range}`);
    if (n !== loads) return;
    points = bs.map(b => [new Date(b.time).getTime(), b.avg]);
    band = bs.map(b => [new Date(b.time).getTime(), b.min, b.max]);
    const rs = await api('GET', `/api/v1/devices/${encodeURIComponent(id)}/telemetry?limit=10`);
    if (n !== loads) return;
    renderLatest(rs);
  }
  draw();
}

for (const b of document.querySelectorAll('[data-range]')) {
  b.addEventListener('click', () => {
    range = b.dataset.range;
    for (const x of document.querySelectorAll('[data-range]')) x.setAttribute('aria-pressed', String(x === b));
    load().catch(e => toast(e.message, true));
  });
}
addEventListener('resize', () => { if (device) draw(); });
setInterval(() => { if (device && range === 'live') draw(); }, 5000);
load().catch(e => toast(e.message, true));

stream(['reading', 'device'], {
  reload: () => load().catch(() => {}),
  reading: (r) => {
    if (!device) return;
    device.last_value = r.value; device.last_seen = new Date().toISOString(); device.status = 'online';
    document.getElementById('last-value').textContent = fmtValue(r.value, r.units);
    if (range === 'live') {
      points.push([new Date(r.timestamp).getTime(), r.value]);
      draw();
    }
    const row = el('tr', {}, el('td', {}, fmtTime(r.timestamp)), el('td', { class: 'num' }, fmtValue(r.value, r.units)), el('td', { class: 'num' }, r.seq ?? ''));
    latest.prepend(row);
    while (latest.children.length > 10) latest.lastChild.remove();
  },
  device: (m) => {
    if (!device) return;
    // Its meta changed: read it again once stored.
    if (m.status) { device.status = m.status; renderFacts(); } else setTimeout(() => load().catch(() => {}), 500);
  },
}, { device: id });
