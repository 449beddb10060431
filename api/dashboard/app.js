/* hauld's dashboard: a client of the public API and nothing more.
 *
 * Every call carries the API token (Authorization: Bearer) when the tab has
 * one; the token is asked for when a call answers 401 and kept in
 * sessionStorage, never in a URL. Live changes come from GET /v1/events,
 * read with fetch() so the header goes along, parsed here, and resumed
 * with Last-Event-ID after a drop. Whatever the API returns is written
 * with textContent, never as HTML. */
'use strict';

(() => {
  const TOKEN_KEY = 'hauld.token';
  const TERMINAL = new Set(['succeeded', 'partial', 'failed', 'cancelled', 'timed_out']);
  const FILTER_STATES = {
    active: ['queued', 'running', 'paused'],
    problems: ['partial', 'failed', 'timed_out'],
  };
  const STATE_NAMES = { timed_out: 'timed out', half_open: 'half open' };
  const ITEMS_PAGE = 100;
  const ITEMS_MAX = 1000;       /* the API's largest items page */
  const POLL_MS = 5000;         /* lists and statistics while the stream is down */
  const STATS_EVERY_MS = 10000; /* statistics, even while the stream is up */
  const THUMBS_AT_ONCE = 4;
  const THUMB_MAX_BYTES = 8 << 20; /* larger images get no thumbnail */

  const $ = (id) => document.getElementById(id);

  /* ---- small helpers ---- */

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  /* replaceChildren() without the parts left out (null, undefined, false) */
  function fill(parent, ...children) {
    parent.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
  }

  function stateName(s) { return STATE_NAMES[s] || s; }

  function bytes(n) {
    if (n === null || n === undefined) return '—';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + '\u00a0' + u[i];
  }

  function speed(bps) { return bps > 0 ? bytes(bps) + '/s' : ''; }

  function duration(s) {
    if (s === null || s === undefined || !isFinite(s)) return '';
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + '\u00a0s';
    if (s < 3600) return Math.floor(s / 60) + '\u00a0min ' + (s % 60) + '\u00a0s';
    if (s < 86400) return Math.floor(s / 3600) + '\u00a0h ' + Math.floor((s % 3600) / 60) + '\u00a0min';
    return Math.floor(s / 86400) + '\u00a0d ' + Math.floor((s % 86400) / 3600) + '\u00a0h';
  }

  function ago(iso) {
    if (!iso) return '';
    const s = (Date.now() - Date.parse(iso)) / 1000;
    if (s < 5) return 'just now';
    return duration(s) + ' ago';
  }

  function when(iso) {
    if (!iso) return '';
    const s = (Date.parse(iso) - Date.now()) / 1000;
    return s <= 0 ? 'now' : 'in ' + duration(s);
  }

  function timeEl(iso, text) {
    if (!iso) return el('span', { class: 'muted', text: '—' });
    return el('time', { datetime: iso, title: new Date(iso).toLocaleString(), class: text ? null : 'ago' }, text || ago(iso));
  }

  function shortId(id) { return id.slice(-8); }

  function plural(n, one, many) { return n + '\u00a0' + (n === 1 ? one : many || one + 's'); }

  /* A debounced call: runs fn once, ms after the last request. */
  function later(fn, ms) {
    let t = null;
    return () => {
      if (t) return;
      t = setTimeout(() => { t = null; fn(); }, ms);
    };
  }

  /* ---- the API ---- */

  class ApiError extends Error {
    constructor(status, problem, message) {
      super(message);
      this.status = status;
      this.problem = problem;
    }
  }

  const auth = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    needed: false, /* a call answered 401 */
  };

  function headers(extra) {
    const h = Object.assign({}, extra);
    if (auth.token) h.Authorization = 'Bearer ' + auth.token;
    return h;
  }

  async function request(method, path, body, token) {
    const init = { method, cache: 'no-store', headers: { Accept: 'application/json' } };
    const t = token === undefined ? auth.token : token;
    if (t) init.headers.Authorization = 'Bearer ' + t;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, null, 'hauld cannot be reached: ' + e.message);
    }
    const text = r.status === 204 ? '' : await r.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!r.ok) {
      const detail = data && (data.detail || data.title);
      throw new ApiError(r.status, data, detail ? detail : 'HTTP ' + r.status);
    }
    return data;
  }

  /* A call with the tab's token; a 401 asks for the token. */
  async function api(method, path, body) {
    try {
      return await request(method, path, body);
    } catch (e) {
      if (e.status === 401) needToken();
      throw e;
    }
  }

  const enc = encodeURIComponent;
  const jobPath = (id) => '/v1/jobs/' + enc(id);
  const filePath = (id, index) => jobPath(id) + '/items/' + index + '/file';

  /* ---- the token ---- */

  const tokenDialog = $('token-dialog');

  function needToken() {
    auth.needed = true;
    setConn('locked');
    showBanner(auth.token ? 'hauld refused this tab\u2019s API token.' : 'hauld needs an API token.', 'Enter the token', openTokenDialog);
    if (!tokenDialog.open) openTokenDialog();
  }

  function openTokenDialog() {
    const why = $('token-why');
    if (auth.needed && auth.token)
      why.textContent = 'hauld refused the token this tab has. Enter the token from the file API_TOKEN_FILE names.';
    else if (auth.needed)
      why.textContent = 'This hauld requires an API token (API_TOKEN_FILE). It is kept for this tab only and sent as an Authorization header.';
    else
      why.textContent = 'The token is kept for this tab only and sent as an Authorization header.';
    $('token-err').textContent = '';
    $('token-input').value = '';
    $('token-forget').hidden = !auth.token;
    if (!tokenDialog.open) tokenDialog.showModal();
    $('token-input').focus();
  }

  async function submitToken(ev) {
    ev.preventDefault();
    const candidate = $('token-input').value.trim();
    const err = $('token-err');
    if (!candidate) {
      err.textContent = 'Enter a token.';
      return;
    }
    $('token-ok').disabled = true;
    err.textContent = 'Checking…';
    try {
      await request('GET', '/v1/stats', undefined, candidate);
    } catch (e) {
      err.textContent = e.status === 401
        ? 'Wrong token: hauld answered 401. Check the file API_TOKEN_FILE names.'
        : 'Could not check the token: ' + e.message;
      $('token-input').select();
      return;
    } finally {
      $('token-ok').disabled = false;
    }
    setToken(candidate);
    tokenDialog.close();
  }

  function setToken(t) {
    auth.token = t;
    auth.needed = false;
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    hideBanner();
    reloadAll();
  }

  $('token-form').addEventListener('submit', submitToken);
  $('token-cancel').addEventListener('click', () => tokenDialog.close());
  $('token-forget').addEventListener('click', () => { tokenDialog.close(); setToken(''); });
  $('token-btn').addEventListener('click', openTokenDialog);

  /* ---- banner and connection state ---- */

  function showBanner(text, action, fn) {
    const b = $('banner');
    b.replaceChildren(text);
    if (action) b.append(el('button', { type: 'button', text: action, onclick: fn }));
    b.hidden = false;
  }

  function hideBanner() { $('banner').hidden = true; }

  const CONN_TEXT = {
    off: 'not connected',
    connecting: 'connecting…',
    live: 'live',
    reconnecting: 'reconnecting…',
    locked: 'needs the API token',
    down: 'hauld unreachable',
  };

  function setConn(state) {
    const c = $('conn');
    c.dataset.state = state;
    c.textContent = CONN_TEXT[state];
  }

  /* ---- confirmation ---- */

  function confirmDialog(title, text, ok) {
    const d = $('confirm-dialog');
    $('confirm-h').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = ok;
    d.returnValue = '';
    d.showModal();
    $('confirm-cancel').focus();
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    });
  }

  /* ---- progress ---- */

  /* The bar's segments [class, width %]. A finished job: its items that
   * succeeded, failed and were skipped (only a succeeded job is all green).
   * A job still going: the bytes so far of the bytes expected when every
   * size is known, else its finished items; then its failed items in red. */
  function progressParts(state, p) {
    const total = p.total || 0;
    const pct = (n) => (total > 0 ? (100 * n) / total : 0);
    if (state === 'succeeded') return [['ok', 100]];
    if (TERMINAL.has(state)) {
      if (total === 0) return state === 'failed' ? [['fail', 100]] : [['skip', 100]];
      return [['ok', pct(p.succeeded)], ['fail', pct(p.failed)], ['skip', pct(p.skipped)]];
    }
    const fail = pct(p.failed);
    const done = p.bytes_expected > 0 ? doneShare(state, p) * 100 : pct(p.succeeded + p.skipped);
    const go = Math.min(100 - fail, done);
    return [['go', go], ['fail', fail]];
  }

  /* The share done, 0..1: bytes of bytes_expected while a job runs, finished items otherwise. */
  function doneShare(state, p) {
    if (!TERMINAL.has(state) && p.bytes_expected > 0) return Math.min(1, p.bytes / p.bytes_expected);
    return (p.percent || 0) / 100;
  }

  function renderBar(bar, state, p) {
    bar.dataset.state = state;
    const parts = progressParts(state, p);
    const share = doneShare(state, p);
    while (bar.children.length < parts.length) bar.append(el('span'));
    while (bar.children.length > parts.length) bar.lastChild.remove();
    parts.forEach(([cls, w], i) => {
      const s = bar.children[i];
      s.className = cls;
      s.style.width = w.toFixed(2) + '%';
    });
    const pct = Math.round(share * 1000) / 10;
    bar.setAttribute('aria-valuenow', String(pct));
    bar.setAttribute('aria-valuetext', progressText(state, p));
  }

  function newBar(label) {
    return el('div', { class: 'bar', role: 'progressbar', 'aria-label': label, 'aria-valuemin': '0', 'aria-valuemax': '100' });
  }

  function progressText(state, p) {
    const parts = [];
    const share = doneShare(state, p);
    if (state === 'running' || state === 'paused' || state === 'queued')
      parts.push(Math.floor(share * 100) + '%');
    if (p.bytes_expected > 0 && !TERMINAL.has(state)) parts.push(bytes(p.bytes) + ' of ' + bytes(p.bytes_expected));
    else parts.push(bytes(p.bytes));
    if (state === 'running') {
      if (p.speed_bps > 0) parts.push(speed(p.speed_bps));
      if (p.eta_s !== null && p.eta_s !== undefined) parts.push(duration(p.eta_s) + ' left');
    }
    return parts.join(' · ');
  }

  function itemsText(p) {
    const parts = [p.succeeded + ' of ' + plural(p.total, 'item') + ' done'];
    if (p.running) parts.push(p.running + ' running');
    if (p.failed) parts.push(p.failed + ' failed');
    if (p.skipped) parts.push(p.skipped + ' skipped');
    return parts.join(' · ');
  }

  /* ---- what a job allows ---- */

  function jobActions(j) {
    const a = [];
    if (j.state === 'paused') a.push('resume');
    if (j.state === 'queued' || j.state === 'running') a.push('pause');
    if (j.state === 'queued' || j.state === 'running' || j.state === 'paused') a.push('cancel');
    const p = j.progress || {};
    if (TERMINAL.has(j.state) && (j.state !== 'succeeded' || p.failed > 0 || p.skipped > 0)) a.push('retry');
    if (TERMINAL.has(j.state)) a.push('delete');
    return a;
  }

  const ACTION_TEXT = { resume: 'Resume', pause: 'Pause', cancel: 'Cancel', retry: 'Retry', delete: 'Delete' };

  function jobTitle(j) {
    if (j.label) return j.label;
    if (j.query) return '\u201c' + j.query + '\u201d';
    const srcs = (j.per_source || []).map((s) => s.source);
    const n = j.progress ? j.progress.total : 0;
    return plural(n, 'URL') + (srcs.length ? ' from ' + srcs.slice(0, 2).join(', ') + (srcs.length > 2 ? ' +' + (srcs.length - 2) : '') : '');
  }

  function renderActions(box, j, where) {
    const want = jobActions(j).join(' ');
    if (box.dataset.actions === want) return;
    const focused = box.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    box.dataset.actions = want;
    box.replaceChildren(...jobActions(j).map((a) => el('button', {
      type: 'button',
      dataset: { action: a },
      text: ACTION_TEXT[a],
      'aria-label': ACTION_TEXT[a] + ' job ' + jobTitle(j),
      onclick: (ev) => runAction(j.id, a, ev.currentTarget, where),
    })));
    if (focused) {
      const b = box.querySelector('[data-action="' + focused + '"]');
      if (b) b.focus();
    }
  }

  async function runAction(id, action, btn, where) {
    const msg = where === 'detail' ? $('detail-msg') : jobs.rows.get(id) && jobs.rows.get(id).msg;
    const job = jobs.byId(id) || (detail.job && detail.job.id === id ? detail.job : null);
    if (msg) msg.textContent = '';
    if (action === 'delete') {
      const ok = await confirmDialog('Delete this job?', 'The record of ' + (job ? jobTitle(job) : id) +
        ' (' + id + ') goes; its downloaded files stay on disk.', 'Delete job');
      if (!ok) { btn.focus(); return; }
    }
    btn.disabled = true;
    try {
      if (action === 'delete') {
        await api('DELETE', jobPath(id));
        jobs.remove(id);
        if (detail.job && detail.job.id === id) {
          location.hash = '';
          $('jobs-msg').textContent = 'Deleted job ' + id + '.';
        } else {
          $('jobs-msg').textContent = 'Deleted job ' + id + '.';
        }
        refreshStats();
        return;
      }
      const sent = fresh.n;
      const j = await api('POST', jobPath(id) + '/' + action);
      jobChanged(fromAnswer(j, sent));
    } catch (e) {
      const text = 'Could not ' + action + ' this job: ' + e.message;
      if (msg) msg.textContent = text;
      else $('jobs-msg').textContent = text;
    } finally {
      btn.disabled = false;
    }
  }

  /* ---- freshness ----
   * An answer about a job is older than an event about it that came while
   * the request was out (a retry's answer may arrive after the events of
   * the run it started). Such an answer is not shown: that event, or a
   * later one, is newer. Every change of a job publishes an event. */

  const fresh = {
    n: 0,              /* events about jobs received so far */
    seen: new Map(),   /* job id -> n at its last event */
    jobs: new Map(),   /* job id -> the newest job object known */
  };

  function jobEvent(id) { fresh.seen.set(id, ++fresh.n); }

  /* The job to show of an answer sent when fresh.n was sent. */
  function fromAnswer(j, sent) {
    if ((fresh.seen.get(j.id) || 0) > sent && fresh.jobs.has(j.id)) return fresh.jobs.get(j.id);
    fresh.jobs.set(j.id, j);
    return j;
  }

  function forgetOldJobs() {
    if (fresh.jobs.size < 2000) return;
    const keep = new Set(jobs.list.map((j) => j.id));
    if (detail.job) keep.add(detail.job.id);
    for (const id of [...fresh.jobs.keys()]) if (!keep.has(id)) { fresh.jobs.delete(id); fresh.seen.delete(id); }
  }

  /* ---- the job list ---- */

  const jobs = {
    list: [],          /* the jobs of this page, newest first */
    rows: new Map(),   /* id -> {li, ...parts} */
    cursors: [null],   /* cursors[n]: the cursor of page n */
    page: 0,
    next: null,
    filter: { state: '', label: '', limit: 50 },
    gen: 0,           /* of the newest listing asked for */
    byId(id) { return this.list.find((j) => j.id === id); },
    remove(id) {
      this.list = this.list.filter((j) => j.id !== id);
      const r = this.rows.get(id);
      if (r) r.li.remove();
      this.rows.delete(id);
    },
  };

  function filterStates() {
    const s = jobs.filter.state;
    return s ? FILTER_STATES[s] || [s] : [];
  }

  function matchesFilter(j) {
    const states = filterStates();
    if (states.length && !states.includes(j.state)) return false;
    if (jobs.filter.label && j.label !== jobs.filter.label) return false;
    return true;
  }

  async function loadJobs() {
    const q = new URLSearchParams();
    q.set('limit', String(jobs.filter.limit));
    for (const s of filterStates()) q.append('state', s);
    if (jobs.filter.label) q.set('label', jobs.filter.label);
    const cursor = jobs.cursors[jobs.page];
    if (cursor) q.set('cursor', cursor);
    const gen = ++jobs.gen;
    const sent = fresh.n;
    try {
      const d = await api('GET', '/v1/jobs?' + q);
      if (gen !== jobs.gen) return; /* a newer listing was asked for */
      forgetOldJobs();
      jobs.list = d.jobs.map((j) => fromAnswer(j, sent));
      jobs.next = d.next_cursor;
      renderJobs();
      if ($('jobs-msg').dataset.kind === 'load') $('jobs-msg').textContent = '';
    } catch (e) {
      if (e.status !== 401) {
        $('jobs-msg').textContent = 'Could not list jobs: ' + e.message;
        $('jobs-msg').dataset.kind = 'load';
      }
    }
  }

  const reloadJobsSoon = later(loadJobs, 300);

  function jobRow(j) {
    const link = el('a', { href: '#/job/' + enc(j.id) });
    const badge = el('span', { class: 'badge' });
    const meta = el('div', { class: 'job-meta' });
    const bar = newBar('Progress');
    const nums = el('div', { class: 'job-nums' });
    const actions = el('div', { class: 'actions' });
    const msg = el('p', { class: 'msg error', role: 'alert' });
    const li = el('li', { class: 'job', dataset: { id: j.id } },
      el('div', { class: 'job-title' }, badge, link), meta, bar, nums, actions, msg);
    return { li, link, badge, meta, bar, nums, actions, msg };
  }

  function fillJobRow(r, j) {
    r.li.dataset.state = j.state;
    r.link.textContent = jobTitle(j);
    r.link.title = j.id;
    r.badge.textContent = stateName(j.state);
    r.badge.dataset.state = j.state;
    const srcs = (j.query ? j.sources : (j.per_source || []).map((s) => s.source)) || [];
    fill(r.meta,
      el('span', { class: 'mono', title: j.id, text: shortId(j.id) }),
      el('span', {}, 'created ', timeEl(j.created_at)),
      j.label && j.query ? el('span', { text: '\u201c' + j.query + '\u201d' }) : null,
      srcs.length ? el('span', { text: srcs.join(', ') }) : null,
      el('span', { class: 'items-text', text: itemsText(j.progress) }),
      j.error && j.error.code ? el('span', { class: 'error', text: j.error.message || j.error.code }) : null);
    fillProgress(r, j.state, j.progress);
    renderActions(r.actions, j, 'list');
  }

  function fillProgress(r, state, p) {
    r.li.dataset.bytes = String(p.bytes);
    renderBar(r.bar, state, p);
    r.bar.setAttribute('aria-label', 'Progress of ' + r.link.textContent);
    r.nums.textContent = progressText(state, p);
    const it = r.meta.querySelector('.items-text');
    if (it) it.textContent = itemsText(p);
  }

  function renderJobs() {
    const ol = $('jobs');
    const seen = new Set();
    let prev = null;
    for (const j of jobs.list) {
      seen.add(j.id);
      let r = jobs.rows.get(j.id);
      if (!r) {
        r = jobRow(j);
        jobs.rows.set(j.id, r);
      }
      fillJobRow(r, j);
      const want = prev ? prev.nextSibling : ol.firstChild;
      if (want !== r.li) ol.insertBefore(r.li, want);
      prev = r.li;
    }
    for (const [id, r] of jobs.rows)
      if (!seen.has(id)) {
        r.li.remove();
        jobs.rows.delete(id);
      }
    $('prev').disabled = jobs.page === 0;
    $('next').disabled = !jobs.next;
    const first = jobs.page * jobs.filter.limit;
    $('page-info').textContent = jobs.list.length
      ? 'Page ' + (jobs.page + 1) + ' · jobs ' + (first + 1) + '–' + (first + jobs.list.length)
      : 'Page ' + (jobs.page + 1);
  }

  /* A job object from an event, or an answer through fromAnswer(). */
  function jobChanged(j) {
    const i = jobs.list.findIndex((x) => x.id === j.id);
    if (i >= 0) {
      if (!matchesFilter(j)) {
        reloadJobsSoon();
      } else {
        jobs.list[i] = j;
        fillJobRow(jobs.rows.get(j.id), j);
      }
    } else if (jobs.page === 0 && matchesFilter(j)) {
      reloadJobsSoon();
    }
    if (detail.job && detail.job.id === j.id) {
      const wasActive = !TERMINAL.has(detail.job.state);
      detail.job = j;
      renderDetailJob();
      if (wasActive !== !TERMINAL.has(j.state)) loadItemsSoon();
    }
  }

  function progressChanged(id, p) {
    const known = fresh.jobs.get(id);
    if (known && TERMINAL.has(known.state)) return; /* sent before the job's end */
    if (known) known.progress = Object.assign({}, known.progress, p);
    const j = jobs.byId(id);
    if (j && j !== known) j.progress = Object.assign({}, j.progress, p);
    if (j) {
      const r = jobs.rows.get(id);
      if (r) fillProgress(r, j.state, j.progress);
    }
    if (detail.job && detail.job.id === id) {
      if (detail.job !== known && detail.job !== j) detail.job.progress = Object.assign({}, detail.job.progress, p);
      renderDetailProgress();
      loadItemsSoon();
    }
  }

  $('filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    applyFilter($('f-state').value, $('f-label').value.trim(), Number($('f-limit').value));
  });
  $('f-clear').addEventListener('click', () => {
    $('f-state').value = '';
    $('f-label').value = '';
    applyFilter('', '', Number($('f-limit').value));
  });
  $('f-state').addEventListener('change', () => $('filter').requestSubmit());
  $('f-limit').addEventListener('change', () => $('filter').requestSubmit());

  function applyFilter(state, label, limit) {
    jobs.filter = { state, label, limit };
    jobs.cursors = [null];
    jobs.page = 0;
    $('f-state').value = state;
    $('f-label').value = label;
    if (location.hash.startsWith('#/job/')) location.hash = '';
    loadJobs();
  }

  $('next').addEventListener('click', () => {
    if (!jobs.next) return;
    jobs.cursors[jobs.page + 1] = jobs.next;
    jobs.page++;
    loadJobs().then(() => $('jobs-h').focus());
  });
  $('prev').addEventListener('click', () => {
    if (jobs.page === 0) return;
    jobs.page--;
    loadJobs().then(() => $('jobs-h').focus());
  });

  /* ---- one job ---- */

  const detail = {
    job: null,
    items: [],
    next: null,
    thumbs: new Map(), /* "index" -> object URL */
    queue: [],
    loading: 0,
    bar: null,
  };

  function openDetail(id) {
    if (!detail.job || detail.job.id !== id) {
      closeDetail();
      detail.job = { id, state: 'queued', progress: { total: 0 }, per_source: [] };
      $('i-state').value = '';
      $('detail-h').textContent = id;
      $('detail-msg').textContent = '';
      $('items-msg').textContent = '';
      $('items').tBodies[0].replaceChildren();
      $('per-source').tBodies[0].replaceChildren();
      fill($('detail-facts'),);
    }
    $('list-view').hidden = true;
    $('detail-view').hidden = false;
    $('archive').href = jobPath(id) + '/archive';
    $('archive').setAttribute('download', id + '.tar');
    $('detail-h').focus();
    loadDetail();
  }

  function closeDetail() {
    for (const u of detail.thumbs.values()) if (u) URL.revokeObjectURL(u);
    detail.thumbs.clear();
    detail.queue = [];
    detail.retries.clear();
    detail.job = null;
    detail.items = [];
    $('detail-view').hidden = true;
    $('list-view').hidden = false;
  }

  async function loadDetail() {
    const id = detail.job.id;
    const sent = fresh.n;
    try {
      const j = fromAnswer(await api('GET', jobPath(id)), sent);
      if (!detail.job || detail.job.id !== id) return;
      detail.job = j;
      renderDetailJob();
      await loadItems();
    } catch (e) {
      if (detail.job && detail.job.id === id) $('detail-msg').textContent = 'Could not load job ' + id + ': ' + e.message;
    }
  }

  function fact(name, value) {
    return el('div', {}, el('dt', { text: name }), el('dd', {}, value === '' || value === null || value === undefined ? '—' : value));
  }

  function seconds(v) { return v === null || v === undefined ? 'default' : v + '\u00a0s'; }

  function renderDetailJob() {
    const j = detail.job;
    $('detail-h').textContent = jobTitle(j);
    const badge = $('detail-state');
    badge.textContent = stateName(j.state);
    badge.dataset.state = j.state;
    $('detail-view').dataset.state = j.state;
    renderActions($('detail-actions'), j, 'detail');
    renderDetailProgress();
    fill($('detail-facts'),
      fact('Job', el('code', { text: j.id })),
      fact('Label', j.label),
      j.query ? fact('Query', j.query) : null,
      j.query ? fact('Sources', (j.sources || []).join(', ')) : null,
      fact('Created', timeEl(j.created_at)),
      fact('Started', timeEl(j.started_at)),
      fact('Finished', timeEl(j.finished_at)),
      fact('Deadline', j.deadline_at && !TERMINAL.has(j.state) ? timeEl(j.deadline_at, when(j.deadline_at))
        : timeEl(j.deadline_at, new Date(j.deadline_at || 0).toLocaleString())),
      fact('Max items', String(j.max)),
      fact('Priority', String(j.priority)),
      fact('Timeout', seconds(j.timeout)),
      fact('Limits', 'source ' + seconds(j.source_timeout) + ', request ' + seconds(j.request_timeout) +
        ', stall ' + seconds(j.stall_timeout) + ', retries ' + (j.max_retries === null || j.max_retries === undefined ? 'default' : j.max_retries)),
      j.error && j.error.code ? fact('Error', el('span', {}, el('span', { class: 'err-code', text: j.error.code }), ' ', j.error.message || '')) : null);
    const tb = $('per-source').tBodies[0];
    tb.replaceChildren(...(j.per_source || []).map((s) => el('tr', { dataset: { source: s.source } },
      el('td', { 'data-label': 'Source', text: s.source }),
      el('td', { 'data-label': 'State' }, el('span', { class: 'badge', dataset: { state: s.state }, text: stateName(s.state) })),
      el('td', { class: 'num', 'data-label': 'Items', text: String(s.items) }),
      el('td', { 'data-label': 'Done', text: s.succeeded + ' ok, ' + s.failed + ' failed, ' + s.skipped + ' skipped' }),
      el('td', { class: 'num', 'data-label': 'Attempts', text: s.attempts + (s.retries ? ' (' + s.retries + ' retries)' : '') }),
      el('td', { class: 'num', 'data-label': 'Bytes', text: bytes(s.bytes) }),
      el('td', { 'data-label': 'Circuit' }, el('span', { class: 'badge', dataset: { state: s.circuit }, text: stateName(s.circuit) })),
      el('td', { 'data-label': 'Error' }, s.error && s.error.code ? el('span', {}, el('span', { class: 'err-code', text: s.error.code }), ' ', s.error.message || '') : '',
        s.listing ? el('span', { class: 'err-text', text: 'listing: ' + s.listing + (s.pages ? ' after ' + plural(s.pages, 'page') : '') }) : ''))));
    if (!tb.children.length) tb.append(el('tr', { class: 'empty' }, el('td', { colspan: '8', text: 'No source yet.' })));
    const more = (j.per_source_total || 0) - (j.per_source || []).length;
    if (more > 0) tb.append(el('tr', { class: 'empty' }, el('td', { colspan: '8', text: 'and ' + plural(more, 'more source') + ' (GET /v1/jobs/' + j.id + '/sources lists them all)' })));
    $('archive').hidden = !(j.progress && j.progress.succeeded > 0);
  }

  function renderDetailProgress() {
    const j = detail.job;
    const box = $('detail-progress');
    if (!detail.bar || !box.contains(detail.bar)) {
      detail.bar = newBar('Progress of this job');
      box.replaceChildren(detail.bar, el('div', { class: 'nums' }), el('div', { class: 'nums items-line' }));
    }
    renderBar(detail.bar, j.state, j.progress);
    box.children[1].textContent = progressText(j.state, j.progress);
    box.children[2].textContent = itemsText(j.progress);
  }

  $('i-state').addEventListener('change', () => { detail.items = []; loadItems(); });
  $('back').addEventListener('click', (ev) => { ev.preventDefault(); location.hash = ''; });

  async function loadItems(more) {
    const j = detail.job;
    if (!j) return;
    const q = new URLSearchParams();
    const st = $('i-state').value;
    if (st) q.set('state', st);
    let appendFrom = null;
    if (more && detail.next) {
      q.set('cursor', detail.next);
      q.set('limit', String(ITEMS_PAGE));
      appendFrom = detail.items.length;
    } else {
      q.set('limit', String(Math.min(ITEMS_MAX, Math.max(ITEMS_PAGE, detail.items.length))));
    }
    detail.loading++;
    try {
      const d = await api('GET', jobPath(j.id) + '/items?' + q);
      if (!detail.job || detail.job.id !== j.id || st !== $('i-state').value) return;
      detail.items = appendFrom === null ? d.items : detail.items.concat(d.items);
      detail.next = d.next_cursor;
      renderItems();
      $('items-msg').textContent = detail.items.length ? '' : st ? 'No ' + st + ' items.' : 'No items yet.';
    } catch (e) {
      $('items-msg').textContent = 'Could not load the items: ' + e.message;
    } finally {
      detail.loading--;
    }
  }

  /* While a job runs, its items are read again at most once a second. */
  let itemsTimer = null;
  function loadItemsSoon() {
    if (itemsTimer || !detail.job) return;
    itemsTimer = setTimeout(() => { itemsTimer = null; loadItems(); }, 1000);
  }

  $('items-more').addEventListener('click', () => loadItems(true));

  function itemName(it) {
    if (it.path) return it.path.split('/').pop();
    try {
      const u = new URL(it.url);
      return decodeURIComponent(u.pathname.split('/').pop()) || u.host;
    } catch (e) {
      return it.url;
    }
  }

  function itemRow(it) {
    const tr = el('tr', { dataset: { index: String(it.index), state: it.state } });
    const thumb = el('td', { class: 'thumb-cell', 'data-label': 'Preview' });
    const name = itemName(it);
    let file;
    if (it.state === 'succeeded') {
      const a = el('a', { href: filePath(detail.job.id, it.index), download: name, class: 'file-link', text: name, title: 'Download ' + name });
      a.addEventListener('click', (ev) => {
        if (!auth.token) return; /* the browser downloads it itself */
        ev.preventDefault();
        downloadWithToken(a.href, name, tr);
      });
      file = a;
    } else {
      file = el('span', { text: name });
    }
    if (it.state === 'succeeded' && /^image\//.test(it.content_type || '') && it.bytes <= THUMB_MAX_BYTES) {
      thumb.append(el('img', { class: 'thumb', alt: 'Preview of ' + name, width: '48', height: '48', dataset: { src: filePath(detail.job.id, it.index) } }));
    }
    const retry = detail.retries.get(it.index);
    const expected = it.bytes_expected;
    tr.append(
      thumb,
      el('td', { class: 'num', 'data-label': '#', text: String(it.index) }),
      el('td', { class: 'file', 'data-label': 'File' }, file,
        el('span', { class: 'url', text: it.url }),
        it.resumed_from ? el('span', { class: 'url', text: 'resumed from byte ' + it.resumed_from }) : null,
        retry && it.state !== 'succeeded' && it.state !== 'failed' ? el('span', { class: 'retry', text: 'retry ' + retry.attempt + ' in ' + retry.delay_s + '\u00a0s (' + retry.reason + ')' }) : null,
        el('span', { class: 'msg error row-msg', role: 'alert' })),
      el('td', { 'data-label': 'State' }, el('span', { class: 'badge', dataset: { state: it.state }, text: stateName(it.state) })),
      el('td', { class: 'num', 'data-label': 'Attempts', text: String(it.attempts) }),
      el('td', { class: 'num', 'data-label': 'HTTP', text: it.http_status ? String(it.http_status) : '' }),
      el('td', { class: 'num bytes', 'data-label': 'Bytes', text: expected > 0 && it.state !== 'succeeded' ? bytes(it.bytes) + ' of ' + bytes(expected) : it.bytes ? bytes(it.bytes) : '' }),
      el('td', { class: 'num', 'data-label': 'Speed', text: speed(it.speed_bps) }),
      el('td', { 'data-label': 'SHA-256' }, it.sha256 ? el('details', { class: 'sha' }, el('summary', { title: it.sha256, 'aria-label': 'SHA-256 ' + it.sha256, text: it.sha256.slice(0, 12) + '…' }), el('code', { text: it.sha256 })) : ''),
      el('td', { 'data-label': 'Error' }, it.error && it.error.code ? el('span', { class: 'err-code', text: it.error.code }) : '',
        it.error && it.error.message ? el('span', { class: 'err-text', text: it.error.message }) : ''));
    return tr;
  }

  function renderItems() {
    const tb = $('items').tBodies[0];
    const open = new Set([...tb.querySelectorAll('details[open]')].map((d) => d.closest('tr').dataset.index));
    const focusedIndex = tb.contains(document.activeElement) ? document.activeElement.closest('tr').dataset.index : null;
    const focusedClass = focusedIndex !== null ? document.activeElement.className : null;
    const rows = detail.items.map(itemRow);
    tb.replaceChildren(...rows);
    for (const tr of rows) {
      if (open.has(tr.dataset.index)) {
        const d = tr.querySelector('details');
        if (d) d.open = true;
      }
      const img = tr.querySelector('img.thumb');
      if (img) thumbsSeen.observe(img);
    }
    if (focusedIndex !== null) {
      const tr = tb.querySelector('tr[data-index="' + focusedIndex + '"]');
      const target = tr && (tr.querySelector('.' + (focusedClass || 'x').split(' ')[0]) || tr.querySelector('a, summary'));
      if (target) target.focus();
    }
    $('items-more').hidden = !detail.next;
  }

  /* Thumbnails: the file fetched with the token, shown from a blob URL
   * (an <img src> could not send the Authorization header). */
  /* only the thumbnails scrolled into view are fetched */
  const thumbsSeen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      thumbsSeen.unobserve(e.target);
      showThumb(e.target);
    }
  }, { rootMargin: '200px' });

  function showThumb(img) {
    const key = img.dataset.src;
    if (detail.thumbs.has(key)) {
      const u = detail.thumbs.get(key);
      if (u) img.src = u;
      else detail.queue.push(img);
      return;
    }
    detail.thumbs.set(key, null);
    detail.queue.push(img);
    pumpThumbs();
  }

  let thumbsRunning = 0;
  function pumpThumbs() {
    while (thumbsRunning < THUMBS_AT_ONCE && detail.queue.length) {
      const img = detail.queue.shift();
      const key = img.dataset.src;
      if (detail.thumbs.get(key)) {
        img.src = detail.thumbs.get(key);
        continue;
      }
      thumbsRunning++;
      fetch(key, { headers: headers(), cache: 'no-store' })
        .then((r) => (r.ok ? r.blob() : Promise.reject(new Error('HTTP ' + r.status))))
        .then((b) => {
          const u = URL.createObjectURL(b);
          if (!detail.thumbs.has(key)) { URL.revokeObjectURL(u); return; }
          detail.thumbs.set(key, u);
          document.querySelectorAll('img.thumb').forEach((i) => { if (i.dataset.src === key) i.src = u; });
        })
        .catch(() => { img.hidden = true; })
        .finally(() => { thumbsRunning--; pumpThumbs(); });
    }
  }

  $('items').addEventListener('error', (ev) => {
    if (ev.target.matches && ev.target.matches('img.thumb')) ev.target.hidden = true; /* not an image after all */
  }, true);

  function dispositionName(h, fallback) {
    if (!h) return fallback;
    let m = /filename\*=UTF-8''([^;]+)/i.exec(h);
    if (m) {
      try { return decodeURIComponent(m[1]); } catch (e) { /* the plain name below */ }
    }
    m = /filename="([^"]*)"/i.exec(h) || /filename=([^;]+)/i.exec(h);
    return m ? m[1].trim() : fallback;
  }

  /* With a token the browser cannot follow a plain link: fetch the file
   * with the header and save it from a blob URL. */
  async function downloadWithToken(url, name, row) {
    const msg = row ? row.querySelector('.row-msg') : $('detail-msg');
    if (msg) msg.textContent = '';
    try {
      const r = await fetch(url, { headers: headers(), cache: 'no-store' });
      if (r.status === 401) needToken();
      if (!r.ok) {
        let detailText = 'HTTP ' + r.status;
        try { const p = await r.json(); detailText = p.detail || p.title || detailText; } catch (e) { /* keep the status */ }
        throw new Error(detailText);
      }
      const blob = await r.blob();
      const u = URL.createObjectURL(blob);
      const a = el('a', { href: u, download: dispositionName(r.headers.get('Content-Disposition'), name), hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(u), 60000);
    } catch (e) {
      if (msg) msg.textContent = 'Could not download ' + name + ': ' + e.message;
    }
  }

  $('archive').addEventListener('click', (ev) => {
    if (!auth.token || !detail.job) return;
    ev.preventDefault();
    downloadWithToken($('archive').href, detail.job.id + '.tar', null);
  });

  /* ---- item events ---- */

  detail.retries = new Map(); /* index -> the retry of its last failed attempt */

  function itemChanged(it) {
    if (!detail.job || detail.job.id !== it.job_id) return;
    if (it.retry) detail.retries.set(it.index, it.retry);
    loadItemsSoon();
  }

  /* ---- routing ---- */

  function route() {
    const m = /^#\/job\/([^/]+)$/.exec(location.hash);
    if (m) {
      openDetail(decodeURIComponent(m[1]));
    } else {
      const id = detail.job && detail.job.id;
      closeDetail();
      const r = id && jobs.rows.get(id);
      if (r) r.link.focus();
    }
  }
  window.addEventListener('hashchange', route);

  /* ---- new jobs ---- */

  const FIELDS = ['urls', 'query', 'sources', 'max', 'priority', 'timeout', 'label',
    'source_timeout', 'request_timeout', 'stall_timeout', 'max_retries'];
  const NUMBERS = ['max', 'priority', 'timeout', 'source_timeout', 'request_timeout', 'stall_timeout', 'max_retries'];

  function clearFieldErrors() {
    for (const f of FIELDS) {
      const e = $(f + '-err');
      e.textContent = '';
      e.hidden = true;
      const input = f === 'sources' ? $('sources-pick') : $(f);
      input.removeAttribute('aria-invalid');
    }
    $('submit-err').textContent = '';
  }

  function fieldError(field, text) {
    const e = $(field + '-err');
    e.textContent = e.textContent ? e.textContent + '\n' + text : text;
    e.hidden = false;
    const input = field === 'sources' ? $('sources-pick') : $(field);
    input.setAttribute('aria-invalid', 'true');
    if (input.closest('details')) input.closest('details').open = true;
  }

  /* errors[] of a problem next to their fields: urls[3] is the URLs
   * field's line of that URL, sources[1] the source of that name. */
  function showProblem(problem, lines, sources) {
    const errors = (problem && problem.errors) || [];
    const general = [];
    for (const e of errors) {
      const f = String(e.field || '');
      let m;
      if ((m = /^urls\[(\d+)\]/.exec(f))) {
        const i = Number(m[1]);
        fieldError('urls', 'Line ' + (lines[i] !== undefined ? lines[i] + 1 : i + 1) + ': ' + e.message);
      } else if ((m = /^sources\[(\d+)\]/.exec(f))) {
        fieldError('sources', (sources[Number(m[1])] || f) + ': ' + e.message);
      } else if (FIELDS.includes(f)) {
        fieldError(f, e.message);
      } else {
        general.push((f ? f + ': ' : '') + e.message);
      }
    }
    const detailText = (problem && (problem.detail || problem.title)) || 'the job was refused';
    $('submit-err').textContent = general.length ? detailText + ': ' + general.join('; ') : errors.length ? '' : detailText;
    const first = FIELDS.find((f) => !$(f + '-err').hidden);
    if (first) (first === 'sources' ? $('sources-pick').querySelector('input') || $('query') : $(first)).focus();
  }

  async function submitJob(ev) {
    ev.preventDefault();
    clearFieldErrors();
    $('submit-ok').textContent = '';
    const body = {};
    const lines = [];
    const urls = [];
    $('urls').value.split('\n').forEach((line, n) => {
      const u = line.trim();
      if (u) { urls.push(u); lines.push(n); }
    });
    if (urls.length) body.urls = urls;
    const query = $('query').value.trim();
    const sources = [...$('sources-pick').querySelectorAll('input:checked')].map((c) => c.value);
    if (query) body.query = query;
    if (query || sources.length) body.sources = sources;
    let bad = false;
    for (const f of NUMBERS) {
      const input = $(f);
      if (input.validity.badInput) { fieldError(f, 'must be a number'); bad = true; continue; }
      if (input.value.trim() !== '') body[f] = Number(input.value);
    }
    const label = $('label').value;
    if (label) body.label = label;
    if (!urls.length && !query && !sources.length) {
      fieldError('urls', 'Give URLs, or a query with sources.');
      bad = true;
    }
    if (bad) {
      const first = FIELDS.find((f) => !$(f + '-err').hidden);
      if (first) $(first).focus();
      return;
    }
    const btn = $('submit-btn');
    btn.disabled = true;
    try {
      const sent = fresh.n;
      const j = fromAnswer(await api('POST', '/v1/jobs', body), sent);
      $('urls').value = '';
      $('query').value = '';
      $('submit-ok').replaceChildren('Started ', el('a', { href: '#/job/' + enc(j.id), text: jobTitle(j) }), ' (' + shortId(j.id) + ').');
      jobChanged(j);
    } catch (e) {
      if (e.status === 401) $('submit-err').textContent = 'Not sent: hauld needs the API token.';
      else if (e.problem) showProblem(e.problem, lines, sources);
      else $('submit-err').textContent = 'Not sent: ' + e.message;
    } finally {
      btn.disabled = false;
    }
  }

  $('submit').addEventListener('submit', submitJob);
  $('urls').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); $('submit').requestSubmit(); }
  });

  /* ---- sources, circuits, statistics ---- */

  const sys = { sources: null, circuits: new Map(), stats: null };

  async function loadSources() {
    try {
      const d = await api('GET', '/v1/sources');
      sys.sources = d.sources;
      renderSourcePick();
      renderSources();
    } catch (e) {
      if (e.status !== 401) $('src-msg').textContent = 'Could not read the sources: ' + e.message;
    }
  }

  function renderSourcePick() {
    const box = $('sources-pick');
    const checked = new Set([...box.querySelectorAll('input:checked')].map((c) => c.value));
    if (!sys.sources.length) {
      box.replaceChildren(el('span', { class: 'muted', text: 'No query source is configured (SOURCES_DIR).' }));
      return;
    }
    box.replaceChildren(...sys.sources.map((s) => el('label', { class: s.available ? '' : 'unavailable', title: s.unavailable_reason || '' },
      el('input', { type: 'checkbox', name: 'source', value: s.name, checked: checked.has(s.name), disabled: !s.available }),
      s.name + (s.available ? '' : ' (' + (s.unavailable_reason || 'unavailable') + ')'))));
  }

  async function loadCircuits() {
    try {
      const d = await api('GET', '/v1/circuits');
      sys.circuits = new Map(d.circuits.map((c) => [c.source, c]));
      renderSources();
      $('src-msg').textContent = '';
    } catch (e) {
      if (e.status !== 401) $('src-msg').textContent = 'Could not read the circuits: ' + e.message;
    }
  }

  function circuitChanged(c) {
    sys.circuits.set(c.source, c);
    renderSources();
  }

  function counters(c) {
    return c || { attempts: 0, successes: 0, failures: 0, retries: 0, bytes: 0 };
  }

  function renderSources() {
    const ul = $('sources');
    const names = [];
    const kinds = new Map();
    for (const s of sys.sources || []) { names.push(s.name); kinds.set(s.name, s); }
    for (const n of sys.circuits.keys()) if (!kinds.has(n)) names.push(n);
    const stats = (sys.stats && sys.stats.sources) || {};
    for (const n of Object.keys(stats)) if (!names.includes(n)) names.push(n);
    const focused = ul.contains(document.activeElement) ? document.activeElement.closest('li').dataset.source : null;
    ul.replaceChildren(...names.map((n) => {
      const c = sys.circuits.get(n);
      const src = kinds.get(n);
      const st = stats[n] || {};
      const d = counters(st.downloads || st);
      const l = counters(st.listings);
      const state = c ? c.state : (st.circuit || 'closed');
      const li = el('li', { class: 'source', dataset: { source: n, state } });
      li.append(el('div', { class: 'source-name' }, n,
        el('span', { class: 'badge', dataset: { state }, text: 'circuit ' + stateName(state) }),
        el('span', { class: 'kind', text: src ? 'search source' + (src.available ? '' : ', unavailable: ' + (src.unavailable_reason || '')) : 'host' })));
      const actions = el('div', { class: 'actions' });
      if (state !== 'closed') {
        actions.append(el('button', { type: 'button', class: 'small', dataset: { action: 'reset' }, text: 'Reset', 'aria-label': 'Reset the circuit of ' + n, onclick: (ev) => resetCircuit(n, ev.currentTarget) }));
      }
      li.append(actions);
      if (c) {
        li.append(el('div', { class: 'source-line' },
          el('b', { text: c.consecutive_failures + '/' + c.threshold }), ' failures in a row · ',
          plural(c.trips, 'trip'),
          c.retry_at ? el('span', {}, ' · next probe ', el('time', { class: 'countdown', datetime: c.retry_at, title: new Date(c.retry_at).toLocaleString(), text: when(c.retry_at) })) : ''));
        if (c.last_error) li.append(el('div', { class: 'source-line last-error', text: 'last error: ' + c.last_error }));
      }
      li.append(el('div', { class: 'source-line' }, 'downloads ',
        el('b', { text: String(d.successes) }), ' ok · ', el('b', { text: String(d.failures) }), ' failed · ',
        el('b', { text: String(d.retries) }), ' retries · ', el('b', { text: bytes(d.bytes) })));
      if (src || l.attempts) {
        li.append(el('div', { class: 'source-line' }, 'listings ',
          el('b', { text: String(l.successes) }), ' ok · ', el('b', { text: String(l.failures) }), ' failed · ',
          el('b', { text: String(l.retries) }), ' retries'));
      }
      li.append(el('p', { class: 'msg error source-line', role: 'alert' }));
      return li;
    }));
    if (!names.length) ul.append(el('li', { class: 'muted', text: 'No source configured and no host seen yet.' }));
    if (focused) {
      const li = ul.querySelector('li[data-source="' + CSS.escape(focused) + '"]');
      const b = li && li.querySelector('button');
      if (b) b.focus();
    }
  }

  async function resetCircuit(name, btn) {
    btn.disabled = true;
    const li = btn.closest('li');
    try {
      const c = await api('POST', '/v1/circuits/' + enc(name) + '/reset');
      circuitChanged(c);
      refreshStats();
    } catch (e) {
      const msg = li && li.querySelector('.msg');
      if (msg) msg.textContent = 'Could not reset the circuit: ' + e.message;
      btn.disabled = false;
    }
  }

  async function loadStats() {
    try {
      sys.stats = await api('GET', '/v1/stats');
      renderStats();
      renderSources();
    } catch (e) {
      if (e.status !== 401) $('stats-msg').textContent = 'Could not read the statistics: ' + e.message;
    }
  }

  const refreshStats = later(loadStats, 1000);

  function figure(name, value) { return el('div', {}, el('dt', { text: name }), el('dd', { text: value })); }

  function renderStats() {
    const s = sys.stats;
    const d = counters(s.downloads);
    const l = counters(s.listings);
    $('stats-totals').replaceChildren(
      figure('Downloaded', bytes(d.bytes)),
      figure('Downloads ok', String(d.successes)),
      figure('Downloads failed', String(d.failures)),
      figure('Retries', String(d.retries)),
      figure('Listings ok', String(l.successes)),
      figure('Listings failed', String(l.failures)));
    $('stats-totals').dataset.successes = String(d.successes);
    $('stats-totals').dataset.failures = String(d.failures);
    const counts = $('counts');
    const order = ['running', 'queued', 'paused', 'succeeded', 'partial', 'failed', 'cancelled', 'timed_out'];
    counts.replaceChildren(...order.filter((k) => s.jobs[k] > 0 || k === 'running' || k === 'queued').map((k) =>
      el('button', {
        type: 'button', class: 'badge', dataset: { state: k, filter: k },
        'aria-label': 'Show ' + s.jobs[k] + ' ' + stateName(k) + ' jobs',
        onclick: () => { if (location.hash) location.hash = ''; applyFilter(k, '', jobs.filter.limit); },
      }, stateName(k) + ' ', el('b', { text: String(s.jobs[k]) }))));
    $('totals').textContent = 'up ' + duration(s.uptime_s) + ' · ' + bytes(d.bytes) + ' downloaded';
  }

  $('stats-reset').addEventListener('click', async (ev) => {
    const btn = ev.currentTarget;
    const ok = await confirmDialog('Reset the statistics?', 'Every counter of downloads, listings and retries, in total and per source, starts again from zero. Jobs and circuits stay as they are.', 'Reset statistics');
    if (!ok) { btn.focus(); return; }
    btn.disabled = true;
    try {
      sys.stats = await api('POST', '/v1/stats/reset');
      renderStats();
      renderSources();
      $('stats-msg').textContent = 'Statistics reset.';
    } catch (e) {
      $('stats-msg').textContent = 'Could not reset the statistics: ' + e.message;
    } finally {
      btn.disabled = false;
      btn.focus();
    }
  });

  /* ---- the event stream ---- */

  const stream = {
    gen: 0,
    ctl: null,
    lastId: null,   /* the id of the last event received */
    retryMs: 2000,  /* the server's retry: field */
    timer: null,
    events: 0,
    dropped: false, /* reconnecting after a drop */
  };

  function stopStream() {
    stream.gen++;
    if (stream.ctl) stream.ctl.abort();
    stream.ctl = null;
    clearTimeout(stream.timer);
  }

  function startStream() {
    stopStream();
    runStream(stream.gen);
  }

  async function runStream(gen) {
    const ctl = new AbortController();
    stream.ctl = ctl;
    if (!stream.dropped) setConn('connecting');
    try {
      const h = headers({ Accept: 'text/event-stream' });
      if (stream.lastId !== null) h['Last-Event-ID'] = stream.lastId;
      const r = await fetch('/v1/events', { headers: h, cache: 'no-store', signal: ctl.signal });
      if (r.status === 401) {
        needToken();
        return;
      }
      if (!r.ok || !r.body) throw new Error('HTTP ' + r.status);
      setConn('live');
      if (stream.dropped) {
        stream.dropped = false;
        refreshAll(); /* whatever happened while the stream was away */
      }
      await readEvents(r.body, gen);
    } catch (e) {
      if (ctl.signal.aborted || gen !== stream.gen) return;
    }
    if (gen !== stream.gen) return;
    stream.dropped = true;
    setConn('reconnecting');
    stream.timer = setTimeout(() => { if (gen === stream.gen) runStream(gen); }, stream.retryMs);
  }

  /* text/event-stream as the HTML standard parses it: lines, fields,
   * events ended by an empty line. */
  async function readEvents(body, gen) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let ev = { type: '', data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || gen !== stream.gen) return;
      buf += value;
      let nl;
      while ((nl = buf.search(/[\r\n]/)) >= 0) {
        if (buf[nl] === '\r' && nl === buf.length - 1) break; /* a \r\n cut in two */
        const line = buf.slice(0, nl);
        buf = buf.slice(buf[nl] === '\r' && buf[nl + 1] === '\n' ? nl + 2 : nl + 1);
        if (line === '') {
          if (ev.id !== null) stream.lastId = ev.id;
          if (ev.data.length) dispatch(ev.type || 'message', ev.data.join('\n'));
          ev = { type: '', data: [], id: null };
          continue;
        }
        if (line[0] === ':') continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? '' : line.slice(colon + 1);
        if (v[0] === ' ') v = v.slice(1);
        if (field === 'event') ev.type = v;
        else if (field === 'data') ev.data.push(v);
        else if (field === 'id' && !v.includes('\0')) ev.id = v;
        else if (field === 'retry' && /^\d+$/.test(v)) stream.retryMs = Number(v);
      }
    }
  }

  function dispatch(type, text) {
    let d;
    try { d = JSON.parse(text); } catch (e) { return; }
    stream.events++;
    $('conn').dataset.events = String(stream.events);
    switch (type) {
      case 'job':
        jobEvent(d.id);
        fresh.jobs.set(d.id, d);
        jobChanged(d);
        refreshStats();
        break;
      case 'progress':
        jobEvent(d.job_id);
        progressChanged(d.job_id, d);
        break;
      case 'item':
        itemChanged(d);
        refreshStats();
        break;
      case 'circuit':
        circuitChanged(d);
        break;
      default:
        break;
    }
  }

  /* ---- loading and polling ---- */

  function refreshAll() {
    loadJobs();
    loadCircuits();
    loadStats();
    if (detail.job) loadDetail();
  }

  function reloadAll() {
    stream.lastId = null;
    stream.dropped = false;
    loadSources();
    refreshAll();
    startStream();
  }

  /* Counters of relative times, and lists while the stream is down. */
  let lastPoll = 0;
  let lastStats = Date.now();
  setInterval(() => {
    for (const t of document.querySelectorAll('time.countdown')) t.textContent = when(t.getAttribute('datetime'));
    if (Date.now() % 15000 < 1000)
      for (const t of document.querySelectorAll('time.ago')) t.textContent = ago(t.getAttribute('datetime'));
    const live = $('conn').dataset.state === 'live';
    const now = Date.now();
    if (auth.needed || document.hidden) return;
    if (!live && now - lastPoll >= POLL_MS) {
      lastPoll = now;
      refreshAll();
    } else if (live && now - lastStats >= STATS_EVERY_MS) {
      lastStats = now;
      loadStats();
      loadCircuits();
    }
  }, 1000);

  route();
  reloadAll();
})();
