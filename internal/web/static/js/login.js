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
    const next = new URLSearchParams(location.search).get('next') || '/';
    location.href = next.startsWith('/') && !next.startsWith('//') ? next : '/';
  } catch (x) {
    err.textContent = x.status === 401 ? 'Wrong username or password.' : x.message;
    err.hidden = false;
    form.password.select();
  } finally {
    btn.disabled = false;
  }
});
