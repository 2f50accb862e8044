// Unit tests of herald-client with fake transports and timers: URLs, backoff and jitter bounds,
// resume without duplicates across reconnects, recovery_failed, fatal closes, auto fallback to SSE,
// token refresh. Runs on Node 18 and 20 (node:test, node:assert only).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { HeraldClient, backoffDelay } from '../src/index.js';
import { env, fakeTimers, fakeTransports, settle } from './fakes.mjs';

function setup(opts = {}) {
  const timers = fakeTimers();
  const t = fakeTransports();
  const c = new HeraldClient(opts.url || 'ws://h:8080', {
    groups: ['a', 'b'],
    WebSocket: t.FakeWS,
    EventSource: t.FakeES,
    fetch: opts.fetch || (async () => ({ status: 0 })),
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    random: opts.random || (() => 0.5),
    transport: 'websocket',
    ...opts.options,
  });
  const got = { messages: [], states: [], errors: [], failed: [], reconnects: [] };
  c.on('message', (m) => got.messages.push(m));
  c.on('state', (s) => got.states.push(s));
  c.on('error', (e) => got.errors.push(e));
  c.on('recovery_failed', (r) => got.failed.push(r));
  c.on('reconnect', (r) => got.reconnects.push(r));
  return { c, timers, t, got };
}

test('backoffDelay: full jitter under an exponential, bounded cap', () => {
  const o = { initialDelayMs: 100, maxDelayMs: 5000, factor: 2 };
  for (let n = 0; n < 20; n++) {
    const cap = Math.min(5000, 100 * 2 ** n);
    assert.equal(backoffDelay(n, o, () => 0), 0);
    const hi = backoffDelay(n, o, () => 0.999999);
    assert.ok(hi < cap && hi >= cap * 0.99, `n=${n}: ${hi} vs cap ${cap}`);
  }
  // many random draws stay inside [0, cap)
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(3, o);
    assert.ok(d >= 0 && d < 800);
  }
  assert.ok(backoffDelay(1e6, o, () => 0.5) <= 2500); // huge attempt counts do not overflow
});

test('URLs: json format, groups, since/epoch after messages, token, scheme per transport', async () => {
  const { c, t } = setup({ options: { token: 'T.o.k' } });
  // WebSocket asks for joined notices (the position of groups that stay quiet); SSE has event ids
  assert.equal(c.url('websocket'), 'ws://h:8080/ws?groups=a,b&format=json&joined=1&token=T.o.k');
  assert.equal(c.url('sse'), 'http://h:8080/sse?groups=a,b&format=json&token=T.o.k');
  c.connect();
  await settle();
  t.last().open();
  t.last().send(env('x', 'a', 7));
  assert.equal(c.url('websocket'), 'ws://h:8080/ws?groups=a,b&format=json&joined=1&since=a:7&epoch=E1&token=T.o.k');
  assert.equal(c.url('sse', { resume: false }), 'http://h:8080/sse?groups=a,b&format=json&token=T.o.k');
  const s = new HeraldClient('wss://h/base/', { groups: ['x'] });
  assert.equal(s.url('sse'), 'https://h/base/sse?groups=x&format=json');
  assert.throws(() => new HeraldClient('ftp://h'), TypeError);
  assert.throws(() => new HeraldClient('ws://h', { transport: 'carrier-pigeon' }), TypeError);
});

test('states, and messages delivered with group, offset, epoch; binary as bytes', async () => {
  const { c, t, got } = setup();
  c.connect();
  await settle();
  assert.deepEqual(got.states, ['connecting']);
  t.last().open();
  assert.deepEqual(got.states, ['connecting', 'open']);
  t.last().send(env('hello', 'a', 1));
  t.last().send(env('AAEC/w==', 'b', 1, 'E1', { binary: true }));
  t.last().send(env('all', null, 3));
  assert.equal(got.messages[0].data, 'hello');
  assert.deepEqual(got.messages[1].data, new Uint8Array([0, 1, 2, 255]));
  assert.equal(got.messages[2].group, null);
  assert.deepEqual(c.positions(), { epoch: 'E1', offsets: { a: 1, b: 1 } });
  c.close();
  assert.deepEqual(got.states, ['connecting', 'open', 'closed']);
  assert.ok(t.last().closed);
});

