// Vigil's service worker: it shows Web Push notifications (intrusions and
// alerts) and opens the event when one is clicked.

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

self.addEventListener('push', (e) => {
  let d = {};
  try { d = e.data ? e.data.json() : {}; } catch { d = { title: 'Vigil', body: e.data ? e.data.text() : '' }; }
  const when = d.time ? new Date(d.time).toLocaleString() : '';
  const where = [d.site, d.camera].filter(Boolean).join(' · ');
  const body = [d.body, [where, when].filter(Boolean).join(' — ')].filter(Boolean).join('\n');
  e.waitUntil(self.registration.showNotification(d.title || 'Vigil', {
    body, tag: d.event_id || d.title || 'vigil', renotify: true, icon: '/static/icon.svg', badge: '/static/icon.svg',
    timestamp: d.time ? new Date(d.time).getTime() : Date.now(), data: { url: d.url || '/' },
  }));
});

self.addEventListener('notificationclick', (e) => {
  e.notification.close();
  const url = new URL(e.notification.data?.url || '/', self.location.origin);
  if (url.origin !== self.location.origin) return;
  e.waitUntil(self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((wins) => {
    for (const w of wins) if (w.url === url.href && 'focus' in w) return w.focus();
    return self.clients.openWindow(url.href);
  }));
});
