import { api, el, clear, pill, me, stream, guard, toast } from './app.js';
import { eventItem } from './events-common.js';

const sitesEl = document.getElementById('sites');
const countsEl = document.getElementById('device-counts');
const agentsEl = document.getElementById('agent-summary');
const eventsEl = document.getElementById('recent-events');
let sites = [];
let devices = new Map();
let clipsByEvent = new Map();
let events = [];

function stat(n, label) { return el('div', { class: 'stat' }, el('b', {}, n), el('span', {}, label)); }

function renderSites() {
  if (sites.length === 0) { clear(sitesEl, el('p', { class: 'muted' }, 'No site yet: sites appear when their devices first report.')); return; }
  clear(sitesEl, el('ul', { class: 'sites' }, sites.map(s => el('li', { dataset: { site: s.name } },
    el('span', {}, el('strong', {}, s.name), ' ', pill(s.armed ? 'armed' : 'disarmed'), ' ', el('small', { class: 'muted' }, s.plan + ' plan')),
    me.admin
      ? el('button', { type: 'button', class: 'btn small' + (s.armed ? '' : ' primary'), 'aria-label': (s.armed ? 'Disarm ' : 'Arm ') + s.name,
        onclick: () => arm(s, !s.armed) }, s.armed ? 'Disarm' : 'Arm')
      : el('button', { type: 'button', class: 'btn small', disabled: true, title: 'Only admins can arm or disarm' }, s.armed ? 'Disarm' : 'Arm')))));
}

async function arm(s, armed) {
  await guard(async () => {
    const v = await api('POST', `/api/v1/sites/${encodeURIComponent(s.name)}/${armed ? 'arm' : 'disarm'}`);
    Object.assign(s, v);
    renderSites();
    toast(`${s.name} is ${armed ? 'armed' : 'disarmed'}`);
  });
}

function renderDevices() {
  let on = 0, off = 0;
  for (const d of devices.values()) d.status === 'online' ? on++ : off++;
  clear(countsEl, stat(on, 'online'), stat(off, 'offline'), stat(devices.size, 'devices'));
}

function renderAgents(v) {
  const live = v.agents.filter(a => a.status === 'ready' || a.status === 'starting');
  const streams = v.agents.reduce((n, a) => n + a.streams.length, 0);
  const cap = live.reduce((n, a) => n + a.capacity, 0);
  clear(agentsEl, stat(live.length, 'agents'), stat(`${streams}/${cap}`, 'streams in use'), stat(v.queue.length, 'queued'),
    v.agents.some(a => a.status === 'lost') ? el('p', { class: 'error' }, 'An agent stopped answering.') : null);
}

function renderEvents() {
  if (events.length === 0) { clear(eventsEl, el('li', { class: 'muted' }, 'No event yet.')); return; }
  clear(eventsEl, events.slice(0, 6).map(ev => eventItem(ev, clipsByEvent.get(ev.id) || [], { compact: true })));
}

async function load() {
  const [s, ds, v, evs, cls] = await Promise.all([
    api('GET', '/api/v1/sites'), api('GET', '/api/v1/devices'), api('GET', '/api/v1/agents'),
    api('GET', '/api/v1/events?limit=6'), api('GET', '/api/v1/clips?limit=30'),
  ]);
  sites = s; renderSites();
  devices = new Map(ds.map(d => [d.id, d])); renderDevices();
  renderAgents(v);
  events = evs;
  clipsByEvent = new Map();
  for (const c of cls) { if (!clipsByEvent.has(c.event_id)) clipsByEvent.set(c.event_id, []); clipsByEvent.get(c.event_id).push(c); }
  renderEvents();
}

load().catch(e => toast(e.message, true));
setInterval(() => api('GET', '/api/v1/devices').then(ds => { devices = new Map(ds.map(d => [d.id, d])); renderDevices(); }).catch(() => {}), 30000);
stream(['site', 'device', 'event', 'clip', 'clip_deleted', 'agents'], {
  reload: () => load().catch(() => {}),
  site: (s) => {
    const cur = sites.find(x => x.name === s.name);
    if (cur) { cur.armed = s.armed; if (s.plan) cur.plan = s.plan; } else sites.push({ plan: 'free', ...s });
    renderSites();
  },
  device: (d) => {
    const cur = devices.get(d.device);
    if (cur) { if (d.status) cur.status = d.status; } else devices.set(d.device, { id: d.device, site: d.site, status: d.status || 'online' });
    renderDevices();
  },
  event: (ev) => {
    const i = events.findIndex(x => x.id === ev.id);
    if (i >= 0) events[i] = ev; else { events.unshift(ev); ev._new = true; }
    renderEvents();
  },
  clip: (c) => {
    const list = clipsByEvent.get(c.event_id) || [];
    const i = list.findIndex(x => x.id === c.id);
    if (i >= 0) list[i] = c; else list.push(c);
    clipsByEvent.set(c.event_id, list);
    renderEvents();
  },
  clip_deleted: (c) => { const list = clipsByEvent.get(c.event_id); if (list) clipsByEvent.set(c.event_id, list.filter(x => x.id !== c.id)); renderEvents(); },
  agents: renderAgents,
});