test('reconnect: backoff delays within jitter bounds, growing, reset after a stable connection', async () => {
  const draws = [0.999, 0.999, 0.999, 0.999, 0.5];
  let i = 0;
  const { c, t, timers, got } = setup({ random: () => draws[i++ % draws.length], options: { initialDelayMs: 100, maxDelayMs: 1000, stableAfterMs: 5000 } });
  c.connect();
  await settle();
  for (let k = 0; k < 4; k++) {
    t.last().serverClose(1006);  // never opened
    await settle();
    assert.equal(c.state, 'reconnecting');
    const cap = Math.min(1000, 100 * 2 ** k);
    const d = got.reconnects[k].delayMs;
    assert.ok(d < cap && d >= cap * 0.99, `attempt ${k}: ${d} vs ${cap}`);
    timers.advance(d);
    await settle();
  }
  assert.equal(t.made.length, 5);
  // a connection that stays open resets the backoff
  t.last().open();
  timers.advance(5000);
  t.last().serverClose(1012);
  await settle();
  assert.ok(got.reconnects[4].delayMs < 100);
  // no reconnect storm: exactly one timer waits
  assert.equal(timers.count(), 1);
});

test('no duplicate across reconnects: resume with since, replay overlap dropped, order kept', async () => {
  const { c, t, timers, got } = setup();
  c.connect();
  await settle();
  t.last().open();
  for (let o = 1; o <= 3; o++) t.last().send(env(`a${o}`, 'a', o));
  t.last().send(env('b1', 'b', 1));
  t.last().serverClose(1006);
  await settle();
  timers.advance(10_000);
  await settle();
  const ws = t.last();
  assert.match(ws.url, /since=a:3,b:1&epoch=E1/);
  ws.open();
  // a server could replay from before our position: those are not delivered again
  ws.send(env('a2', 'a', 2));
  ws.send(env('a3', 'a', 3));
  ws.send(env('a4', 'a', 4));
  ws.send(env('b1', 'b', 1));
  ws.send(env('b2', 'b', 2));
  assert.deepEqual(got.messages.map((m) => m.data), ['a1', 'a2', 'a3', 'b1', 'a4', 'b2']);
});

test('recovery_failed: reported, and the client continues from the server position', async () => {
  const { c, t, timers, got } = setup();
  c.connect();
  await settle();
  t.last().open();
  t.last().send(env('a1', 'a', 1));
  t.last().serverClose(1001);
  await settle();
  timers.advance(10_000);
  await settle();
  t.last().open();
  t.last().send({ type: 'recovery_failed', group: 'a', reason: 'epoch', epoch: 'E2', offset: 40 });
  assert.deepEqual(got.failed, [{ group: 'a', reason: 'epoch', epoch: 'E2', offset: 40 }]);
  t.last().send(env('a40', 'a', 40, 'E2')); // at or before the reported position: not new
  t.last().send(env('a41', 'a', 41, 'E2'));
  assert.deepEqual(got.messages.map((m) => m.data), ['a1', 'a41']);
  assert.deepEqual(c.positions(), { epoch: 'E2', offsets: { a: 41 } });
  // a message under another epoch mid-stream: offsets restart there, and the app hears that the
  // group's position from the old epoch is lost
  t.last().send(env('a1-e3', 'a', 1, 'E3'));
  assert.equal(got.messages.at(-1).data, 'a1-e3');
  assert.deepEqual(got.failed.at(-1), { group: 'a', reason: 'epoch', epoch: 'E3', offset: null });
  assert.equal(got.failed.length, 2);
});

/** Runs the backoff wait before the next attempt, and no further (its connect timer waits). */
async function reconnectNow(timers, got) {
  await settle();
  timers.advance(got.reconnects.at(-1).delayMs);
  await settle();
}

