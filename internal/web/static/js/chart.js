// A small SVG time-series chart of our own: lines (optionally as steps),
// an optional min-max band, time and value axes with readable ticks, and
// a hover readout. chart(container, {series, band, yUnit, from, to}).

const NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

// niceTicks returns about n round values covering [lo, hi].
export function niceTicks(lo, hi, n, integer) {
  if (!(hi > lo)) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  if (integer) { lo = Math.min(lo, 0); hi = Math.max(Math.ceil(hi), 1); }
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(x => x >= raw);
  if (integer) step = Math.max(1, Math.round(step));
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return { ticks: out, lo: Math.min(lo, out[0] ?? lo), hi: Math.max(hi, out[out.length - 1] ?? hi) };
}

const timeSteps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map(x => x * 1000);
function timeTicks(from, to, n) {
  const step = timeSteps.find(x => x >= (to - from) / n) || 86400000 * Math.ceil((to - from) / n / 86400000);
  const off = new Date().getTimezoneOffset() * 60000;
  const out = [];
  for (let t = Math.ceil((from - off) / step) * step + off; t <= to; t += step) out.push(t);
  return { ticks: out, step };
}
function timeLabel(t, step, span) {
  const d = new Date(t);
  if (span > 86400000 * 1.5 && step >= 86400000) return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  if (span > 86400000 * 1.5) return d.toLocaleString(undefined, { weekday: 'short', hour: '2-digit', minute: '2-digit' });
  return d.toLocaleTimeString(undefined, step < 60000 ? { hour: '2-digit', minute: '2-digit', second: '2-digit' } : { hour: '2-digit', minute: '2-digit' });
}

// chart draws into container. series: [{name, points: [[t, v], ...], step}]
// with t in ms; band: [[t, min, max], ...]; from/to bound the time axis;
// integer: counts, whose axis has whole numbers only.
export function chart(container, { series, band, yUnit = '', from, to, label = 'chart', integer = false, fmt = (v) => String(+v.toFixed(2)) }) {
  const W = Math.max(container.clientWidth || 600, 280), H = 260;
  const m = { l: 48, r: 12, t: 12, b: 28 };
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label });
  const pts = series.flatMap(x => x.points);
  const all = pts.map(p => p[1]).concat((band || []).flatMap(b => [b[1], b[2]]));
  if (pts.length === 0 && !(band && band.length)) {
    svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, 'No data in this range'));
    container.replaceChildren(svg);
    return;
  }
  from = from ?? Math.min(...pts.map(p => p[0]));
  to = to ?? Math.max(...pts.map(p => p[0]));
  if (to <= from) to = from + 1000;
  const y = niceTicks(Math.min(...all), Math.max(...all), 5, integer);
  const X = (t) => m.l + (t - from) / (to - from) * (W - m.l - m.r);
  const Y = (v) => H - m.b - (v - y.lo) / (y.hi - y.lo) * (H - m.t - m.b);

  for (const v of y.ticks) {
    svg.append(s('line', { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v), class: 'grid-line' }));
    svg.append(s('text', { x: m.l - 6, y: Y(v) + 4, 'text-anchor': 'end' }, fmt(v) + (yUnit && v === y.ticks[y.ticks.length - 1] ? ' ' + yUnit : '')));
  }
  const tt = timeTicks(from, to, Math.max(2, Math.floor((W - m.l - m.r) / 90)));
  for (const t of tt.ticks) {
    svg.append(s('line', { x1: X(t), x2: X(t), y1: H - m.b, y2: H - m.b + 4, class: 'axis' }));
    svg.append(s('text', { x: X(t), y: H - 8, 'text-anchor': 'middle' }, timeLabel(t, tt.step, to - from)));
  }
  svg.append(s('line', { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: 'axis' }));

  if (band && band.length) {
    const top = band.map(b => `${X(b[0]).toFixed(1)},${Y(b[2]).toFixed(1)}`);
    const bottom = band.slice().reverse().map(b => `${X(b[0]).toFixed(1)},${Y(b[1]).toFixed(1)}`);
    svg.append(s('polygon', { points: top.concat(bottom).join(' '), class: 'band' }));
  }
  series.forEach((ser, i) => {
    if (ser.points.length === 0) return;
    let d = '';
    ser.points.forEach((p, j) => {
      const x = X(p[0]).toFixed(1), yy = Y(p[1]).toFixed(1);
      if (j === 0) d += `M${x},${yy}`;
      else if (ser.step) d += `H${x}V${yy}`;
      else d += `L${x},${yy}`;
    });
    if (ser.step) d += `H${X(to).toFixed(1)}`;
    svg.append(s('path', { d, class: 's' + i }));
    if (ser.points.length === 1) svg.append(s('circle', { cx: X(ser.points[0][0]), cy: Y(ser.points[0][1]), r: 3, class: 'dot' }));
  });

  // Hover: the nearest point of the first series.
  const first = series.find(x => x.points.length) || { points: [] };
  const hl = s('line', { y1: m.t, y2: H - m.b, class: 'hover-line', visibility: 'hidden' });
  const tip = s('g', { visibility: 'hidden' });
  const box = s('rect', { rx: 4, class: 'tip', height: 20 });
  const txt = s('text', { class: 'tip-text', y: 14 });
  tip.append(box, txt);
  svg.append(hl, tip);
  svg.addEventListener('pointermove', (e) => {
    const r = svg.getBoundingClientRect();
    const t = from + ((e.clientX - r.left) * W / r.width - m.l) / (W - m.l - m.r) * (to - from);
    let best = null;
    for (const p of first.points) if (!best || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
    if (!best) return;
    const vals = series.map(ser => {
      let q = null;
      for (const p of ser.points) if (p[0] <= best[0] + 1) q = p;
      return q ? `${ser.name} ${fmt(q[1])}` : '';
    }).filter(Boolean).join(' · ');
    txt.textContent = `${new Date(best[0]).toLocaleTimeString()}  ${vals}${yUnit ? ' ' + yUnit : ''}`;
    const w = txt.getComputedTextLength() + 12;
    const x = Math.min(Math.max(X(best[0]) - w / 2, 0), W - w);
    box.setAttribute('width', w);
    tip.setAttribute('transform', `translate(${x},${m.t})`);
    txt.setAttribute('x', 6);
    hl.setAttribute('x1', X(best[0])); hl.setAttribute('x2', X(best[0]));
    hl.setAttribute('visibility', 'visible'); tip.setAttribute('visibility', 'visible');
  });
  svg.addEventListener('pointerleave', () => { hl.setAttribute('visibility', 'hidden'); tip.setAttribute('visibility', 'hidden'); });
  container.replaceChildren(svg);
}
