// Plays an RTSP camera's live view in a <video>: the fragmented MP4 of
// live.mp4 (a header, then a fragment per picture, the camera's own H.264)
// through Media Source Extensions, kept close to live.

const MS = window.ManagedMediaSource || window.MediaSource;
const BEHIND = 0.5; // s of video buffered ahead of the playhead before it jumps
const TARGET = 0.1; // s behind the newest picture after a jump
const KEEP = 10; // s of video kept behind the playhead
const STALL = 15000; // ms without data before the stream counts as lost
const QUEUE = 32 << 20; // bytes waiting for the SourceBuffer before giving up
const SAMPLES = 300; // latency samples kept

// stats is what the page measures of live video, for tests and curious
// users (window.vigilLiveStats): the frames presented, and the latency of
// the last ones in ms, from when the agent received a picture to when the
// browser presented it.
export const stats = { frames: 0, latencies: [], errors: [] };
window.vigilLiveStats = stats;

// CodecError says the browser cannot play the stream's codec; codec is its
// common name (H.264, H.265).
export class CodecError extends Error {
  constructor(codec, type) {
    super(`This browser cannot play ${codec} video (${type}).`);
    this.codec = codec;
  }
}

// codecName names the codecs of a type: video/mp4; codecs="avc1.64001f".
export function codecName(type) {
  if (/hvc1|hev1/.test(type)) return 'H.265';
  if (/avc1|avc3/.test(type)) return 'H.264';
  return (/codecs="([^"]*)"/.exec(type) || [])[1] || type || 'this';
}

function mediaError(video) {
  const e = video.error;
  return e ? `media error ${e.code}${e.message ? ': ' + e.message : ''}` : '';
}

function concat(chunks, n) {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

// playMP4 plays a live.mp4 response in video until the stream ends (it
// resolves: the page asks again) or fails (it throws); aborting signal
// stops it. onFrame() is called for each frame the browser presents.
export async function playMP4(video, resp, signal, onFrame) {
  const type = resp.headers.get('X-Vigil-Codec') || '';
  const origin = Number(resp.headers.get('X-Vigil-Origin'));
  if (!MS || !MS.isTypeSupported(type)) throw new CodecError(codecName(type), type);

  let fail;
  const failed = new Promise((_, reject) => { fail = reject; });
  failed.catch(() => {}); // raced below; a late failure is no one's concern
  const onAbort = () => fail(new DOMException('stopped', 'AbortError'));
  const onError = () => fail(new Error(mediaError(video) || 'the browser cannot play the video'));
  signal.addEventListener('abort', onAbort);
  video.addEventListener('error', onError);

  const ms = new MS();
  const url = URL.createObjectURL(ms);
  video.disableRemotePlayback = true; // ManagedMediaSource (Safari) wants it
  video.src = url;
  const reader = resp.body.getReader();
  let timer, frameCB = 0;
  const tick = () => onFrame?.();
  const watchdog = () => {
    clearTimeout(timer);
    timer = setTimeout(() => fail(new Error(`no video for ${STALL / 1000} s`)), STALL);
  };
  try {
    watchdog();
    await Promise.race([new Promise(r => ms.addEventListener('sourceopen', r, { once: true })), failed]);
    URL.revokeObjectURL(url);
    ms.duration = Infinity; // live: Chromium then shows pictures as they come
    const sb = ms.addSourceBuffer(type);
    sb.mode = 'segments';
    sb.addEventListener('error', onError);

    const queue = [];
    let queued = 0;
    let playing = false;
    let frameDur = 0.1, lastMedia = -1; // s between pictures, as presented
    // chase keeps the playhead near the newest picture, and out of gaps.
    const chase = () => {
      const b = video.buffered;
      if (b.length === 0) return;
      const t = video.currentTime, end = b.end(b.length - 1), last = b.start(b.length - 1);
      if (end - t > BEHIND || t < b.start(0)) {
        video.currentTime = Math.max(last, end - TARGET);
      } else {
        for (let i = 0; i < b.length; i++) {
          if (t >= b.start(i) && t < b.end(i)) break;
          if (t < b.start(i)) { video.currentTime = b.start(i); break; }
        }
      }
      // Between jumps, play a little faster while more than two pictures or
      // so are buffered ahead (about two when all goes well, as a picture
      // arrives), so that a slow start or a stall does not stay as latency.
      const ahead = end - video.currentTime;
      if (ahead > 2.5 * frameDur + 0.03) video.playbackRate = 1.1;
      else if (ahead < 2 * frameDur) video.playbackRate = 1;
      if (!playing) {
        playing = true;
        video.play().catch((e) => { if (e.name === 'NotAllowedError') video.controls = true; }); // autoplay refused: the user may press play
      }
    };
    // pump hands the SourceBuffer what arrived, or first drops what was
    // played long ago, one operation at a time.
    const pump = () => {
      if (sb.updating || ms.readyState !== 'open') return;
      try {
        const b = sb.buffered, t = video.currentTime;
        if (b.length && t - b.start(0) > KEEP + 5) {
          sb.remove(0, t - KEEP);
          return;
        }
        if (queue.length === 0) return;
        const data = concat(queue, queued);
        queue.length = 0;
        queued = 0;
        sb.appendBuffer(data);
      } catch (e) {
        fail(e);
      }
    };
    sb.addEventListener('updateend', () => {
      if (ms.readyState !== 'open') return;
      chase();
      pump();
    });

    if (video.requestVideoFrameCallback && Number.isFinite(origin)) {
      const presented = (now, meta) => {
        frameCB = video.requestVideoFrameCallback(presented);
        const d = meta.mediaTime - lastMedia;
        if (lastMedia >= 0 && d > 0 && d < 1) frameDur += (d - frameDur) / 10;
        lastMedia = meta.mediaTime;
        stats.frames++;
        stats.latencies.push(Math.round(performance.timeOrigin + now - (origin + meta.mediaTime * 1000)));
        if (stats.latencies.length > SAMPLES) stats.latencies.shift();
        onFrame?.();
      };
      frameCB = video.requestVideoFrameCallback(presented);
    } else {
      video.addEventListener('playing', tick); // no count of frames: it shows that it plays
    }

    const read = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        watchdog();
        queue.push(value);
        queued += value.length;
        if (queued > QUEUE) throw new Error('the browser does not keep up with the video');
        pump();
      }
    })();
    read.catch(() => {}); // raced below; after a failure it may fail too
    await Promise.race([read, failed]);
  } catch (e) {
    if (e.name !== 'AbortError') {
      stats.errors.push(e.message);
      if (stats.errors.length > 10) stats.errors.shift();
    }
    throw e;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    video.removeEventListener('error', onError);
    video.removeEventListener('playing', tick);
    if (frameCB) video.cancelVideoFrameCallback(frameCB);
    reader.cancel().catch(() => {});
    if (ms.readyState === 'open') { try { ms.endOfStream(); } catch { /* updating: the source goes anyway */ } }
    URL.revokeObjectURL(url);
    video.removeAttribute('src');
    video.load();
  }
}
