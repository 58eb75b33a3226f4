// Reads a multipart/x-mixed-replace JPEG stream with fetch, frame by
// frame, so the page knows when each frame arrives and when the stream
// ends (an <img> pointed at the stream tells neither).

const enc = new TextEncoder();
const dec = new TextDecoder();

function indexOf(buf, pat, from) {
  outer: for (let i = from; i <= buf.length - pat.length; i++) {
    for (let j = 0; j < pat.length; j++) if (buf[i + j] !== pat[j]) continue outer;
    return i;
  }
  return -1;
}

// readMJPEG calls onFrame(Uint8Array) for every JPEG of the response and
// resolves when the stream ends.
export async function readMJPEG(resp, onFrame) {
  const m = /boundary="?([^";]+)"?/i.exec(resp.headers.get('Content-Type') || '');
  if (!m) throw new Error('not a multipart stream');
  const delim = enc.encode('--' + m[1]);
  const crlf2 = enc.encode('\r\n\r\n');
  const reader = resp.body.getReader();
  let buf = new Uint8Array(0);
  let need = null; // {start, len}: a frame whose body we wait for
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const next = new Uint8Array(buf.length + value.length);
    next.set(buf); next.set(value, buf.length);
    buf = next;
    for (;;) {
      if (need) {
        if (buf.length < need.start + need.len) break;
        onFrame(buf.slice(need.start, need.start + need.len));
        buf = buf.slice(need.start + need.len);
        need = null;
        continue;
      }
      const b = indexOf(buf, delim, 0);
      if (b < 0) break;
      const h = indexOf(buf, crlf2, b);
      if (h < 0) break;
      const headers = dec.decode(buf.slice(b + delim.length, h));
      const len = /content-length:\s*(\d+)/i.exec(headers);
      if (!len) { // no length: the body runs to the next boundary
        const e = indexOf(buf, delim, h + 4);
        if (e < 0) break;
        onFrame(buf.slice(h + 4, Math.max(h + 4, e - 2)));
        buf = buf.slice(e);
        continue;
      }
      need = { start: h + 4, len: +len[1] };
    }
    if (buf.length > 32 << 20) throw new Error('frame too large');
  }
}