test('a quiet group is resumed from its joined notice: no message lost across a reconnect', async () => {
  const { c, t, timers, got } = setup({ options: { groups: ['user:42', 'global'] } });
  c.connect();
  await settle();
  const ws = t.last();
  assert.match(ws.url, /joined=1/);
  ws.open();
  ws.send({ type: 'joined', group: 'user:42', offset: 0, epoch: 'E1' });
  ws.send({ type: 'joined', group: 'global', offset: 10, epoch: 'E1' });
  for (let o = 11; o <= 13; o++) ws.send(env(`g${o}`, 'global', o));
  assert.deepEqual(c.positions(), { epoch: 'E1', offsets: { 'user:42': 0, global: 13 } });
  ws.serverClose(1006); // the network drops; user:42 gets a message meanwhile
  await reconnectNow(timers, got);
  const ws2 = t.last();
  assert.match(ws2.url, /since=user%3A42:0,global:13&epoch=E1/);
  ws2.open();
  ws2.send(env('u1', 'user:42', 1)); // the server's replay
  ws2.send(env('u1', 'user:42', 1)); // an overlap is still dropped
  ws2.send(env('g14', 'global', 14));
  assert.deepEqual(got.messages.map((m) => m.data), ['g11', 'g12', 'g13', 'u1', 'g14']);
  assert.deepEqual(got.failed, []);
});

test('SSE: the joined event that starts a stream gives every group\'s position at once', async () => {
  const { c, t, timers, got } = setup({ options: { groups: ['quiet', 'busy'], transport: 'sse' } });
  c.connect();
  await settle();
  const es = t.last();
  es.open();
  es.event('joined', '', 'E1/4,9'); // herald's first event: no message, the positions in its id
  assert.deepEqual(c.positions(), { epoch: 'E1', offsets: { quiet: 4, busy: 9 } });
  assert.equal(got.messages.length, 0);
  es.fail(); // dropped before any message
  await reconnectNow(timers, got);
  assert.match(t.last().url, /since=quiet:4,busy:9&epoch=E1/);
});

test('SSE: the event id gives the position of groups that delivered nothing yet', async () => {
  const { c, t, timers, got } = setup({ options: { groups: ['user:42', 'global'], transport: 'sse' } });
  c.connect();
  await settle();
  const es = t.last();
  assert.equal(es.kind, 'sse');
  assert.doesNotMatch(es.url, /joined/);
  es.open();
  es.send(env('g11', 'global', 11), 'E1/0,11');
  es.send(env('g12', 'global', 12), 'E1/0,12');
  assert.deepEqual(c.positions(), { epoch: 'E1', offsets: { 'user:42': 0, global: 12 } });
  es.fail();
  await reconnectNow(timers, got);
  assert.match(t.last().url, /since=user%3A42:0,global:12&epoch=E1/);
  // malformed or foreign ids are ignored
  const c2 = setup({ options: { groups: ['a', 'b'], transport: 'sse' } });
  c2.c.connect();
  await settle();
  c2.t.last().open();
  c2.t.last().send(env('a1', 'a', 1), 'E1/1');        // wrong entry count
  c2.t.last().send(env('a2', 'a', 2), 'nonsense');
  c2.t.last().send(env('a3', 'a', 3), 'E9/3,5');      // another epoch than the envelope's
  assert.deepEqual(c2.c.positions(), { epoch: 'E1', offsets: { a: 3 } });
  assert.equal(got.errors.length, 0);
});

test('epoch change on reconnect: recovery_failed once for every group of the old epoch', async () => {
  const { c, t, timers, got } = setup({ options: { groups: ['a', 'b', 'q'] } });
  c.connect();
  await settle();
  t.last().open();
  t.last().send({ type: 'joined', group: 'q', offset: 0, epoch: 'E1' });
  t.last().send(env('a1', 'a', 1));
  t.last().send(env('b1', 'b', 1));
  t.last().serverClose(1012); // the server restarts with a new epoch
  await reconnectNow(timers, got);
  assert.match(t.last().url, /since=a:1,b:1,q:0&epoch=E1/);
  t.last().open();
  // herald answers every since entry with recovery_failed 'epoch'
  t.last().send({ type: 'recovery_failed', group: 'a', reason: 'epoch', epoch: 'E2', offset: 0 });
  t.last().send({ type: 'recovery_failed', group: 'b', reason: 'epoch', epoch: 'E2', offset: 3 });
  t.last().send({ type: 'recovery_failed', group: 'q', reason: 'epoch', epoch: 'E2', offset: 0 });
  assert.deepEqual(got.failed.map((f) => [f.group, f.reason, f.epoch]).sort(),
    [['a', 'epoch', 'E2'], ['b', 'epoch', 'E2'], ['q', 'epoch', 'E2']]);
  assert.deepEqual(c.positions(), { epoch: 'E2', offsets: { a: 0, b: 3, q: 0 } });
  t.last().send(env('b4', 'b', 4, 'E2'));
  assert.equal(got.messages.at(-1).data, 'b4');

  // a joined notice under a new epoch (no since was sent for it) also reports the old positions
  const s2 = setup({ options: { groups: ['a', 'q'] } });
  s2.c.connect();
  await settle();
  s2.t.last().open();
  s2.t.last().send(env('a1', 'a', 1));
  s2.t.last().send({ type: 'joined', group: 'q', offset: 5, epoch: 'E7' });
  assert.deepEqual(s2.got.failed, [{ group: 'a', reason: 'epoch', epoch: 'E7', offset: null }]);
  assert.deepEqual(s2.c.positions(), { epoch: 'E7', offsets: { q: 5 } });
});

