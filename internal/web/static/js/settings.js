import { api, el, clear, pill, me, guard, toast, fmtTime, stream } from './app.js';

stream([], {}); // the banner's alerts

// This device: Web Push.
const pushState = document.getElementById('push-state');
const pushBtn = document.getElementById('push-toggle');

function b64url(s) {
  const pad = '='.repeat((4 - s.length % 4) % 4);
  const raw = atob((s + pad).replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(raw, c => c.charCodeAt(0));
}

async function pushSetup() {
  if (!('serviceWorker' in navigator) || !('PushManager' in window)) {
    pushState.textContent = window.isSecureContext ? 'This browser cannot receive push notifications.' : 'Push notifications need Vigil over https (or on localhost).';
    return;
  }
  const reg = await navigator.serviceWorker.register('/sw.js');
  const render = async () => {
    const sub = await reg.pushManager.getSubscription();
    pushBtn.hidden = false;
    if (Notification.permission === 'denied') {
      pushState.textContent = 'Notifications are blocked for this site in the browser settings.';
      pushBtn.hidden = true;
    } else if (sub) {
      pushState.textContent = 'This device gets notifications of intrusions and alerts.';
      pushBtn.textContent = 'Stop notifying this device';
      pushBtn.className = 'btn';
    } else {
      pushState.textContent = 'This device does not get notifications.';
      pushBtn.textContent = 'Notify this device';
      pushBtn.className = 'btn primary';
    }
  };
  pushBtn.addEventListener('click', () => guard(async () => {
    const sub = await reg.pushManager.getSubscription();
    if (sub) {
      await api('DELETE', '/api/v1/notify/subscriptions', { endpoint: sub.endpoint }).catch(() => {});
      await sub.unsubscribe();
      toast('This device will not be notified');
    } else {
      if (await Notification.requestPermission() !== 'granted') { toast('Notifications were not allowed', true); await render(); return; }
      const { public_key: key } = await api('GET', '/api/v1/notify/vapid');
      const s = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64url(key) });
      // Refused (another user's browser, too many browsers, a push service
      // Vigil does not send to): the browser stays unsubscribed.
      await api('POST', '/api/v1/notify/subscriptions', s.toJSON()).catch(async (x) => { await s.unsubscribe(); throw x; });
      toast('This device will be notified');
    }
    await render();
  }));
  await render();
}
pushSetup().catch(e => { pushState.textContent = 'Notifications are unavailable here: ' + e.message; });

document.getElementById('my-password').addEventListener('submit', (e) => {
  e.preventDefault();
  const f = e.target;
  guard(async () => {
    await api('PATCH', '/api/v1/users/' + encodeURIComponent(me.user), { password: f.new.value, current_password: f.current.value });
    f.reset();
    toast('Password changed; your other sessions were logged out');
  });
});

