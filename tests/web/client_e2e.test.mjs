// End-to-end test of the JavaScript client (clients/js, served by herald at /herald-client.js) in
// headless Debian chromium driven by playwright-core: two herald nodes on a real redis-server (so
// the cluster's epoch and history survive a node), a page subscribed to node A, messages published
// on node B while node A is killed (SIGKILL) and restarted on the same port mid-stream. The page
// must receive every message exactly once, in order -- over WebSocket, then with SSE forced. The
// page also follows a quiet group that gets its only message while node A is down: the client
// knows that group's position from the start (joined notice / event id), so it arrives once.
//
//   HERALD_BIN, HERALD_CHROMIUM, REDIS_SERVER (default /usr/bin/redis-server)
//
// Every wait is bounded; a watchdog kills the children and exits if the file overruns.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { withTimeout } from './herald_proc.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HERALD_BIN = path.resolve(process.env.HERALD_BIN || path.join(HERE, '..', '..', 'build', 'herald'));
const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
const REDIS = process.env.REDIS_SERVER || '/usr/bin/redis-server';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-proxy-server', '--disable-dev-shm-usage',
];
const WATCHDOG_MS = 150_000;
const N = 200;          // messages per run
const KILL_AT = 70;     // node A is killed after this many publishes
const DOWN_MS = 400;    // and restarted this long after

const children = new Set();
let redis = null;
let redisPort = 0;
const nodes = {};        // name -> { proc, port, log, exit }
let context = null;
let userDataDir = null;
let page = null;
const pageErrors = [];

const watchdog = setTimeout(() => {
  process.stderr.write(`client_e2e.test: watchdog fired after ${WATCHDOG_MS} ms\n`);
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function track(proc) {
  children.add(proc);
  const exit = new Promise((resolve) => proc.on('exit', (code, signal) => {
    children.delete(proc);
    resolve({ code, signal });
  }));
  return exit;
}

async function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { buf += d; if (buf.includes('\r\n')) { s.destroy(); resolve(buf.startsWith('+PONG')); } });
    s.on('error', () => resolve(false));
    setTimeout(() => { s.destroy(); resolve(false); }, 1000);
  });
}

async function startRedis() {
  assert.ok(existsSync(REDIS), `redis-server not found at ${REDIS} (apt-get install redis-server)`);
  redisPort = await freePort();
  redis = spawn(REDIS, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'ignore', 'ignore'] });
  track(redis);
  const deadline = Date.now() + 10_000;
  while (!(await redisPing(redisPort))) {
    assert.ok(Date.now() < deadline, 'redis-server did not answer PING');
    await sleep(50);
  }
}

async function startNode(name, port = 0) {
  assert.ok(existsSync(HERALD_BIN), `herald binary not found at ${HERALD_BIN}`);
  const proc = spawn(HERALD_BIN, ['--listen', `127.0.0.1:${port}`, '--workers', '2', '--history', '1000',
    '--broker', `redis://127.0.0.1:${redisPort}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  const n = { proc, port: 0, log: '', exit: track(proc) };
  nodes[name] = n;
  const listening = new Promise((resolve, reject) => {
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      n.log += chunk;
      const m = /herald: listening on \S+:(\d+)/.exec(n.log);
      if (m) resolve(Number(m[1]));
    });
    n.exit.then(({ code, signal }) => reject(new Error(`herald ${name} exited early (${code}, ${signal}):\n${n.log}`)));
  });
  n.port = await withTimeout(listening, 10_000, `herald ${name} to listen`);
  // wait until the node is in the cluster (its /stats says the broker is up)
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${n.port}/stats`, { signal: AbortSignal.timeout(2_000) });
      if ((await r.json()).broker === 'up') break;
    } catch { /* not yet */ }
    assert.ok(Date.now() < deadline, `herald ${name} never reported broker up:\n${n.log}`);
    await sleep(50);
  }
  return n;
}