test('the status probe carries no since and is abandoned after connectTimeoutMs', async () => {
  const probes = [];
  const { c, t, timers, got } = setup({
    options: { connectTimeoutMs: 1000 },
    fetch: (url, init) => {
      probes.push({ url, init });
      return new Promise(() => {}); // a black-holed server: never answers
    },
  });
  c.connect();
  await settle();
  t.last().open();
  t.last().send(env('a1', 'a', 1));
  t.last().serverClose(1006);
  await reconnectNow(timers, got);
  t.last().serverClose(1006); // refused before open: probe
  await settle();
  assert.equal(probes.length, 1);
  assert.doesNotMatch(probes[0].url, /since|epoch=/);
  assert.equal(c.state, 'reconnecting');
  const made = t.made.length;
  timers.advance(1000); // the probe times out
  await settle();
  assert.equal(probes[0].init.signal.aborted, true);
  assert.equal(got.reconnects.length, 2);
  timers.advance(60_000);
  await settle();
  assert.equal(t.made.length, made + 1);
});

test('400 and 404 refusals are fatal, with the server\'s reason', async () => {
  for (const [status, body] of [[400, '{"ok":false,"status":400,"error":"too many groups"}\n'],
    [404, '{"ok":false,"status":404,"error":"not found"}\n']]) {
    const { c, t, timers, got } = setup({ fetch: async () => ({ status, text: async () => body }) });
    c.connect();
    await settle();
    t.last().serverClose(1006);
    await settle();
    assert.equal(c.state, 'closed');
    assert.equal(got.errors.length, 1);
    assert.equal(got.errors[0].code, status);
    assert.equal(got.errors[0].fatal, true);
    assert.match(got.errors[0].message, new RegExp(`HTTP ${status}: ${JSON.parse(body).error}`));
    timers.advance(100_000);
    assert.equal(t.made.length, 1);
  }
});

test('close codes that mean "do not retry" surface as errors, not a retry storm', async () => {
  for (const code of [1008, 1002, 1007]) {
    const { c, t, timers, got } = setup();
    c.connect();
    await settle();
    t.last().open();
    t.last().serverClose(code, 'slow consumer');
    await settle();
    assert.equal(c.state, 'closed');
    assert.equal(got.errors.length, 1);
    assert.equal(got.errors[0].code, code);
    assert.equal(got.errors[0].fatal, true);
    assert.equal(timers.count(), 0);
    timers.advance(100_000);
    assert.equal(t.made.length, 1);
  }
});

test('refused before open: a 401/403 probe is fatal without getToken', async () => {
  const probes = [];
  const { c, t, timers, got } = setup({ fetch: async (url) => { probes.push(url); return { status: 401 }; } });
  c.connect();
  await settle();
  t.last().serverClose(1006);
  await settle();
  assert.equal(probes.length, 1);
  assert.match(probes[0], /^http:\/\/h:8080\/sse\?groups=a,b/);
  assert.equal(c.state, 'closed');
  assert.equal(got.errors[0].code, 401);
  assert.equal(timers.count(), 0);
});

test('getToken refreshes the token before every attempt; a second refusal is fatal', async () => {
  let n = 0;
  const status = [401, 401];
  const { c, t, timers, got } = setup({
    fetch: async () => ({ status: status.shift() ?? 0 }),
    options: { getToken: async () => `tok${++n}` },
  });
  c.connect();
  await settle();
  assert.match(t.last().url, /token=tok1$/);
  t.last().serverClose(1006);
  await settle();
  assert.equal(c.state, 'reconnecting'); // one refusal: try a fresh token
  timers.advance(10_000);
  await settle();
  assert.match(t.last().url, /token=tok2$/);
  t.last().serverClose(1006);
  await settle();
  assert.equal(c.state, 'closed');
  assert.equal(got.errors.at(-1).code, 401);
});

