import { api, el, clear, pill, me, stream, guard, toast, fmtTime } from './app.js';

const order = ['critical', 'high', 'medium', 'low', 'info'];
const sevClass = { critical: 'bad', high: 'bad', medium: 'queued', low: 'stopping', info: 'ok' };

function renderAudit(rec) {
  const sum = document.getElementById('audit-summary');
  const list = document.getElementById('findings');
  if (!rec) {
    clear(sum, el('p', { class: 'muted' }, 'No audit yet: vigil up audits its broker a few seconds after it starts.'));
    clear(list);
    return;
  }
  const r = rec.report;
  clear(sum,
    el('span', { class: 'grade grade-' + r.grade, 'aria-label': 'Grade ' + r.grade }, r.grade),
    el('div', {},
      el('p', {}, el('strong', {}, r.target), r.broker ? ' · ' + r.broker : ''),
      el('p', { class: 'muted small' }, `${fmtTime(r.started)} · ${rec.trigger} · ${(r.duration_ms / 1000).toFixed(1)} s · ` +
        `${r.checks.filter(c => c.status !== 'skipped').length} checks run, ${r.checks.filter(c => c.status === 'skipped').length} skipped`)));
  const groups = order.map(sev => [sev, r.findings.filter(f => f.severity === sev)]).filter(([, fs]) => fs.length);
  clear(list, groups.map(([sev, fs]) => el('section', { class: 'sev-group' },
    el('h3', {}, pill(sev, sevClass[sev]), ` ${fs.length} finding${fs.length === 1 ? '' : 's'}`),
    fs.map(f => el('details', { class: 'finding', open: sev !== 'info' && sev !== 'low', dataset: { check: f.id } },
      el('summary', {}, el('code', {}, f.id), ' ', f.title),
      f.evidence ? el('pre', {}, f.evidence) : null,
      el('p', {}, el('strong', {}, 'Fix: '), f.remediation))))));
}

async function loadAudits() {
  const [list, latest] = await Promise.all([api('GET', '/api/v1/audits?limit=30'), api('GET', '/api/v1/audits/latest').catch(e => e.status === 404 ? null : Promise.reject(e))]);
  renderAudit(latest);
  clear(document.querySelector('#audits tbody'), list.map(a => el('tr', {},
    el('td', {}, fmtTime(a.started)), el('td', {}, a.trigger), el('td', {}, a.target), el('td', {}, a.grade), el('td', { class: 'num' }, a.findings))));
}

async function loadWatch() {
  const st = await api('GET', '/api/v1/watch');
  const tbody = document.querySelector('#watch tbody');
  if (st.length === 0) {
    clear(tbody, el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'No broker is watched: list them under watch.targets in vigil.yaml (or run vigil watch).')));
    return;
  }
  clear(tbody, st.map(s => el('tr', { dataset: { target: s.target } },
    el('td', {}, el('strong', {}, s.target), el('br'), el('small', { class: 'muted' }, s.url)),
    el('td', {}, s.probes === 0 ? pill('waiting', 'starting') : pill(s.up ? 'up' : 'down', s.up ? 'ok' : 'bad'), s.latency_breach ? [' ', pill('slow', 'queued')] : null),
    el('td', { class: 'num' }, s.probes ? s.uptime_percent.toFixed(2) + ' %' : '–'),
    el('td', { class: 'num' }, s.probes ? `${s.latency_p50_ms.toFixed(1)} / ${s.latency_p99_ms.toFixed(1)} ms` : '–'),
    el('td', { class: 'small' }, s.last_probe ? [fmtTime(s.last_probe.at), s.last_probe.error ? [el('br'), el('span', { class: 'error' }, s.last_probe.error)] : null] : '–'),
    el('td', { class: 'small' }, s.outages.length ? s.outages.slice(-3).map(o => el('div', {}, `${fmtTime(o.start)} → ${o.end ? fmtTime(o.end) : 'ongoing'}`)) : 'none'))));
}

async function loadBlocks() {
  const bs = await api('GET', '/api/v1/mqtt/blocks');
  const tbody = document.querySelector('#blocks tbody');
  if (bs.length === 0) {
    clear(tbody, el('tr', {}, el('td', { colspan: 5, class: 'muted' }, 'Nobody is blocked.')));
    return;
  }
  clear(tbody, bs.map(b => el('tr', {},
    el('td', {}, `${b.kind} `, el('code', {}, b.key)),
    el('td', {}, b.reason === 'flood' ? `flooding (${b.count} messages in ${b.window_s} s)` : `${b.count} failed logins in ${b.window_s} s`),
    el('td', {}, fmtTime(b.since)), el('td', {}, fmtTime(b.until)),
    el('td', {}, me.admin ? el('button', { type: 'button', class: 'btn small', onclick: () => guard(async () => {
      await api('DELETE', '/api/v1/mqtt/blocks/' + encodeURIComponent(b.key));
      toast(`${b.key} unblocked`);
      await loadBlocks();
    }) }, 'Unblock') : ''))));
}

const runBtn = document.getElementById('run-audit');
runBtn?.addEventListener('click', () => guard(async () => {
  runBtn.disabled = true;
  runBtn.textContent = 'Auditing…';
  try {
    const rec = await api('POST', '/api/v1/audits');
    toast(`Audit done: grade ${rec.grade}`);
    await loadAudits();
  } finally {
    runBtn.disabled = false;
    runBtn.textContent = 'Run audit now';
  }
}));

const reload = () => Promise.all([loadAudits(), loadWatch(), loadBlocks()]).catch(e => toast(e.message, true));
reload();
setInterval(() => loadWatch().catch(() => {}), 15000);
stream(['audit', 'watch', 'block'], {
  reload,
  audit: () => loadAudits().catch(() => {}),
  watch: () => loadWatch().catch(() => {}),
  block: () => loadBlocks().catch(() => {}),
});