async function stopNode(name, signal = 'SIGTERM') {
  const n = nodes[name];
  if (!n || n.proc.exitCode !== null || n.proc.signalCode !== null) return null;
  n.proc.kill(signal);
  return withTimeout(n.exit, 15_000, `herald ${name} to exit`);
}

before(async () => {
  await startRedis();
  await startNode('A');
  await startNode('B');
  userDataDir = mkdtempSync(path.join(tmpdir(), 'herald-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60_000,
  });
  context.setDefaultTimeout(10_000);
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
  // the page comes from node A, like an application page served next to herald
  const resp = await page.goto(`http://127.0.0.1:${nodes.A.port}/`, { waitUntil: 'load', timeout: 15_000 });
  assert.equal(resp.status(), 200);
}, { timeout: 90_000 });

after(async () => {
  if (context) await withTimeout(context.close(), 15_000, 'chromium to close').catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  for (const name of Object.keys(nodes)) {
    const r = await stopNode(name).catch(() => null);
    if (r === null && nodes[name].proc.exitCode === null) nodes[name].proc.kill('SIGKILL');
  }
  if (redis && redis.exitCode === null) redis.kill('SIGKILL');
}, { timeout: 60_000 });

async function publishB(group, text) {
  const r = await fetch(`http://127.0.0.1:${nodes.B.port}/publish?group=${group}`, {
    method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: text, signal: AbortSignal.timeout(5_000),
  });
  assert.equal(r.status, 200, await r.text());
}

let restartA = null;  // the restart of node A, once started

async function run(transport, group) {
  const portA = nodes.A.port;
  const quiet = `${group}-quiet`;
  await page.evaluate(async ({ portA, transport, group, quiet }) => {
    const { HeraldClient } = await import('/herald-client.js');
    const got = [];
    const quietGot = [];
    const states = [];
    const errors = [];
    const c = new HeraldClient(`ws://127.0.0.1:${portA}`, {
      groups: [quiet, group], transport, initialDelayMs: 100, maxDelayMs: 800, connectTimeoutMs: 3000,
    });
    c.on('message', (m) => (m.group === quiet ? quietGot : got).push(m.data));
    c.on('state', (s) => states.push(s));
    c.on('error', (e) => errors.push(String(e && e.message)));
    c.on('recovery_failed', (r) => errors.push(`recovery_failed ${JSON.stringify(r)}`));
    window.__run = { c, got, quietGot, states, errors };
    c.connect();
  }, { portA, transport, group, quiet });
  await page.waitForFunction(() => window.__run.c.state === 'open', null, { timeout: 10_000 });
  assert.equal(await page.evaluate(() => window.__run.c.transport), transport);

  const want = [];
  for (let i = 0; i < N; i++) {
    const text = `${transport}-${i}`;
    want.push(text);
    await publishB(group, text);
    if (i === 10) // the page has started receiving before the kill
      await page.waitForFunction(() => window.__run.got.length >= 5, null, { timeout: 10_000 });
    if (i === KILL_AT) {
      const r = await stopNode('A', 'SIGKILL');
      assert.equal(r.signal, 'SIGKILL');
      await publishB(quiet, `${transport}-quiet`); // the quiet group's first message, A down
      setTimeout(() => { restartA = startNode('A', portA); }, DOWN_MS);
    }
    await sleep(5);
  }
  await withTimeout((async () => { while (!restartA) await sleep(20); await restartA; })(), 20_000,
    'node A to come back');
  restartA = null;
  await page.waitForFunction((n) => window.__run.got.length >= n, N, { timeout: 30_000 })
    .catch(() => {});
  await page.waitForFunction(() => window.__run.quietGot.length >= 1, null, { timeout: 10_000 })
    .catch(() => {});
  const res = await page.evaluate(() => ({
    got: window.__run.got, states: window.__run.states, errors: window.__run.errors, state: window.__run.c.state,
    quietGot: window.__run.quietGot,
  }));
  assert.deepEqual(res.errors, [], 'no error and no recovery_failed');
  assert.deepEqual(res.quietGot, [`${transport}-quiet`], 'the quiet group\'s message, once');
  assert.equal(res.got.length, N, `received ${res.got.length} of ${N}; states ${res.states}`);
  assert.deepEqual(res.got, want, 'every message exactly once, in order');
  assert.ok(res.states.includes('reconnecting'), `the client reconnected: ${res.states}`);
  assert.equal(res.state, 'open');
  // nothing more arrives (no duplicate after the fact)
  await sleep(300);
  assert.equal(await page.evaluate(() => window.__run.got.length), N);
  assert.equal(await page.evaluate(() => window.__run.quietGot.length), 1);
  await page.evaluate(() => window.__run.c.close());
}