test('an expired token after a long connection is refreshed on reconnect', async () => {
  let n = 0;
  const { c, t, timers } = setup({ options: { getToken: () => `t${++n}` } });
  c.connect();
  await settle();
  t.last().open();
  t.last().serverClose(1006);
  await settle();
  timers.advance(10_000);
  await settle();
  assert.match(t.last().url, /token=t2$/);
});

test('auto: falls back to SSE when the WebSocket cannot connect, and keeps it', async () => {
  const { c, t, timers, got } = setup({ options: { transport: 'auto' } });
  c.connect();
  await settle();
  assert.equal(t.last().kind, 'websocket');
  t.last().serverClose(1006);
  await settle();
  timers.advance(10_000);
  await settle();
  const es = t.last();
  assert.equal(es.kind, 'sse');
  assert.match(es.url, /^http:\/\/h:8080\/sse\?groups=a,b&format=json$/);
  es.open();
  assert.equal(c.transport, 'sse');
  es.send(env('a1', 'a', 1));
  es.event('recovery_failed', { type: 'recovery_failed', group: 'b', reason: 'too_old', epoch: 'E1', offset: 9 });
  es.fail(); // the stream broke: our own reconnect, over SSE again, resuming both groups
  await settle();
  assert.ok(es.closed);
  timers.advance(10_000);
  await settle();
  assert.equal(t.last().kind, 'sse');
  assert.match(t.last().url, /since=a:1,b:9&epoch=E1/);
  t.last().open();
  t.last().send(env('a1', 'a', 1));
  t.last().send(env('a2', 'a', 2));
  assert.deepEqual(got.messages.map((m) => m.data), ['a1', 'a2']);
  assert.equal(got.failed.length, 1);
});

test('auto: a WebSocket that opened once stays the transport while the server is down', async () => {
  const { c, t, timers } = setup({ options: { transport: 'auto' } });
  c.connect();
  await settle();
  t.last().open();
  for (let k = 0; k < 3; k++) {
    t.last().serverClose(1006);
    await settle();
    timers.advance(60_000);
    await settle();
    assert.equal(t.last().kind, 'websocket');
  }
});

test('an attempt that hangs is abandoned after connectTimeoutMs', async () => {
  const { c, t, timers, got } = setup({ options: { connectTimeoutMs: 1000 } });
  c.connect();
  await settle();
  timers.advance(1000);
  await settle();
  assert.ok(t.made[0].closed);
  assert.equal(c.state, 'reconnecting');
  assert.equal(got.reconnects.length, 1);
});

test('close() during a backoff wait cancels the reconnect; stale events are ignored', async () => {
  const { c, t, timers, got } = setup();
  c.connect();
  await settle();
  const first = t.last();
  first.open();
  first.serverClose(1006);
  await settle();
  c.close();
  timers.advance(100_000);
  await settle();
  assert.equal(t.made.length, 1);
  first.send(env('late', 'a', 1)); // the old socket's handlers were detached
  assert.equal(got.messages.length, 0);
  assert.equal(c.state, 'closed');
});

test('a throwing message handler does not stop delivery', async () => {
  const { c, t, got } = setup();
  c.on('message', () => { throw new Error('app bug'); });
  c.connect();
  await settle();
  t.last().open();
  t.last().send(env('a1', 'a', 1));
  t.last().send(env('a2', 'a', 2));
  assert.equal(got.messages.length, 2);
  assert.equal(got.errors.length, 2);
});

test('no implementation available: a clear fatal error', async () => {
  const timers = fakeTimers();
  const c = new HeraldClient('ws://h', { groups: ['a'], transport: 'websocket', WebSocket: undefined, setTimeout: timers.setTimeout, clearTimeout: timers.clearTimeout });
  if (typeof globalThis.WebSocket === 'function') return; // Node 22+: a global exists
  const errors = [];
  c.on('error', (e) => errors.push(e));
  c.connect();
  await settle();
  assert.equal(c.state, 'closed');
  assert.match(errors[0].message, /no WebSocket implementation/);
});
