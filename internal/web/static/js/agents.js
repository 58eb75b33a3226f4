import { api, el, clear, pill, stream, toast, fmtTime, fmtAgo } from './app.js';
import { chart } from './chart.js';

const pool = document.querySelector('#pool tbody');
const summary = document.getElementById('pool-summary');
const queue = document.getElementById('queue');
const chartEl = document.getElementById('history-chart');
const decisions = document.querySelector('#decisions tbody');
const nodesEl = document.querySelector('#nodes tbody');
let view = null; // the coordinator's view, when this node runs it
let history = []; // newest first, as the API gives it

function stat(n, label) { return el('div', { class: 'stat' }, el('b', {}, n), el('span', {}, label)); }

// agentsOn counts a node's agents, from the coordinator's view: by their
// node among several, else all of them on the one that coordinates. "–"
// when this node does not see the coordinator's view.
function agentsOn(n) {
  if (!view || view.agents.length === 0) return n.coordinator ? '–' : '';
  const placed = view.agents.some(a => a.node);
  return String(placed ? view.agents.filter(a => a.node === n.id).length : (n.coordinator ? view.agents.length : 0));
}

// renderNodes lists the nodes, which one coordinates, their agents.
function renderNodes(nodes) {
  clear(nodesEl, nodes.map(n => el('tr', { dataset: { node: n.id } },
    el('td', { title: n.id }, n.name || n.id), el('td', {}, el('a', { href: n.http }, n.http)),
    el('td', {}, pill(n.up ? 'up' : 'down', n.up ? 'ready' : 'lost')),
    el('td', {}, n.coordinator ? pill('coordinator', 'recording') : 'follower'),
    el('td', { class: 'num' }, agentsOn(n)),
    el('td', { title: new Date(n.last_seen).toLocaleString() }, fmtAgo(n.last_seen)), el('td', {}, n.version))));
  if (nodes.length === 0) clear(nodesEl, el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'No node recorded yet.')));
}

function loadNodes() { return api('GET', '/api/v1/cluster').then(c => renderNodes(c.nodes)); }

const kinds = { jpeg: 'JPEG', rtsp: 'RTSP', ring: 'ring' };

// capacities says, per kind of stream an agent takes, how many it runs of
// how many it may, a line each: "JPEG 1/3", "RTSP 0/16", "ring 1/32".
function capacities(a, streams) {
  if (!a.capacities) return '–';
  const used = {};
  for (const s of streams) if (s.agent === a.id) used[s.kind || 'jpeg'] = (used[s.kind || 'jpeg'] || 0) + 1;
  const out = Object.entries(kinds).filter(([k]) => a.capacities[k] > 0 || used[k])
    .map(([k, name]) => el('div', { dataset: { kind: k } }, `${name} ${used[k] || 0}/${a.capacities[k] || 0}`));
  return out.length ? out : '–';
}

function renderPool(v) {
  view = v;
  const live = v.agents.filter(a => a.status === 'ready' || a.status === 'starting');
  const streams = v.agents.reduce((n, a) => n + a.streams.length, 0);
  clear(summary, stat(live.length, `agents (min ${v.min}, max ${v.max})`), stat(streams, `streams (${v.capacity} JPEG per agent)`), stat(v.queue.length, 'queued'), stat(v.runtime, 'runtime'));
  clear(pool, v.agents.map(a => el('tr', { dataset: { agent: a.id } },
    el('td', {}, a.id), el('td', {}, pill(a.status)), el('td', { class: 'num' }, a.capacities ? a.streams.length : `${a.streams.length}/${a.capacity}`),
    el('td', { class: 'num', dataset: { load: a.load ?? '' } }, a.load === undefined ? '–' : `${Math.round(a.load * 100)} %`),
    el('td', { class: 'small' }, capacities(a, v.streams)),
    el('td', {}, a.dedicated_site || '–'), el('td', { title: new Date(a.started).toLocaleString() }, fmtAgo(a.started)))));
  if (v.agents.length === 0) clear(pool, el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'No agent.')));
  clear(queue, v.queue.length ? v.queue.map(s => el('li', {}, `${s.site}/${s.camera} `, pill(s.live_only ? 'live view' : s.kind === 'ring' ? 'pre-roll' : 'recording', 'queued'), s.kind === 'rtsp' ? ' RTSP' : '', ` since ${fmtTime(s.queued)}`)) : el('li', { class: 'muted' }, 'Nothing waits for an agent.'));
}

function renderHistory() {
  const asc = history.slice().reverse();
  const pts = (k) => asc.map(h => [new Date(h.at).getTime(), h[k]]);
  const now = Date.now();
  const first = asc.length ? new Date(asc[0].at).getTime() : now - 600000;
  const from = Math.min(first - (now - first) * 0.03, now - 60000);
  chart(chartEl, {
    series: [{ name: 'agents', points: pts('agents'), step: true }, { name: 'streams', points: pts('streams'), step: true }, { name: 'queued', points: pts('queued'), step: true }],
    from, to: now, integer: true, label: 'Agents, streams and queued streams over time', fmt: (v) => String(Math.round(v)),
  });
  clear(decisions, history.slice(0, 50).map(h => el('tr', {},
    el('td', {}, fmtTime(h.at)), el('td', {}, h.action), el('td', {}, h.agent || ''), el('td', {}, h.camera || ''),
    el('td', { class: 'small' }, h.reason || ''), el('td', { class: 'num' }, h.agents), el('td', { class: 'num' }, h.streams))));
}

async function loadHistory() {
  history = await api('GET', '/api/v1/agents/history?limit=2000');
  renderHistory();
}

let pending = null;
api('GET', '/api/v1/agents').then(renderPool).catch(e => toast(e.message, true));
loadHistory().catch(e => toast(e.message, true));
loadNodes().catch(e => toast(e.message, true));
setInterval(() => loadNodes().catch(() => {}), 5000); // nodes record themselves every 5 s
addEventListener('resize', renderHistory);
stream(['agents'], {
  reload: () => { api('GET', '/api/v1/agents').then(renderPool).catch(() => {}); loadHistory().catch(() => {}); },
  agents: (v) => {
    renderPool(v);
    // The decisions behind the change are in the history: fetch it once
    // things settle.
    clearTimeout(pending);
    pending = setTimeout(() => loadHistory().catch(() => {}), 500);
  },
});
