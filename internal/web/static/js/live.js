import { api, el, clear, pill, params, stream, toast, me } from './app.js';
import { readMJPEG } from './mjpeg.js';
import { playMP4, CodecError } from './mse.js';

const grid = document.getElementById('cameras');
const cards = new Map(); // site/camera -> card state

function key(c) { return c.site + '/' + c.id; }
function camPath(c) { return `/api/v1/cameras/${encodeURIComponent(c.site)}/${encodeURIComponent(c.id)}`; }

// card is a camera: its picture (an <img> for a JPEG camera, a <video>
// for an RTSP one), its state, and for admins a connection test of an
// RTSP camera.
function card(c) {
  const rtsp = c.kind === 'rtsp';
  const label = c.name || c.id;
  let img, video;
  if (rtsp) {
    video = el('video', { muted: true, autoplay: true, playsinline: true, hidden: true, 'aria-label': `Live video of ${label}` });
    video.muted = true; // the attribute alone does not mute an element made by a script
    // The frame takes the video's shape (4:3 until it is known).
    video.addEventListener('resize', () => { if (video.videoWidth && video.videoHeight) frame.style.aspectRatio = `${video.videoWidth} / ${video.videoHeight}`; });
  } else {
    img = el('img', { alt: `Live picture of ${label}`, hidden: true });
  }
  const state = el('span', { class: 'state' }, 'not streaming');
  const frame = el('div', { class: 'frame' }, img || video, state);
  const info = el('span', { class: 'muted small' });
  const btn = el('button', { type: 'button', class: 'btn small primary' }, 'Watch');
  const root = el('article', { class: 'cam' + (params.camera ? ' solo' : ''), dataset: { camera: c.id, site: c.site, kind: c.kind || 'jpeg' }, 'aria-label': `${c.site} ${c.id}` },
    frame, el('div', { class: 'bar' }, el('span', {}, el('strong', {}, label), ' ', el('small', { class: 'muted' }, c.site), ' ', pill(rtsp ? 'RTSP' : 'JPEG', 'kind')), info, btn));
  const st = { c, root, img, video, state, info, btn, watching: false, gen: 0, ctrl: null, frames: 0, streamID: '', times: [], url: '' };
  btn.addEventListener('click', () => st.watching ? stop(st) : watch(st));
  if (rtsp && me.admin) root.append(testPanel(c));
  return st;
}

// testPanel asks an RTSP camera what it serves (POST .../test): whether it
// answers, its codec, resolution and frame rate, or why not.
function testPanel(c) {
  const out = el('div', { class: 'cam-test small', role: 'status', 'aria-live': 'polite' });
  const btn = el('button', { type: 'button', class: 'btn small' }, 'Test connection');
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    clear(out, el('span', { class: 'muted' }, 'Testing…'));
    try {
      const r = await api('POST', camPath(c) + '/test');
      const took = el('span', { class: 'muted' }, ` (${r.took_ms} ms)`);
      clear(out, r.reachable ? pill('reachable', 'ok') : pill('unreachable', 'bad'),
        r.main ? el('span', {}, ' main: ', describe(r.main)) : null,
        r.sub ? el('span', {}, ' · sub-stream: ', describe(r.sub)) : null,
        r.error ? el('span', { class: 'error' }, ' ', r.error) : null, took);
    } catch (e) {
      clear(out, el('span', { class: 'error' }, e.message));
    } finally {
      btn.disabled = false;
    }
  });
  return el('div', { class: 'tools' }, btn, out);
}

// describe says what a stream is: "H264 640x360 · 25 fps · AAC".
function describe(i) {
  const parts = [[i.video || 'no video', i.width && i.height ? `${i.width}x${i.height}` : ''].filter(Boolean).join(' ')];
  if (i.fps) parts.push(`${+i.fps.toFixed(2)} fps`);
  if (i.audio) parts.push(i.audio);
  if (!i.recordable) parts.push('not recordable');
  return parts.join(' · ');
}

function setState(st, text, cls) {
  clear(st.state, cls ? pill(text, cls) : text);
}

// watch asks for the camera's stream and shows it until the page stops
// watching; when a stream ends (a live view times out, a recording takes
// over, the camera's format changes) it asks again.
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
      const v = await api('POST', camPath(st.c) + '/live');
      if (!live()) break;
      st.streamID = v.id;
      st.root.dataset.stream = v.id;
      const resp = await fetch(v.mp4 || v.mjpeg, { signal: ctrl.signal, credentials: 'same-origin' });
      if (!resp.ok) {
        let msg = resp.statusText;
        try { msg = (await resp.json()).error || msg; } catch { /* not JSON */ }
        throw new Error(msg);
      }
      setState(st, v.live_only ? 'live' : 'live · recording', v.live_only ? 'streaming' : 'recording');
      if (v.mp4) {
        if (!st.video) throw new Error('this camera now sends video: reload the page');
        const began = Date.now();
        await playMP4(st.video, resp, ctrl.signal, () => { if (live()) counted(st); });
        // The stream ended: ask again, after a breath if it was short-lived.
        if (Date.now() - began < 5000) await new Promise(r => setTimeout(r, 1000));
      } else {
        if (!st.img) throw new Error('this camera now sends pictures: reload the page');
        await readMJPEG(resp, (jpeg) => { if (live()) show(st, jpeg); });
      }
    } catch (e) {
      if (!live()) break;
      if (e instanceof CodecError) {
        stop(st);
        setState(st, 'cannot play', 'bad');
        st.info.textContent = `${e.message} Give camera ${st.c.id} a sub-stream in H.264 (cameras.${st.c.id}.rtsp.sub_url in vigil.yaml) for live view, or use a browser that plays ${e.codec}.`;
        break;
      }
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
    counted(st, st.img.naturalWidth);
  }).catch(() => { /* a newer frame replaced it before it was decoded */ });
}

// counted notes a frame on screen: the count and the rate in the bar,
// data-frames and a "frame" event for tests.
function counted(st, width) {
  if (st.video) st.video.hidden = false;
  st.frames++;
  const now = performance.now();
  st.times.push(now);
  while (st.times.length && st.times[0] < now - 3000) st.times.shift();
  const fps = st.times.length > 1 ? (st.times.length - 1) / ((now - st.times[0]) / 1000) : 0;
  st.info.textContent = `${st.frames} frames · ${fps.toFixed(1)} fps`;
  st.root.dataset.frames = st.frames;
  st.root.dispatchEvent(new CustomEvent('frame', { detail: { frames: st.frames, width: width ?? st.video?.videoWidth } }));
}

function stop(st) {
  st.watching = false;
  st.gen++;
  st.ctrl?.abort(); // ends the fetch: the agent's stream may end when no one watches
  if (st.video) st.video.hidden = true;
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

// A camera's stream changed (a recording took over): reconnect to it. An
// RTSP camera's ring (its pre-roll) is its stream only when it has no
// other.
function agents(v) {
  const byCam = new Map();
  for (const s of v.streams.concat(v.queue)) {
    const k = s.site + '/' + s.camera;
    if (s.kind !== 'ring' || !byCam.has(k)) byCam.set(k, s);
  }
  for (const [k, st] of cards) {
    const s = byCam.get(k);
    if (st.watching && s && st.streamID && s.id !== st.streamID) st.ctrl?.abort();
  }
}

addEventListener('pagehide', () => { for (const st of cards.values()) stop(st); });
load().catch(e => toast(e.message, true));
stream(['agents'], { agents, reload: () => load().catch(() => {}) });