if (me.admin) {
  let sites = [];
  let plans = {};
  let channels = [];

  const planText = (p) => p ? `${p.max_clips} clips, ${p.width}×${p.height} at ${p.fps} fps, quality ${p.quality}` + (p.dedicated_agent ? ', a dedicated agent' : '') : '';
  async function loadPlans() {
    [sites, plans] = await Promise.all([api('GET', '/api/v1/sites'), api('GET', '/api/v1/plans')]);
    const tbody = document.querySelector('#site-plans tbody');
    clear(tbody, sites.map(s => {
      const sel = el('select', { 'aria-label': 'Plan of ' + s.name }, Object.keys(plans).sort().map(n => el('option', { value: n }, n)));
      sel.value = s.plan;
      const what = el('td', { class: 'small' }, planText(plans[s.plan]));
      sel.addEventListener('change', () => guard(async () => {
        await api('PUT', `/api/v1/sites/${encodeURIComponent(s.name)}/plan`, { plan: sel.value });
        what.textContent = planText(plans[sel.value]);
        toast(`${s.name} is on the ${sel.value} plan`);
      }));
      return el('tr', {}, el('td', {}, s.name), el('td', {}, sel), what);
    }));
    if (sites.length === 0) clear(tbody, el('tr', {}, el('td', { colspan: 3, class: 'muted' }, 'No site yet.')));
    const siteSel = document.querySelector('#channel-form select[name="site"]');
    clear(siteSel, siteSel.options[0], sites.map(s => el('option', { value: s.name }, s.name)));
  }

  function rules(c) {
    const r = [];
    if (c.min_priority) r.push('priority ≥ ' + c.min_priority);
    r.push(c.cooldown_s ? `cooldown ${c.cooldown_s} s` : 'no cooldown');
    if (c.quiet_hours) r.push('quiet ' + c.quiet_hours);
    if (c.kinds.length === 1) r.push(c.kinds[0] + 's only');
    return r.join(', ');
  }

  async function loadChannels() {
    channels = await api('GET', '/api/v1/notify/channels');
    const tbody = document.querySelector('#channels tbody');
    clear(tbody, channels.map(c => {
      const en = el('input', { type: 'checkbox', 'aria-label': 'Enable ' + c.name });
      en.checked = c.enabled;
      en.addEventListener('change', () => guard(async () => {
        const { site, kind, name, min_priority, cooldown_s, quiet_hours, url, kinds } = c;
        await api('PUT', '/api/v1/notify/channels/' + c.id, { site, kind, name, min_priority, cooldown_s, quiet_hours, url, kinds, enabled: en.checked });
        c.enabled = en.checked;
        toast(`${c.name} ${en.checked ? 'enabled' : 'disabled'}`);
      }));
      return el('tr', { dataset: { channel: c.id } },
        el('td', {}, c.name), el('td', {}, c.kind), el('td', {}, c.site || 'every site'), el('td', { class: 'small' }, rules(c)), el('td', {}, en),
        el('td', {},
          el('button', { type: 'button', class: 'btn small', onclick: () => guard(async () => {
            try { await api('POST', `/api/v1/notify/channels/${c.id}/test`); toast(`Test sent on ${c.name}`); } finally { loadDeliveries().catch(() => {}); }
          }) }, 'Test'), ' ',
          el('button', { type: 'button', class: 'btn small danger', onclick: () => guard(async () => {
            if (!confirm(`Delete the channel ${c.name}?`)) return;
            await api('DELETE', '/api/v1/notify/channels/' + c.id);
            await loadChannels();
          }) }, 'Delete')));
    }));
    if (channels.length === 0) clear(tbody, el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'No channel: nobody is notified.')));
  }

  async function loadDeliveries() {
    const ds = await api('GET', '/api/v1/notify/deliveries?limit=20');
    const names = new Map(channels.map(c => [c.id, c.name]));
    clear(document.querySelector('#deliveries tbody'), ds.map(d => el('tr', {},
      el('td', {}, fmtTime(d.time)), el('td', {}, names.get(d.channel_id) || d.channel_id), el('td', {}, d.title),
      el('td', { class: 'num' }, d.attempts), el('td', {}, d.ok ? pill('sent', 'ok') : [pill('failed', 'bad'), ' ', el('small', {}, d.error || '')]))));
  }

  document.getElementById('channel-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const f = e.target;
    const kinds = [];
    if (f.k_intrusion.checked) kinds.push('intrusion');
    if (f.k_alert.checked) kinds.push('alert');
    guard(async () => {
      await api('POST', '/api/v1/notify/channels', {
        name: f.name.value, kind: f.kind.value, url: f.url.value, secret: f.secret.value || undefined, site: f.site.value,
        min_priority: +f.min_priority.value, cooldown_s: +f.cooldown_s.value, quiet_hours: f.quiet_hours.value, kinds: kinds.length === 2 ? [] : kinds,
      });
      f.reset();
      document.getElementById('add-channel').open = false;
      toast('Channel added');
      await loadChannels();
    });
  });

  async function loadUsers() {
    const us = await api('GET', '/api/v1/users');
    clear(document.querySelector('#users tbody'), us.map(u => el('tr', { dataset: { user: u.name } },
      el('td', {}, u.name, u.name === me.user ? el('small', { class: 'muted' }, ' (you)') : ''), el('td', {}, u.role), el('td', {}, fmtTime(u.created)),
      el('td', {}, u.name === me.user ? '' : [
        el('button', { type: 'button', class: 'btn small', onclick: () => guard(async () => {
          const p = prompt(`New password for ${u.name} (at least 8 characters):`);
          if (!p) return;
          await api('PATCH', '/api/v1/users/' + encodeURIComponent(u.name), { password: p });
          toast(`Password of ${u.name} changed`);
        }) }, 'Set password'), ' ',
        el('button', { type: 'button', class: 'btn small danger', onclick: () => guard(async () => {
          if (!confirm(`Remove the user ${u.name}?`)) return;
          await api('DELETE', '/api/v1/users/' + encodeURIComponent(u.name));
          await loadUsers();
        }) }, 'Remove')]))));
  }
  document.getElementById('user-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const f = e.target;
    guard(async () => {
      await api('POST', '/api/v1/users', { name: f.name.value, role: f.role.value, password: f.password.value });
      f.reset();
      toast('User added');
      await loadUsers();
    });
  });

  loadPlans().catch(e => toast(e.message, true));
  loadChannels().then(loadDeliveries).catch(e => toast(e.message, true));
  loadUsers().catch(e => toast(e.message, true));
}
