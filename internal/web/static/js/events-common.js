// The event and clip pieces the overview and the events page share.
import { el, pill, timeEl, fmtDuration } from './app.js';

const stateNames = { recording: 'recording', queued: 'waiting for an agent', recorded: 'recorded', partial: 'partly recorded', merged: 'merged', no_camera: 'no camera' };

// preRoll says how much of a clip is from before its trigger.
export function preRoll(c) { return `starts ${+(c.pre_roll_ms / 1000).toFixed(1)} s before the trigger`; }

// clipButton is a clip's thumbnail, which opens it.
export function clipButton(c, onClip) {
  const ready = c.state === 'ready';
  const img = ready && c.thumbnail
    ? el('img', { src: `/api/v1/clips/${c.id}/thumbnail`, alt: '', loading: 'lazy', width: 176, height: 99 })
    : el('span', { class: 'noimg' }, c.state === 'failed' ? 'failed' : c.state + '…');
  return el('button', {
    type: 'button', class: 'clip', dataset: { clip: c.id }, disabled: !ready, title: c.pre_roll_ms > 0 ? preRoll(c) : undefined,
    'aria-label': `Play the clip of ${c.camera}` + (ready ? `, ${fmtDuration(c.duration_ms)}` : ` (${c.state})`),
    onclick: () => onClip ? onClip(c) : (location.href = `/events/${c.event_id}?clip=${c.id}`),
  }, img, el('span', {}, c.camera, ready ? ' · ' + fmtDuration(c.duration_ms) : '', c.interrupted ? ' · interrupted' : ''));
}

// eventItem is one event of a timeline, with its clips.
export function eventItem(ev, clips, opts = {}) {
  const li = el('li', { class: 'event' + (ev._new ? ' new' : ''), id: 'event-' + ev.id, dataset: { event: ev.id } },
    el('div', { class: 'event-head' },
      timeEl(ev.start),
      el('span', {}, el('strong', {}, ev.site), ' · ', ev.sensor, ev.distance_m !== undefined ? ` at ${ev.distance_m.toFixed(1)} m` : ''),
      pill(stateNames[ev.state] || ev.state, ev.state),
      opts.compact ? null : el('small', { class: 'muted' }, ev.cameras.length ? 'cameras: ' + ev.cameras.join(', ') : '')),
    clips.length ? el('div', { class: 'clips' }, clips.map(c => clipButton(c, opts.onClip))) : null);
  delete ev._new;
  return li;
}
