// herald-client: subscribes to herald groups over WebSocket (or Server-Sent Events), tracks each
// group's offset and the epoch from the JSON envelopes, and reconnects with exponential backoff and
// full jitter, resuming with since/epoch so the application sees every message once, in order.
// No runtime dependencies; every global it uses (WebSocket, EventSource, fetch, timers, atob) is
// looked up guarded and can be injected.

const STATES = ['connecting', 'open', 'reconnecting', 'closed'];

// WebSocket close codes after which retrying cannot help: the server refused us on purpose.
const FATAL_CLOSE = new Set([1002, 1003, 1007, 1008]);

const DEFAULTS = {
  groups: [],
  transport: 'auto',           // 'auto' | 'websocket' | 'sse'
  token: undefined,            // JWT sent as ?token= (browsers cannot set headers on these APIs)
  getToken: undefined,         // () => string | Promise<string>: called before every connection
  initialDelayMs: 500,         // backoff: first cap
  maxDelayMs: 30_000,          // backoff: largest cap
  factor: 2,
  stableAfterMs: 10_000,       // a connection open this long resets the backoff
  connectTimeoutMs: 10_000,    // an attempt that has not opened by then is abandoned
};

function pickGlobal(name) {
  const g = typeof globalThis !== 'undefined' ? globalThis : undefined;
  return g && typeof g[name] === 'function' ? g[name] : undefined;
}

/** Decodes base64 to bytes with whatever the platform has. */
function fromBase64(s) {
  if (typeof globalThis.Buffer === 'function') return new Uint8Array(globalThis.Buffer.from(s, 'base64'));
  const bin = globalThis.atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The backoff delay before attempt `n` (0-based): full jitter over an exponential cap. */
export function backoffDelay(n, { initialDelayMs, maxDelayMs, factor }, random = Math.random) {
  const cap = Math.min(maxDelayMs, initialDelayMs * Math.pow(factor, Math.min(n, 64)));
  return Math.floor(random() * cap);
}

export class HeraldError extends Error {
  constructor(message, { code, fatal, transport } = {}) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    this.fatal = !!fatal;
    this.transport = transport;
  }
}

export class HeraldClient {
  /**
   * @param {string} url  base URL: ws://host:port, wss://..., http://... or https://...
   * @param {object} options  see index.d.ts
   */
  constructor(url, options = {}) {
    this.options = { ...DEFAULTS, ...options };
    const u = new URL(url);
    if (!['ws:', 'wss:', 'http:', 'https:'].includes(u.protocol)) {
      throw new TypeError(`herald-client: unsupported URL scheme ${u.protocol}`);
    }
    this._secure = u.protocol === 'wss:' || u.protocol === 'https:';
    this._hostPath = u.host + u.pathname.replace(/\/+$/, '');
    if (!['auto', 'websocket', 'sse'].includes(this.options.transport)) {
      throw new TypeError(`herald-client: transport must be auto, websocket or sse`);
    }
    this.groups = [...new Set(this.options.groups || [])];
    this._WebSocket = this.options.WebSocket || pickGlobal('WebSocket');
    this._EventSource = this.options.EventSource || pickGlobal('EventSource');
    this._fetch = this.options.fetch || pickGlobal('fetch');
    this._setTimeout = this.options.setTimeout || globalThis.setTimeout.bind(globalThis);
    this._clearTimeout = this.options.clearTimeout || globalThis.clearTimeout.bind(globalThis);
    this._random = this.options.random || Math.random;
    this._listeners = new Map();
    this._state = 'closed';
    this._epoch = null;            // epoch of the offsets below
    // group -> last offset the app has covered: its last delivered message, or where it joined
    // (the server's joined notice, an SSE event id) while the group was quiet
    this._offsets = new Map();
    this._epochReported = new Set(); // groups already told recovery_failed 'epoch' for _epoch
    this._attempt = 0;             // consecutive attempts without a stable connection
    this._sock = null;             // current transport object
    this._transport = null;        // 'websocket' | 'sse' for the current/last attempt
    this._kept = this.options.transport === 'auto' ? null : this.options.transport;
    this._timer = null;
    this._stableTimer = null;
    this._openTimer = null;
    this._token = this.options.token;
    this._generation = 0;          // bumps on every attempt: stale callbacks are ignored
    this._authRefusals = 0;        // 401/403 answers in a row (see _retry)
  }

