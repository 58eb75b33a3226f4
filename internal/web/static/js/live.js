import { api, el, clear, pill, params, stream, toast } from './app.js';
import { readMJPEG } from './mjpeg.js';

const grid = document.getElementById('cameras');
const cards = new Map(); // site/camera -> card state

function key(c) { return c.site + '/' + c.id; }

function card(c) {
  const img = el('img', { alt: `Live picture of ${c.name || c.id}`, hidden: true });
  const state = el('span', { class: 'state' }, 'not streaming');
  const frame = el('div', { class: 'frame' }, img, state);
  const info = el('span', { class: 'muted small' });
  const btn = el('button', { type: 'button', class: 'btn small primary' }, 'Watch');
  const root = el('article', { class: 'cam' + (params.camera ? ' solo' : ''), dataset: { camera: c.id, site: c.site }, 'aria-label': `${c.site} ${c.id}` },
    frame, el('div', { class: 'bar' }, el('span', {}, el('strong', {}, c.name || c.id), ' ', el('small', { class: 'muted' }, c.site)), info, btn));
  const st = { c, root, img, state, info, btn, watching: false, gen: 0, ctrl: null, frames: 0, streamID: '', times: [], url: '' };
  btn.addEventListener('click', () => st.watching ? stop(st) : watch(st));
  return st;
}

function setState(st, text, cls) {
  clear(st.state, cls ? pill(text, cls) : text);
}

// watch asks for the camera's stream and shows its frames until the page
// stops watching; when a stream ends (a live view times out, a recording
// takes over) it asks again.
async function watch(st) {
  const gen = ++st.gen; // Stop, or another Watch, ends this loop
  const live = () => st.watching && st.gen === gen;
  st.watching = true;
  st.btn.textContent = 'Stop';
  while (live()) {
    const ctrl = new AbortController();
    st.ctrl = ctrl;
    try {
      setState(st, 'starting…', 'starting');
      const v = await api('POST', `/api/v1/cameras/${encodeURIComponent(st.c.site)}/${encodeURIComponent(st.c.id)}/live`);
      if (!live()) break;
      st.streamID = v.id;
      st.root.dataset.stream = v.id;
      const resp = await fetch(v.mjpeg, { signal: ctrl.signal, credentials: 'same-origin' });
      if (!resp.ok) {
        let msg = resp.statusText;
        try { msg = (await resp.json()).error || msg; } catch { /* not JSON */ }
        throw new Error(msg);
      }
      setState(st, v.live_only ? 'live' : 'live · recording', v.live_only ? 'streaming' : 'recording');
      await readMJPEG(resp, (jpeg) => { if (live()) show(st, jpeg); });
    } catch (e) {
      if (!live()) break;
      if (e.name !== 'AbortError') {
        setState(st, 'unavailable', 'bad');
        st.info.textContent = e.message;
        await new Promise(r => setTimeout(r, 3000));
      }
    } finally {
      ctrl.abort();
    }
  }
}

function show(st, jpeg) {
  const url = URL.createObjectURL(new Blob([jpeg], { type: 'image/jpeg' }));
  const old = st.url;
  st.url = url;
  st.img.src = url;
  if (old) URL.revokeObjectURL(old); // the picture has moved on, shown or not
  st.img.decode().then(() => {
    st.img.hidden = false;
    st.frames++;
    const now = performance.now();
    st.times.push(now);
    while (st.times.length && st.times[0] < now - 3000) st.times.shift();
    const fps = st.times.length > 1 ? (st.times.length - 1) / ((now - st.times[0]) / 1000) : 0;
    st.info.textContent = `${st.frames} frames · ${fps.toFixed(1)} fps`;
    st.root.dataset.frames = st.frames;
    st.root.dispatchEvent(new CustomEvent('frame', { detail: { frames: st.frames, width: st.img.naturalWidth } }));
  }).catch(() => { /* a newer frame replaced it before it was decoded */ });
}

function stop(st) {
  st.watching = false;
  st.gen++;
  st.ctrl?.abort();
  st.btn.textContent = 'Watch';
  setState(st, 'not streaming');
  st.info.textContent = '';
}

async function load() {
  let cams = await api('GET', '/api/v1/cameras');
  if (params.camera) cams = cams.filter(c => c.site === params.site && c.id === params.camera);
  if (cams.length === 0) {
    clear(grid, el('p', { class: 'muted' }, params.camera ? `No camera ${params.site}/${params.camera}.` : 'No camera has announced itself yet.'));
    return;
  }
  const seen = new Set();
  for (const c of cams) {
    seen.add(key(c));
    if (!cards.has(key(c))) cards.set(key(c), card(c));
  }
  for (const [k, st] of cards) if (!seen.has(k)) { stop(st); cards.delete(k); }
  clear(grid, [...cards.values()].map(st => st.root));
  if (params.camera) { const st = cards.values().next().value; if (st && !st.watching) watch(st); }
}

// A camera's stream changed (a recording took over): reconnect to it.
function agents(v) {
  const byCam = new Map(v.streams.concat(v.queue).map(s => [s.site + '/' + s.camera, s]));
  for (const [k, st] of cards) {
    const s = byCam.get(k);
    if (st.watching && s && st.streamID && s.id !== st.streamID) st.ctrl?.abort();
  }
}

addEventListener('pagehide', () => { for (const st of cards.values()) stop(st); });
load().catch(e => toast(e.message, true));
stream(['agents'], { agents, reload: () => load().catch(() => {}) });
