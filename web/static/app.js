// telemetryd live dashboard. Plain JavaScript, no build step.
//
// Data flow: /api/v1/fleet lists the devices; a "fleet" feed (presence
// events only) keeps their online state current; selecting a device (or a
// label selector) opens a second feed with its readings. A feed is a
// WebSocket on /v1/live, or Server-Sent Events on /v1/live/sse when
// WebSockets cannot get through. A first connection starts with a
// snapshot; on it the page back-fills the charts from /api/v1/history.
// A reconnection resumes from the last position the feed received: the
// server replays what was missed and the page back-fills nothing; only
// when the server cannot resume (it says "reset", e.g. it restarted) does a
// snapshot and a back-fill follow. Points are kept per series in a sorted
// array keyed by timestamp, so live points that arrive before, during or
// after a back-fill merge without gaps and without duplicates.
//
// Without a selection the page shows the fleet's latest values: a feed of
// every device in the viewer's scope, its snapshot filling the table.
// Feeds that carry readings ask for "persisted" messages: a latest value
// that is not yet durable in InfluxDB is marked unconfirmed until it is,
// and one storage refused is marked refused.
'use strict';
(function () {
  const TOKEN_KEY = 'telemetryd.viewerToken';
  const MAX_SELECTOR_DEVICES = 10;
  const BACKFILL_CONCURRENCY = 4;
  const WINDOWS = { '5m': 5 * 60e3, '15m': 15 * 60e3, '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3 };

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const forcedTransport = params.get('transport'); // "sse", "ws" or null (automatic)

  // ---- viewer token: read once from ?token=, kept in sessionStorage, never left in the URL.
  function takeToken() {
    const t = params.get('token');
    if (t) {
      try { sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { /* storage disabled: keep it in memory */ }
      params.delete('token');
      const q = params.toString();
      history.replaceState(history.state, '', location.pathname + (q ? '?' + q : '') + location.hash);
      return t;
    }
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }
  let token = takeToken();

  class Unauthorized extends Error {}

  async function api(path, signal) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    const res = await fetch(path, { headers, signal, cache: 'no-store', credentials: 'omit' });
    if (res.status === 401) throw new Unauthorized('unauthorized');
    if (!res.ok) {
      let msg = res.status + ' ' + res.statusText;
      try { msg = (await res.json()).error.message || msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return res.json();
  }

  // ---- state
  const devices = new Map(); // id -> {id, name, labels, online, lastSeen (ms, 0: never)}
  const series = new Map(); // key -> Series
  let selection = null; // {kind: 'device', id} | {kind: 'tags', tags: {k: v}}
  let windowName = '15m';
  let windowMs = WINDOWS[windowName];
  let unauthorized = false;
  // The persisted watermark: per device the position up to which readings
  // are durable; positions storage refused.
  const upto = new Map();
  const refused = new Set();
  const stats = { resumes: 0, resets: 0, backfills: 0, confirmed: 0, replayed: 0 };

  const skey = (d, m, f) => d + '\u0000' + m + '\u0000' + f;
  const ckey = (m, f) => m + '\u0000' + f;

  class Series {
    constructor(device, measurement, field) {
      this.device = device;
      this.measurement = measurement;
      this.field = field;
      this.points = []; // [tsNs, value], sorted by tsNs, unique
      this.kind = ''; // 'number' | 'bool' | 'string'
      this.unit = '';
      this.backfilled = false;
      this.lastPos = 0; // stream position of the newest point; 0: from history or a snapshot
    }

    // add inserts one point; a point with the same timestamp replaces it.
    // pos is its stream position when it came live.
    add(ts, v, pos) {
      if (v === null || v === undefined) return;
      if (!this.kind) this.kind = typeof v === 'number' ? 'number' : typeof v === 'boolean' ? 'bool' : 'string';
      const p = this.points;
      const n = p.length;
      if (n === 0 || p[n - 1][0] <= ts) this.lastPos = pos || 0;
      if (n === 0 || p[n - 1][0] < ts) { p.push([ts, v]); return; }
      let lo = 0, hi = n;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (p[mid][0] < ts) lo = mid + 1; else hi = mid; }
      if (lo < n && p[lo][0] === ts) p[lo][1] = v; else p.splice(lo, 0, [ts, v]);
    }

    // merge adds a history answer. Raw history is a plain union; aggregated
    // history (window means stamped with the window end) replaces what is
    // older than its newest point, so raw and averaged points do not mix.
    merge(h) {
      const pts = h.points || [];
      if (h.every && pts.length) {
        const newest = pts[pts.length - 1][0];
        const keep = this.points.filter((p) => p[0] > newest);
        this.points = [];
        for (const [t, v] of pts) this.add(t, v);
        for (const [t, v] of keep) this.add(t, v);
      } else {
        for (const [t, v] of pts) this.add(t, v);
      }
    }

    trim(oldestNs) {
      let i = 0;
      while (i < this.points.length && this.points[i][0] < oldestNs) i++;
      if (i > 0) this.points.splice(0, i);
    }

    last() { return this.points.length ? this.points[this.points.length - 1] : null; }

    // unconfirmed: the newest point came live and is not durable yet.
    unconfirmed() { return this.lastPos > 0 && !((upto.get(this.device) || 0) >= this.lastPos); }

    refused() { return this.lastPos > 0 && refused.has(this.lastPos); }
  }

  function onPersisted(m) {
    const before = [...series.values()].filter((s) => s.unconfirmed());
    for (const [d, p] of Object.entries(m.upto || {})) if (p > (upto.get(d) || 0)) upto.set(d, p);
    for (const r of m.refused || []) refused.add(r.pos);
    stats.confirmed += before.filter((s) => !s.unconfirmed()).length;
    scheduleRender();
  }

  // ---- connection state
  const transport = { mode: forcedTransport === 'sse' ? 'sse' : 'ws', strikes: 0 };
  const feeds = new Set();

  function updateConnection() {
    const el = $('conn');
    let state = 'connecting', text = 'connecting…';
    const states = [...feeds].map((f) => f.state);
    if (unauthorized) {
      state = 'unauthorized'; text = 'viewer token required';
    } else if (states.includes('reconnecting')) {
      state = 'reconnecting';
      text = 'reconnecting…';
    } else if (states.length && states.every((s) => s === 'live')) {
      if (transport.mode === 'sse') {
        state = 'fallback'; text = 'live (SSE fallback)';
      } else {
        state = 'live'; text = 'live';
      }
    }
    // Compression: every open socket negotiated permessage-deflate.
    const compressed = transport.mode === 'ws' && feeds.size > 0 && [...feeds].every((f) => f.compressed);
    if (compressed && (state === 'live' || state === 'reconnecting')) text += ' · compressed';
    el.dataset.compressed = String(compressed);
    el.dataset.state = state;
    el.dataset.transport = transport.mode;
    const t = $('conn-text');
    if (t.textContent !== text) t.textContent = text;
  }

  // probe tells "server down" from "WebSockets blocked" after a socket
  // failed to open: the fleet API answers over plain HTTP.
  async function probe() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 4000);
    try {
      await api('/api/v1/fleet', ctl.signal);
      return 'ok';
    } catch (e) {
      return e instanceof Unauthorized ? 'unauthorized' : 'down';
    } finally {
      clearTimeout(timer);
    }
  }

  // Feed is one subscription over one connection, reconnecting with
  // exponential backoff (0.5 s doubling to 10 s, with jitter).
  class Feed {
    // opts.resume: reconnect from the last position (feeds of readings;
    // presence comes whole in every snapshot). opts.persisted: ask for
    // the persisted watermark.
    constructor(name, filter, onMessage, opts) {
      this.name = name;
      this.filter = filter;
      this.onMessage = onMessage;
      this.opts = opts || {};
      this.pos = 0; // last stream position received
      this.compressed = false;
      this.state = 'connecting';
      this.attempt = 0;
      this.stopped = true;
      this.ws = null;
      this.es = null;
      this.timer = 0;
    }

    start() {
      this.stopped = false;
      feeds.add(this);
      this.connect();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      this.close();
      feeds.delete(this);
      updateConnection();
    }

    close() {
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try { ws.close(1000); } catch (e) { /* already closed */ }
      }
      if (this.es) {
        this.es.close();
        this.es = null;
      }
    }

    setState(s) {
      this.state = s;
      updateConnection();
    }

    connect() {
      if (this.stopped) return;
      clearTimeout(this.timer);
      this.close();
      this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
      if (transport.mode === 'sse') this.connectSSE(); else this.connectWS();
    }

    connectWS() {
      const url = new URL('/v1/live', location.href);
      url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
      if (token) url.searchParams.set('token', token);
      let ws;
      try {
        ws = new WebSocket(url.href);
      } catch (e) {
        this.failed(false);
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.compressed = /permessage-deflate/.test(ws.extensions || '');
        const sub = Object.assign({ op: 'subscribe', id: this.name }, this.filter);
        if (this.opts.persisted) sub.persisted = true;
        if (this.opts.resume && this.pos) sub.since = this.pos;
        ws.send(JSON.stringify(sub));
      };
      ws.onmessage = (ev) => {
        let m;
        try { m = JSON.parse(ev.data); } catch (e) { return; }
        this.received(m);
      };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.failed(opened);
      };
    }

    connectSSE() {
      const url = new URL('/v1/live/sse', location.href);
      const f = this.filter;
      for (const k of ['devices', 'measurements', 'fields']) {
        if (f[k] && f[k].length) url.searchParams.set(k, f[k].join(','));
      }
      for (const [k, v] of Object.entries(f.tags || {})) url.searchParams.append('tag', k + '=' + v);
      if (f.presence) url.searchParams.set('presence', f.presence);
      url.searchParams.set('sub', this.name);
      if (this.opts.persisted) url.searchParams.set('persisted', '1');
      // The page reopens the EventSource itself, so the position goes in
      // the URL (an EventSource's own retry would send Last-Event-ID).
      if (this.opts.resume && this.pos) url.searchParams.set('since', String(this.pos));
      if (token) url.searchParams.set('token', token);
      this.compressed = false;
      const es = new EventSource(url.href);
      this.es = es;
      let opened = false;
      const onEvent = (ev) => {
        let m;
        try { m = JSON.parse(ev.data); } catch (e) { return; }
        opened = true;
        this.received(m);
      };
      for (const type of ['snapshot', 'readings', 'presence', 'conflated', 'gap', 'resumed', 'reset', 'persisted']) es.addEventListener(type, onEvent);
      // EventSource would retry on its own, but without our backoff, state
      // and back-fill; so every error closes it and the feed reconnects.
      es.onerror = () => {
        if (this.es !== es) return;
        es.close();
        this.es = null;
        this.failed(opened);
      };
    }

    received(m) {
      // Only a message after which the feed has everything up to its
      // position carries one (a snapshot's last chunk, not the others).
      if (typeof m.pos === 'number' && m.pos > 0) this.pos = m.pos;
      if (m.type === 'resumed') {
        stats.resumes++;
        stats.replayed += m.replayed || 0;
      }
      if (m.type === 'reset') stats.resets++;
      // A snapshot comes in chunks (docs/dashboard.md): the later ones are
      // more last values, and the last one may carry the presence list.
      if (m.type === 'snapshot' && m.chunk > 0) {
        for (const p of m.presence || []) this.onMessage(Object.assign({ type: 'presence' }, p), this);
        m = { type: 'readings', sub: m.sub, readings: m.readings || [] };
      }
      // The server merged values away (slow link) or could not show some:
      // say so briefly in the connection status.
      if (m.type === 'conflated' || m.type === 'gap') {
        $('conn-text').textContent = m.type === 'gap'
          ? 'live: ' + m.skipped + ' readings not shown (gap)'
          : 'live: conflated, ' + m.merged + ' readings merged';
        clearTimeout(this.noticeTimer);
        this.noticeTimer = setTimeout(updateConnection, 5000);
        return;
      }
      if (m.type === 'snapshot' || m.type === 'resumed') {
        this.attempt = 0;
        transport.strikes = 0;
        this.setState('live');
      }
      if (m.type === 'persisted') {
        onPersisted(m);
        return;
      }
      if (m.type === 'error') {
        console.warn('telemetryd:', m.error && m.error.message);
        return;
      }
      this.onMessage(m, this);
    }

    async failed(opened) {
      if (this.stopped) return;
      this.attempt++;
      this.setState('reconnecting');
      if (!opened) {
        const p = await probe();
        if (this.stopped) return;
        if (p === 'unauthorized') {
          needToken();
          return;
        }
        // The server answers HTTP but the socket did not open: WebSockets
        // are blocked on the way. Twice in a row means fall back to SSE.
        if (p === 'ok' && transport.mode === 'ws' && forcedTransport !== 'ws' && ++transport.strikes >= 2) {
          transport.mode = 'sse';
          console.info('telemetryd: WebSockets unavailable; falling back to Server-Sent Events');
          this.attempt = 0;
          for (const other of feeds) if (other !== this && other.state !== 'live') other.connect();
          this.connect();
          return;
        }
      }
      const delay = Math.min(10000, 500 * Math.pow(2, this.attempt - 1)) * (0.8 + Math.random() * 0.4);
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.connect(), delay);
    }
  }

  // ---- fleet
  let fleetFeed = null;
  let fleetLoaded = false;

  function upsertDevice(id, patch) {
    let d = devices.get(id);
    if (!d) {
      d = { id, name: id, labels: {}, online: false, lastSeen: 0 };
      devices.set(id, d);
    }
    Object.assign(d, patch);
    return d;
  }

  async function loadFleet() {
    try {
      const res = await api('/api/v1/fleet');
      const seen = new Set();
      for (const d of res.devices || []) {
        seen.add(d.id);
        upsertDevice(d.id, { name: d.name || d.id, labels: d.labels || {}, online: !!d.online, lastSeen: d.last_seen ? d.last_seen / 1e6 : 0 });
      }
      // Devices the server no longer lists (a restarted server without a
      // registry forgets them) stay, offline.
      for (const [id, d] of devices) if (!seen.has(id)) d.online = false;
      fleetLoaded = true;
      renderFleet();
      return true;
    } catch (e) {
      if (e instanceof Unauthorized) needToken();
      else console.warn('telemetryd: fleet:', e.message);
      return false;
    }
  }

  function onPresence(p) {
    const patch = { online: !!p.online, lastSeen: p.last_seen ? p.last_seen / 1e6 : 0 };
    if (!devices.has(p.device_id) && p.tags) patch.labels = p.tags;
    upsertDevice(p.device_id, patch);
  }

  function onFleetMessage(m) {
    if (m.type === 'snapshot') {
      for (const p of m.presence || []) onPresence(p);
      loadFleet(); // names and labels, again after every reconnect
      renderFleet();
    } else if (m.type === 'presence') {
      onPresence(m);
      renderFleet();
    }
  }

  function parseTags(text) {
    const tags = {};
    for (const part of text.split(',')) {
      const i = part.indexOf('=');
      if (i <= 0) continue;
      const k = part.slice(0, i).trim(), v = part.slice(i + 1).trim();
      if (k && v) tags[k] = v;
    }
    return tags;
  }

  function tagsText(tags) {
    return Object.keys(tags).sort().map((k) => k + '=' + tags[k]).join(', ');
  }

  function matchesTags(d, tags) {
    return Object.entries(tags).every(([k, v]) => (k === 'device_id' ? d.id === v : d.labels[k] === v));
  }

  function ago(ms) {
    if (!ms) return 'never';
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return new Date(ms).toLocaleDateString();
  }

  function renderFleet() {
    updateSelected();
    const list = $('device-list');
    const nameFilter = $('filter-name').value.trim().toLowerCase();
    const tagFilter = parseTags($('filter-label').value);
    $('watch-selector').disabled = Object.keys(tagFilter).length === 0;
    const shown = [...devices.values()]
      .filter((d) => !nameFilter || d.name.toLowerCase().includes(nameFilter) || d.id.toLowerCase().includes(nameFilter))
      .filter((d) => matchesTags(d, tagFilter))
      .sort((a, b) => (b.online - a.online) || a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    const items = [];
    for (const d of shown) {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'device';
      b.dataset.id = d.id;
      b.dataset.online = String(d.online);
      const selected = selection && selection.kind === 'device' && selection.id === d.id;
      b.setAttribute('aria-pressed', String(!!selected));
      const status = document.createElement('span');
      status.className = 'status' + (d.online ? ' online' : '');
      status.setAttribute('aria-hidden', 'true');
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = d.name;
      const seen = document.createElement('time');
      seen.className = 'seen';
      seen.dataset.ms = String(d.lastSeen);
      seen.textContent = ago(d.lastSeen);
      if (d.lastSeen) seen.dateTime = new Date(d.lastSeen).toISOString();
      const meta = document.createElement('span');
      meta.className = 'meta';
      meta.textContent = (d.name !== d.id ? d.id + ' · ' : '') + (tagsText(d.labels) || 'no labels');
      b.append(status, name, seen, meta);
      b.setAttribute('aria-label', d.name + ', ' + (d.online ? 'online' : 'offline') + ', last seen ' + ago(d.lastSeen) +
        (Object.keys(d.labels).length ? ', labels ' + tagsText(d.labels) : ''));
      b.addEventListener('click', () => select({ kind: 'device', id: d.id }));
      li.append(b);
      items.push(li);
    }
    // Keep keyboard focus on the same device across re-renders.
    const focused = document.activeElement && document.activeElement.classList.contains('device') ? document.activeElement.dataset.id : null;
    list.replaceChildren(...items);
    if (focused) {
      const again = list.querySelector('button.device[data-id="' + CSS.escape(focused) + '"]');
      if (again) again.focus();
    }
    $('fleet-count').textContent = '(' + [...devices.values()].filter((d) => d.online).length + ' online of ' + devices.size + ')';
    $('fleet-empty').hidden = !fleetLoaded || devices.size > 0;
  }

  // ---- selection, charts and back-fill
  let selFeed = null;
  let selAbort = null;

  // selected holds the ids charted; a label selector charts the first
  // MAX_SELECTOR_DEVICES matching devices, recomputed when the fleet changes.
  let selected = new Set();

  function updateSelected() {
    if (!selection) selected = new Set();
    else if (selection.kind === 'device') selected = new Set([selection.id]);
    else {
      selected = new Set([...devices.values()].filter((d) => matchesTags(d, selection.tags)).map((d) => d.id).sort()
        .slice(0, MAX_SELECTOR_DEVICES));
    }
  }

  function selectionDevices() { return [...selected]; }

  // Without a selection (the landing view) every device of the feed counts.
  function inSelection(deviceId) { return !selection || selected.has(deviceId); }

  function select(sel) {
    selection = sel;
    updateSelected();
    if (selAbort) selAbort.abort();
    selAbort = new AbortController();
    if (selFeed) selFeed.stop();
    series.clear();
    $('charts').replaceChildren();
    charts.clear();
    const hash = !sel ? '' : sel.kind === 'device' ? '#device=' + encodeURIComponent(sel.id) : '#tags=' + encodeURIComponent(tagsText(sel.tags).replace(/ /g, ''));
    history.replaceState(history.state, '', location.pathname + location.search + hash);
    $('detail-h').textContent = !sel ? 'Fleet: latest values' : sel.kind === 'device' ? (devices.get(sel.id) || { name: sel.id }).name : 'Devices with ' + tagsText(sel.tags);
    $('detail-hint').hidden = !!sel;
    $('detail').dataset.view = sel ? 'selection' : 'fleet';
    renderFleet();
    render();
    // The landing view: the latest value of every series of every device
    // in the viewer's scope (the server adds the scope), live.
    const filter = !sel ? { devices: ['*'] } : sel.kind === 'device' ? { devices: [sel.id] } : { devices: ['*'], tags: sel.tags };
    selFeed = new Feed(sel ? 'selection' : 'latest', filter, onSelectionMessage, { resume: true, persisted: true });
    selFeed.start();
  }

  function seriesFor(device, measurement, field) {
    const k = skey(device, measurement, field);
    let s = series.get(k);
    if (!s) {
      s = new Series(device, measurement, field);
      series.set(k, s);
    }
    return s;
  }

  function addReading(r) {
    if (!inSelection(r.device_id)) return;
    for (const [field, v] of Object.entries(r.fields || {})) {
      if (v === null) continue;
      const s = seriesFor(r.device_id, r.measurement, field);
      if (r.units && r.units[field]) s.unit = r.units[field];
      s.add(r.ts, v, r.pos);
      if (selection && !s.backfilled && !s.backfilling) backfill([s]);
    }
  }

  // A snapshot (first connection, or a reset) is followed by a back-fill;
  // a resume replays the missed readings itself.
  function onSelectionMessage(m) {
    if (m.type !== 'snapshot' && m.type !== 'readings') return;
    for (const r of m.readings || []) addReading(r);
    if (m.type === 'snapshot' && selection) discoverAndBackfill();
    scheduleRender();
  }

  // discoverAndBackfill runs after every (re)subscription: it learns every
  // series of the selected devices in the window (also those that have not
  // reported since the server started) and fills all of them from history.
  async function discoverAndBackfill() {
    const signal = selAbort.signal;
    const since = '-' + windowName;
    await Promise.all(selectionDevices().map(async (id) => {
      try {
        const res = await api('/api/v1/series?device=' + encodeURIComponent(id) + '&since=' + since, signal);
        for (const s of res.series || []) seriesFor(id, s.measurement, s.field);
      } catch (e) {
        if (e instanceof Unauthorized) needToken();
        else if (e.name !== 'AbortError') console.warn('telemetryd: series:', e.message);
      }
    }));
    if (signal.aborted) return;
    backfill([...series.values()]);
  }

  function backfill(list) {
    const signal = selAbort.signal;
    stats.backfills++;
    const queue = list.slice();
    for (const s of queue) s.backfilling = true;
    const worker = async () => {
      while (queue.length && !signal.aborted) {
        const s = queue.shift();
        const q = new URLSearchParams({ device: s.device, measurement: s.measurement, field: s.field, since: '-' + windowName });
        try {
          const h = await api('/api/v1/history?' + q.toString(), signal);
          s.merge(h);
          s.backfilled = true;
          scheduleRender();
        } catch (e) {
          if (e instanceof Unauthorized) needToken();
          else if (e.name !== 'AbortError') console.warn('telemetryd: history:', e.message);
        } finally {
          s.backfilling = false;
        }
      }
    };
    for (let i = 0; i < Math.min(BACKFILL_CONCURRENCY, queue.length); i++) worker();
  }

  // ---- rendering
  const charts = new Map(); // chart key -> {fig, chart, caption, lastEl, legend, kind}
  let renderPending = false;

  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(() => { renderPending = false; render(); });
  }

  function formatValue(v) {
    if (typeof v === 'number') return window.TinyChart.formatNumber(v);
    return String(v);
  }

  function deviceName(id) {
    const d = devices.get(id);
    return d ? d.name : id;
  }

  function render() {
    const now = Date.now();
    const from = now - windowMs;
    const oldestNs = (from - 60e3) * 1e6;
    const groups = new Map(); // chart key -> [Series]
    for (const s of [...series.values()].sort((a, b) => a.device.localeCompare(b.device))) {
      if (!selection) continue; // the landing view is the table alone
      s.trim(oldestNs);
      if (!s.kind) continue;
      const k = ckey(s.measurement, s.field);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(s);
    }
    const container = $('charts');
    for (const [k, c] of charts) {
      if (!groups.has(k)) { c.fig.remove(); charts.delete(k); }
    }
    const keys = [...groups.keys()].sort();
    keys.forEach((k, i) => {
      const list = groups.get(k);
      const kind = list[0].kind === 'number' ? 'number' : 'state';
      let c = charts.get(k);
      if (c && c.kind !== kind) { c.fig.remove(); charts.delete(k); c = null; }
      if (!c) {
        c = makeChart(list[0].measurement, list[0].field, kind);
        charts.set(k, c);
      }
      if (container.children[i] !== c.fig) container.insertBefore(c.fig, container.children[i] || null);
      let points = 0, newest = null;
      c.chart.series = list.map((s, j) => {
        const pts = s.points.map((p) => [p[0] / 1e6, p[1]]);
        points += s.points.length;
        const l = s.last();
        if (l && (!newest || l[0] > newest[0])) newest = [l[0], l[1], s];
        return { name: deviceName(s.device), color: window.TinyChart.COLORS[j % window.TinyChart.COLORS.length], points: pts };
      });
      c.chart.from = from;
      c.chart.to = now;
      c.chart.draw();
      const unit = list.find((s) => s.unit);
      c.caption.textContent = list[0].measurement + ' · ' + list[0].field + (unit ? ' (' + unit.unit + ')' : '');
      const lastText = newest ? formatValue(newest[1]) + (newest[2].unit ? ' ' + newest[2].unit : '') : '–';
      c.lastEl.textContent = lastText;
      c.fig.dataset.points = String(points);
      c.fig.dataset.last = newest ? String(newest[1]) : '';
      c.canvas.setAttribute('aria-label', list[0].field + ': ' + points + ' points in the last ' + windowName + '; latest ' + lastText +
        (list.length > 1 ? ' (' + deviceName(newest[2].device) + ')' : ''));
      renderLegend(c, list);
    });
    renderTable();
  }

  function makeChart(measurement, field, kind) {
    const fig = document.createElement('figure');
    fig.className = 'chart' + (kind === 'state' ? ' state' : '');
    fig.dataset.measurement = measurement;
    fig.dataset.field = field;
    fig.dataset.kind = kind;
    const cap = document.createElement('figcaption');
    const caption = document.createElement('span');
    const lastEl = document.createElement('span');
    lastEl.className = 'last';
    cap.append(caption, lastEl);
    const canvas = document.createElement('canvas');
    canvas.setAttribute('role', 'img');
    const legend = document.createElement('div');
    legend.className = 'legend';
    fig.append(cap, canvas, legend);
    const chart = kind === 'number' ? new window.TinyChart.LineChart(canvas) : new window.TinyChart.Timeline(canvas);
    return { fig, chart, caption, lastEl, legend, canvas, kind };
  }

  function renderLegend(c, list) {
    if (list.length < 2) {
      if (c.legend.childElementCount) c.legend.replaceChildren();
      return;
    }
    const sig = list.map((s) => s.device).join('\u0000');
    if (c.legendSig === sig) return;
    c.legendSig = sig;
    c.legend.replaceChildren(...list.map((s, j) => {
      const item = document.createElement('span');
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = window.TinyChart.COLORS[j % window.TinyChart.COLORS.length];
      item.append(sw, document.createTextNode(deviceName(s.device)));
      return item;
    }));
  }

  function renderTable() {
    const tbody = $('latest').tBodies[0];
    const rows = [];
    const list = [...series.values()].filter((s) => s.last())
      .sort((a, b) => a.device.localeCompare(b.device) || a.measurement.localeCompare(b.measurement) || a.field.localeCompare(b.field));
    for (const s of list) {
      const [ts, v] = s.last();
      const tr = document.createElement('tr');
      tr.dataset.key = skey(s.device, s.measurement, s.field);
      const unconfirmed = s.unconfirmed(), isRefused = s.refused();
      tr.dataset.unconfirmed = String(unconfirmed && !isRefused);
      tr.dataset.refused = String(isRefused);
      const cells = [deviceName(s.device), s.measurement, s.field, formatValue(v), s.unit, new Date(ts / 1e6).toLocaleTimeString()];
      cells.forEach((text, i) => {
        const td = document.createElement(i === 0 ? 'th' : 'td');
        if (i === 0) td.scope = 'row';
        if (i === 3 && typeof v === 'number') td.className = 'num';
        td.textContent = text;
        if (i === 3 && (isRefused || unconfirmed)) {
          td.classList.add(isRefused ? 'refused' : 'unconfirmed');
          td.title = isRefused ? 'refused by storage: not stored' : 'not yet stored durably';
          const mark = document.createElement('span');
          mark.className = 'mark';
          mark.textContent = isRefused ? ' (refused)' : ' (unconfirmed)';
          td.append(mark);
        }
        tr.append(td);
      });
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  }

  // ---- token form
  function needToken() {
    if (unauthorized) return;
    unauthorized = true;
    for (const f of [...feeds]) f.stop();
    $('auth').hidden = false;
    $('auth-error').textContent = token ? 'The token was not accepted.' : '';
    $('auth-token').focus();
    updateConnection();
  }

  $('auth').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('auth-token').value.trim();
    $('auth-token').value = '';
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* memory only */ }
    unauthorized = false;
    $('auth').hidden = true;
    start();
  });

  // ---- controls
  $('filter-name').addEventListener('input', renderFleet);
  $('filter-label').addEventListener('input', renderFleet);
  $('watch-selector').addEventListener('click', () => {
    const tags = parseTags($('filter-label').value);
    if (Object.keys(tags).length) select({ kind: 'tags', tags });
  });
  $('window').addEventListener('change', () => {
    windowName = $('window').value;
    windowMs = WINDOWS[windowName] || WINDOWS['15m'];
    if (selection) select(selection); // re-subscribe and back-fill the new window
  });

  function selectionFromHash() {
    const h = decodeURIComponent(location.hash.slice(1));
    if (h.startsWith('device=')) return { kind: 'device', id: h.slice(7) };
    if (h.startsWith('tags=')) {
      const tags = parseTags(h.slice(5));
      if (Object.keys(tags).length) return { kind: 'tags', tags };
    }
    return null;
  }

  async function start() {
    updateConnection();
    if (!(await loadFleet())) {
      if (!unauthorized) setTimeout(start, 2000);
      return;
    }
    if (fleetFeed) fleetFeed.stop();
    fleetFeed = new Feed('fleet', { devices: ['*'], presence: 'only' }, onFleetMessage);
    fleetFeed.start();
    select(selection || selectionFromHash());
  }

  // Slide the window and refresh "last seen" once a second.
  setInterval(() => {
    for (const el of document.querySelectorAll('#device-list time.seen')) el.textContent = ago(Number(el.dataset.ms));
    updateConnection();
    if (selection) scheduleRender();
  }, 1000);
  window.addEventListener('resize', scheduleRender);

  // Read-only hooks for tests and the curious (browser console).
  window.telemetryDashboard = Object.freeze({
    connection: () => ({ state: $('conn').dataset.state, transport: transport.mode, compressed: $('conn').dataset.compressed === 'true' }),
    stats: () => Object.assign({}, stats),
    // dropConnection closes every feed's connection, as a network drop
    // would; the feeds reconnect (and resume) by themselves.
    dropConnection: () => { for (const f of feeds) { const ws = f.ws, es = f.es; if (ws) ws.close(4000, 'dropped'); if (es) { es.close(); f.es = null; f.failed(true); } } },
    devices: () => [...devices.values()].map((d) => Object.assign({}, d, { labels: Object.assign({}, d.labels) })),
    selection: () => JSON.parse(JSON.stringify({ selection, devices: [...selected] })),
    series: () => [...series.values()].map((s) => ({ device: s.device, measurement: s.measurement, field: s.field, kind: s.kind, points: s.points.length })),
    // points returns [timestamp in ms, value] pairs of one series.
    points: (device, measurement, field) => {
      const s = series.get(skey(device, measurement, field));
      return s ? s.points.map((p) => [Math.round(p[0] / 1e6), p[1]]) : [];
    },
  });

  start();
})();
