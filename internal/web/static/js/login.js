import { api } from './app.js';

const form = document.getElementById('login-form');
const err = document.getElementById('login-error');
form.addEventListener('submit', async (e) => {
  e.preventDefault();
  err.hidden = true;
  const btn = document.getElementById('login-submit');
  btn.disabled = true;
  try {
    await api('POST', '/api/v1/login', { username: form.username.value.trim(), password: form.password.value });
    // Only this site, and as an absolute URL: a path like /.//host is
    // resolved to //host, which would be another site if used as a path.
    const next = new URL(new URLSearchParams(location.search).get('next') || '/', location.origin);
    location.href = next.origin === location.origin ? next.href : '/';
  } catch (x) {
    err.textContent = x.status === 401 ? 'Wrong username or password.' : x.message;
    err.hidden = false;
    form.password.select();
  } finally {
    btn.disabled = false;
  }
});