test('WebSocket: node killed and restarted mid-stream, every message once, in order', { timeout: 60_000 }, async () => {
  await run('websocket', 'e2e-ws');
  assert.deepEqual(pageErrors, []);
});

test('SSE forced: the same', { timeout: 60_000 }, async () => {
  await run('sse', 'e2e-sse');
  assert.deepEqual(pageErrors, []);
});

// No client library: the browser's own EventSource reconnects by itself and sends Last-Event-ID,
// which resumes the stream's groups on the restarted node.
test("the browser's own EventSource resumes every group through Last-Event-ID", { timeout: 60_000 }, async () => {
  const portA = nodes.A.port;
  const groups = ['es-a', 'es-b'];
  await page.evaluate(({ portA, groups }) => {
    const got = [];
    const ids = [];
    let opens = 0;
    const es = new EventSource(`http://127.0.0.1:${portA}/sse?groups=${groups.join(',')}`);
    es.onopen = () => { opens++; };
    es.onmessage = (e) => { got.push(e.data); ids.push(e.lastEventId); };
    es.addEventListener('recovery_failed', (e) => got.push(`recovery_failed ${e.data}`));
    window.__es = { es, got, ids, opens: () => opens };
  }, { portA, groups });
  await page.waitForFunction(() => window.__es.opens() === 1, null, { timeout: 10_000 });
  const want = [];
  const M = 120;
  for (let i = 0; i < M; i++) {
    const g = groups[i % 2];
    const text = `${g}-${i}`;
    want.push(text);
    await publishB(g, text);
    if (i === 10)
      await page.waitForFunction(() => window.__es.got.length >= 5, null, { timeout: 10_000 });
    if (i === 40) {
      await stopNode('A', 'SIGKILL');
      setTimeout(() => { restartA = startNode('A', portA); }, DOWN_MS);
    }
    await sleep(5);
  }
  await withTimeout((async () => { while (!restartA) await sleep(20); await restartA; })(), 20_000,
    'node A to come back');
  restartA = null;
  // Chromium's EventSource waits its reconnection time (a few seconds) before trying again
  await page.waitForFunction((n) => window.__es.got.length >= n, M, { timeout: 30_000 }).catch(() => {});
  const res = await page.evaluate(() => ({ got: window.__es.got, ids: window.__es.ids, opens: window.__es.opens() }));
  assert.ok(res.opens >= 2, `the EventSource reconnected (opens: ${res.opens})`);
  // per group: every message once, in order (the replay after the restart goes group by group)
  for (const g of groups) {
    assert.deepEqual(res.got.filter((t) => t.startsWith(`${g}-`)), want.filter((t) => t.startsWith(`${g}-`)), g);
  }
  assert.equal(res.got.length, M, `no recovery_failed, no duplicate: ${res.got.filter((t) => !/^es-/.test(t))}`);
  assert.match(res.ids.at(-1), /^[^/]+\/\d+,\d+$/);
  await page.evaluate(() => window.__es.es.close());
  assert.deepEqual(pageErrors.filter((e) => !/ERR_CONNECTION_REFUSED|EventSource/.test(e)), []);
});
