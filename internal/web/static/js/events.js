import { api, clear, params, stream, guard, toast, options, fmtTime, fmtDuration } from './app.js';
import { eventItem, preRoll } from './events-common.js';

const list = document.getElementById('timeline');
const count = document.getElementById('event-count');
const more = document.getElementById('more');
const form = document.getElementById('event-filters');
const f = { site: document.getElementById('f-site'), camera: document.getElementById('f-camera'), since: document.getElementById('f-since'), until: document.getElementById('f-until') };
const dlg = document.getElementById('player');
const video = document.getElementById('player-video');
const playerError = document.getElementById('player-error');
const PAGE = 50;

let events = [];
const clips = new Map(); // event id -> clips
let current = null; // the clip in the player

function query(extra) {
  const q = new URLSearchParams();
  for (const k of ['site', 'camera', 'since', 'until']) if (f[k].value) q.set(k, f[k].value);
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  return q;
}

function matches(ev) {
  if (f.site.value && ev.site !== f.site.value) return false;
  if (f.camera.value && !ev.cameras.includes(f.camera.value)) return false;
  const day = new Date(ev.start);
  if (f.since.value && day < new Date(f.since.value + 'T00:00')) return false;
  if (f.until.value && day >= new Date(new Date(f.until.value + 'T00:00').getTime() + 86400000)) return false;
  return true;
}

function render() {
  clear(list, events.map(ev => eventItem(ev, clips.get(ev.id) || [], { onClip: play })));
  count.textContent = events.length === 0 ? 'No event matches.' : `${events.length} event${events.length === 1 ? '' : 's'}` + (more.hidden ? '' : ' (more below)');
  if (params.id) document.getElementById('event-' + params.id)?.classList.add('target');
}

async function addClips(evs) {
  if (evs.length === 0) return;
  const oldest = evs[evs.length - 1].start;
  const cs = await api('GET', '/api/v1/clips?' + query({ since: new Date(new Date(oldest).getTime() - 60000).toISOString(), limit: 1000 }));
  for (const c of cs) {
    const l = clips.get(c.event_id) || [];
    if (!l.some(x => x.id === c.id)) l.push(c);
    clips.set(c.event_id, l);
  }
}

let loads = 0;
async function load() {
  const n = ++loads; // a newer load (the filters changed again) wins
  const evs = await api('GET', '/api/v1/events?' + query({ limit: PAGE }));
  if (n !== loads) return;
  events = evs;
  clips.clear();
  more.hidden = evs.length < PAGE;
  await addClips(evs);
  if (n !== loads) return;
  if (params.id && !events.some(e => e.id === params.id)) {
    try {
      const ev = await api('GET', '/api/v1/events/' + encodeURIComponent(params.id));
      events.unshift(ev);
      clips.set(ev.id, await api('GET', '/api/v1/clips?event=' + encodeURIComponent(ev.id)));
    } catch (e) { toast(e.message, true); }
  }
  render();
}

more.addEventListener('click', () => guard(async () => {
  const oldest = events[events.length - 1];
  const evs = await api('GET', '/api/v1/events?' + query({ until: new Date(oldest.start).toISOString(), limit: PAGE }));
  more.hidden = evs.length < PAGE;
  await addClips(evs);
  events.push(...evs.filter(e => !events.some(x => x.id === e.id)));
  render();
}));

const codecs = { h264: 'H.264', h265: 'H.265', mjpeg: 'MJPEG' };

function play(c) {
  current = c;
  playerError.hidden = true;
  document.getElementById('player-title').textContent = `${c.camera} · ${fmtTime(c.start)}`;
  document.getElementById('player-info').textContent = [c.site, fmtDuration(c.duration_ms), `${(c.bytes / 1e6).toFixed(1)} MB`,
    codecs[c.codec], c.pre_roll_ms > 0 ? preRoll(c) : '', c.interrupted ? 'interrupted' : ''].filter(Boolean).join(' · ');
  video.src = `/api/v1/clips/${c.id}/video`;
  document.getElementById('player-download').href = `/api/v1/clips/${c.id}/video?download=1`;
  dlg.showModal();
  video.play().catch(() => {});
}
// A clip the browser cannot play (H.265 in most browsers) says so, rather
// than showing a black box.
video.addEventListener('error', () => {
  if (!current) return;
  const name = codecs[current.codec] || current.codec || 'this';
  playerError.textContent = current.codec === 'h265'
    ? `This browser cannot play ${name} video. Download the clip to watch it in a player that does (VLC, or a browser with HEVC support).`
    : `The clip cannot be played here${video.error?.message ? ' (' + video.error.message + ')' : ''}. Download it to watch it.`;
  playerError.hidden = false;
});
dlg.addEventListener('close', () => { video.pause(); video.removeAttribute('src'); video.load(); current = null; });
document.getElementById('player-delete')?.addEventListener('click', () => guard(async () => {
  if (!current || !confirm(`Delete the clip of ${current.camera} at ${fmtTime(current.start)}? This cannot be undone.`)) return;
  const c = current;
  await api('DELETE', '/api/v1/clips/' + c.id);
  removeClip(c);
  dlg.close();
  toast('Clip deleted');
}));

function removeClip(c) {
  const l = clips.get(c.event_id);
  if (l) clips.set(c.event_id, l.filter(x => x.id !== c.id));
  render();
}

async function fillFilters() {
  const [sites, cams] = await Promise.all([api('GET', '/api/v1/sites'), api('GET', '/api/v1/cameras').catch(() => [])]);
  options(f.site, sites.map(s => s.name));
  options(f.camera, [...new Set(cams.map(c => c.id))].sort());
}

form.addEventListener('change', () => guard(load));
form.addEventListener('reset', () => setTimeout(() => guard(load)));
fillFilters().catch(() => {});
load().then(() => {
  const clipID = new URLSearchParams(location.search).get('clip');
  const c = clipID && [...clips.values()].flat().find(x => x.id === clipID);
  if (c && c.state === 'ready') play(c);
  if (params.id) document.getElementById('event-' + params.id)?.scrollIntoView({ block: 'center' });
}).catch(e => toast(e.message, true));

stream(['event', 'clip', 'clip_deleted'], {
  reload: () => load().catch(() => {}),
  event: (ev) => {
    const i = events.findIndex(x => x.id === ev.id);
    if (i >= 0) events[i] = ev;
    else if (matches(ev)) { ev._new = true; events.unshift(ev); }
    else return;
    render();
  },
  clip: (c) => {
    const l = clips.get(c.event_id) || [];
    const i = l.findIndex(x => x.id === c.id);
    if (i >= 0) l[i] = c; else l.push(c);
    clips.set(c.event_id, l);
    if (events.some(e => e.id === c.event_id)) render();
  },
  clip_deleted: removeClip,
});