  get state() { return this._state; }
  get transport() { return this._transport; }

  /** Where the client stands: the epoch and each group's position (last delivered offset, or
   *  the offset it joined after while nothing has been delivered). */
  positions() {
    return { epoch: this._epoch, offsets: Object.fromEntries(this._offsets) };
  }

  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const s = this._listeners.get(event);
    if (s) s.delete(fn);
  }

  _emit(event, arg) {
    const s = this._listeners.get(event);
    if (!s) return;
    for (const fn of [...s]) {
      try {
        fn(arg);
      } catch (e) {
        // An application handler's exception must not break delivery or reconnection.
        if (event !== 'error') this._emit('error', e);
      }
    }
  }

  _setState(s) {
    if (this._state === s) return;
    this._state = s;
    this._emit('state', s);
  }

  connect() {
    if (this._state !== 'closed') return;
    this._attempt = 0;
    this._authRefusals = 0;
    this._setState('connecting');
    this._open();
  }

  close() {
    this._generation++;
    this._clearTimers();
    this._dropSocket();
    this._setState('closed');
  }

  _clearTimers() {
    for (const k of ['_timer', '_stableTimer', '_openTimer']) {
      if (this[k] !== null) this._clearTimeout(this[k]);
      this[k] = null;
    }
  }

  _dropSocket() {
    const s = this._sock;
    this._sock = null;
    if (!s) return;
    s.onopen = s.onmessage = s.onerror = s.onclose = null;
    try { s.close(); } catch { /* already closed */ }
  }

  _query(transport, resume = true) {
    const q = [];
    if (this.groups.length) q.push('groups=' + this.groups.map(encodeURIComponent).join(','));
    q.push('format=json');
    // WebSocket: herald tells where each group without a since entry starts (a joined notice),
    // so a group that stays quiet can still be resumed. SSE carries that in its event ids.
    if (transport !== 'sse') q.push('joined=1');
    const since = this.groups.filter((g) => this._offsets.has(g))
      .map((g) => `${encodeURIComponent(g)}:${this._offsets.get(g)}`);
    if (resume && this._epoch !== null && since.length) {
      q.push('since=' + since.join(','), 'epoch=' + encodeURIComponent(this._epoch));
    }
    if (this._token) q.push('token=' + encodeURIComponent(this._token));
    return q.join('&');
  }

  url(transport, { resume = true } = {}) {
    const scheme = transport === 'sse' ? (this._secure ? 'https' : 'http') : (this._secure ? 'wss' : 'ws');
    return `${scheme}://${this._hostPath}/${transport === 'sse' ? 'sse' : 'ws'}?${this._query(transport, resume)}`;
  }

  _nextTransport() {
    if (this._kept) return this._kept;
    // auto: until one transport has opened, alternate, starting with WebSocket
    return this._attempt % 2 === 0 ? 'websocket' : 'sse';
  }

  async _open() {
    const gen = ++this._generation;
    if (this.options.getToken) {
      try {
        this._token = await this.options.getToken();
      } catch (e) {
        if (gen !== this._generation) return;
        this._emit('error', new HeraldError(`getToken failed: ${e && e.message}`, { fatal: false }));
        this._retry(gen, false);
        return;
      }
      if (gen !== this._generation) return;
    }
    const transport = this._nextTransport();
    this._transport = transport;
    const Impl = transport === 'sse' ? this._EventSource : this._WebSocket;
    if (!Impl) {
      if (this.options.transport === 'auto' && !this._kept) {
        // This platform lacks one of the two: keep the other.
        this._kept = transport === 'sse' ? 'websocket' : 'sse';
        const Other = this._kept === 'sse' ? this._EventSource : this._WebSocket;
        if (Other) { this._open(); return; }
      }
      this._fail(new HeraldError(`no ${transport === 'sse' ? 'EventSource' : 'WebSocket'} implementation: pass one in the options`,
        { fatal: true, transport }));
      return;
    }
    let sock;
    try {
      sock = new Impl(this.url(transport));
    } catch (e) {
      this._fail(new HeraldError(`cannot open ${transport}: ${e && e.message}`, { fatal: true, transport }));
      return;
    }
    this._sock = sock;
    let opened = false;
    this._openTimer = this._setTimeout(() => {
      this._openTimer = null;
      if (gen === this._generation && !opened) this._lost(gen, false, undefined);
    }, this.options.connectTimeoutMs);
    sock.onopen = () => {
      if (gen !== this._generation) return;
      opened = true;
      if (this._openTimer !== null) { this._clearTimeout(this._openTimer); this._openTimer = null; }
      if (!this._kept) this._kept = transport;
      this._authRefusals = 0;
      this._setState('open');
      this._emit('open', { transport });
      this._stableTimer = this._setTimeout(() => {
        this._stableTimer = null;
        if (gen === this._generation) this._attempt = 0;
      }, this.options.stableAfterMs);
    };
    if (transport === 'sse') {
      const onEvent = (ev) => {
        if (gen !== this._generation) return;
        this._onEnvelope(ev.data);
        if (gen === this._generation && ev.lastEventId) this._onEventId(ev.lastEventId);
      };
      sock.onmessage = onEvent;
      sock.addEventListener('recovery_failed', onEvent);
      // herald's first event: no message, only every group's position (in its id)
      sock.addEventListener('joined', (ev) => {
        if (gen === this._generation && ev.lastEventId) this._onEventId(ev.lastEventId);
      });
      // EventSource would reconnect by itself (with Last-Event-ID); we reconnect ourselves instead,
      // with our own backoff and since/epoch, so both transports behave the same.
      sock.onerror = () => { if (gen === this._generation) this._lost(gen, opened, undefined); };
    } else {
      sock.onmessage = (ev) => {
        if (gen !== this._generation) return;
        if (typeof ev.data !== 'string') return; // json format: every frame is text
        this._onEnvelope(ev.data);
      };
      sock.onerror = () => {}; // onclose follows with the code
      sock.onclose = (ev) => { if (gen === this._generation) this._lost(gen, opened, ev && ev.code, ev && ev.reason); };
    }
  }

  _onEnvelope(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      this._emit('error', new HeraldError('malformed envelope from server', { fatal: false }));
      return;
    }
    if (m && m.type === 'recovery_failed') {
      // The server could not replay what we missed: the app resyncs; we continue from its position.
      if (m.epoch !== this._epoch) this._changeEpoch(m.epoch, m.group);
      if (typeof m.offset === 'number') this._offsets.set(m.group, m.offset);
      // An epoch change already reported for this group (by us) is not reported twice.
      if (m.reason === 'epoch' && this._epochReported.has(m.group)) return;
      if (m.reason === 'epoch') this._epochReported.add(m.group);
      this._emit('recovery_failed', { group: m.group, reason: m.reason, epoch: m.epoch, offset: m.offset });
      return;
    }
    if (m && m.type === 'joined') {
      // Where a group without a since entry starts: every later message is above it.
      if (typeof m.group !== 'string' || typeof m.offset !== 'number') return;
      if (m.epoch !== this._epoch) this._changeEpoch(m.epoch, null);
      if (!this._offsets.has(m.group)) this._offsets.set(m.group, m.offset);
      return;
    }
    if (!m || typeof m !== 'object' || !('data' in m)) return;
    const group = m.group;
    if (group !== null && group !== undefined) {
      if (m.epoch !== this._epoch) this._changeEpoch(m.epoch, null);
      const last = this._offsets.get(group);
      if (last !== undefined && m.offset <= last) return; // already delivered (replay overlap)
      this._offsets.set(group, m.offset);
    }
    const data = m.binary ? fromBase64(m.data) : m.data;
    this._emit('message', { group: group ?? null, offset: m.offset, epoch: m.epoch, data });
  }

  /** SSE: an event's id, `<epoch>/<o1>,<o2>,...` (one entry per group, in the order of the groups
   *  parameter, empty when none), gives the position of groups that delivered nothing yet. */
  _onEventId(id) {
    const slash = id.lastIndexOf('/');
    if (slash <= 0) return;
    const epoch = id.slice(0, slash);
    const entries = id.slice(slash + 1).split(',');
    if (entries.length !== this.groups.length || (this.groups.length === 0 && entries[0] !== '')) return;
    if (epoch !== this._epoch) {
      if (this._epoch !== null) return; // the envelope of this event decides an epoch change
      this._changeEpoch(epoch, null);
    }
    this.groups.forEach((g, i) => {
      if (/^[0-9]{1,20}$/.test(entries[i]) && !this._offsets.has(g)) this._offsets.set(g, Number(entries[i]));
    });
  }

  /** Offsets of another epoch say nothing about this one: every group that had a position under
   *  the old epoch may have missed messages, and the app hears so (except `skip`, which the
   *  server's own recovery_failed reports). */
  _changeEpoch(epoch, skip) {
    const old = this._epoch === null ? [] : [...this._offsets.keys()];
    this._epoch = epoch;
    this._offsets.clear();
    this._epochReported = new Set();
    for (const group of old) {
      if (group === skip) continue;
      this._epochReported.add(group);
      this._emit('recovery_failed', { group, reason: 'epoch', epoch, offset: null });
    }
  }

  _lost(gen, opened, code, reason) {
    if (gen !== this._generation) return;
    this._generation++;
    this._clearTimers();
    this._dropSocket();
    const transport = this._transport;
    if (code !== undefined && FATAL_CLOSE.has(code)) {
      this._fail(new HeraldError(`server closed the connection: ${code}${reason ? ' ' + reason : ''}`,
        { code, fatal: true, transport }));
      return;
    }
    this._retry(this._generation, !opened);
  }

  async _retry(gen, neverOpened) {
    if (neverOpened && this._fetch) {
      // A browser does not tell why a WebSocket or EventSource was refused. Ask once over plain
      // HTTP: 401/403 (bad token, group not granted, origin refused) will not get better by
      // retrying, nor will 400 (bad group name, too many groups) or 404 (wrong URL).
      const { status, reason } = await this._probe();
      if (gen !== this._generation) return;
      if (status === 400 || status === 404) {
        this._fail(new HeraldError(`server refused the subscription (HTTP ${status}${reason ? ': ' + reason : ''})`,
          { code: status, fatal: true, transport: this._transport }));
        return;
      }
      const refused = status === 401 || status === 403;
      if (refused) this._authRefusals = (this._authRefusals || 0) + 1;
      // Without getToken() a refusal is final; with it, one fresh token gets one more try.
      if (refused && (!this.options.getToken || this._authRefusals >= 2)) {
        this._fail(new HeraldError(`server refused the subscription (HTTP ${status})`,
          { code: status, fatal: true, transport: this._transport }));
        return;
      }
    }
    const delay = backoffDelay(this._attempt, this.options, this._random);
    this._attempt++;
    this._setState('reconnecting');
    this._emit('reconnect', { attempt: this._attempt, delayMs: delay });
    this._timer = this._setTimeout(() => {
      this._timer = null;
      if (gen === this._generation) this._open();
    }, delay);
  }

  /** The HTTP status (0: none) and, for a refusal, herald's reason. Without since: a 200 would
   *  start a full replay we do not want. Bounded by connectTimeoutMs: a black-holed server
   *  would leave the fetch pending forever. */
  async _probe() {
    const ctl = typeof AbortController === 'function' ? new AbortController() : null;
    let timer = null;
    const timeout = new Promise((resolve) => {
      timer = this._setTimeout(() => { timer = null; resolve({ status: 0 }); }, this.options.connectTimeoutMs);
    });
    const ask = (async () => {
      const r = await this._fetch(this.url('sse', { resume: false }),
        { signal: ctl ? ctl.signal : undefined, headers: { Accept: 'text/event-stream' } });
      const status = r.status;
      let reason;
      if (status >= 400 && typeof r.text === 'function') {
        try {
          const body = await r.text();
          try { reason = JSON.parse(body).error; } catch { reason = String(body).trim().slice(0, 200); }
        } catch { /* no body */ }
      }
      return { status, reason };
    })().catch(() => ({ status: 0 })); // unreachable: a plain retry
    try {
      return await Promise.race([ask, timeout]);
    } finally {
      if (timer !== null) this._clearTimeout(timer);
      if (ctl) ctl.abort(); // a 200 is a live stream: we only wanted the status
    }
  }

  _fail(err) {
    this._generation++;
    this._clearTimers();
    this._dropSocket();
    this._emit('error', err);
    this._setState('closed');
  }
}

export { STATES };
export default HeraldClient;
