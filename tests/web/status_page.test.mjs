// Browser test of herald's status page (`GET /`): the real herald binary, Debian's chromium driven
// headless by playwright-core (no downloaded browser), node's built-in test runner.
//
//   HERALD_BIN        herald binary (default: ../../build/herald relative to this file)
//   HERALD_ARTIFACTS  where the screenshots go (default: build/artifacts in the repository)
//   HERALD_CHROMIUM   chromium binary (default: /usr/bin/chromium)
//
// Run: node --test tests/web/status_page.test.mjs   (after `npm ci --prefix tests/web`)
//
// Every wait is bounded; a watchdog kills herald and exits if the whole file overruns.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { withTimeout } from './herald_proc.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const HERALD_BIN = path.resolve(process.env.HERALD_BIN || path.join(HERE, '..', '..', 'build', 'herald'));
const ARTIFACTS = process.env.HERALD_ARTIFACTS
  ? path.resolve(process.env.HERALD_ARTIFACTS)
  : path.join(REPO, 'build', 'artifacts');
const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-proxy-server', '--disable-dev-shm-usage',
];
const GROUP = 'webtest';
const WATCHDOG_MS = 150_000;

let herald = null;        // child process
let heraldExit = null;    // promise of { code, signal }
let heraldLog = '';       // everything herald wrote to stderr, for failure messages
let base = '';            // http://127.0.0.1:PORT
let context = null;      // playwright persistent context (owns the browser)
let page = null;
let userDataDir = null;
const pageErrors = [];    // uncaught exceptions and console errors in the page
const foreignRequests = []; // anything the page loads from another origin (must be none: no CDN)

const watchdog = setTimeout(() => {
  process.stderr.write(`status_page.test: watchdog fired after ${WATCHDOG_MS} ms\n${heraldLog}\n`);
  if (herald && herald.exitCode === null) herald.kill('SIGKILL');
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

async function startHerald() {
  assert.ok(existsSync(HERALD_BIN), `herald binary not found at ${HERALD_BIN} (build it, or set HERALD_BIN)`);
  herald = spawn(HERALD_BIN, ['--listen', '127.0.0.1:0', '--workers', '2'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  heraldExit = new Promise((resolve) => herald.on('exit', (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    herald.on('error', reject);
    herald.stderr.setEncoding('utf8');
    herald.stderr.on('data', (chunk) => {
      heraldLog += chunk;
      const m = /herald: listening on (\S+):(\d+)/.exec(heraldLog);
      if (m) resolve({ host: m[1], port: Number(m[2]) });
    });
    heraldExit.then(({ code, signal }) =>
      reject(new Error(`herald exited early (code ${code}, signal ${signal}):\n${heraldLog}`)));
  });
  const { host, port } = await withTimeout(listening, 10_000, 'herald to print its listening line');
  assert.ok(port > 0, `bad port in: ${heraldLog}`);
  const bare = host.replace(/^\[|\]$/g, '');
  base = `http://${bare.includes(':') ? `[${bare}]` : bare}:${port}`;
}

async function stats() {
  const r = await fetch(`${base}/stats`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(r.status, 200);
  return r.json();
}

async function publish(group, text) {
  const r = await fetch(`${base}/publish?group=${encodeURIComponent(group)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'text/plain; charset=utf-8' },
    body: text,
    signal: AbortSignal.timeout(5_000),
  });
  const body = await r.text();
  assert.equal(r.status, 200, `publish answered ${r.status}: ${body}`);
  const j = JSON.parse(body);
  assert.equal(j.ok, true);
  assert.equal(j.group, group);
  assert.equal(j.bytes, Buffer.byteLength(text));
}

// Counter text as the page formats it ("1,234") → number; NaN while still "–".
async function counter(id) {
  const t = await page.locator(`#${id}`).textContent({ timeout: 2_000 });
  return Number(String(t).replace(/,/g, ''));
}

// Polls fn() until it returns a truthy value or `ms` pass; returns the last value.
async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  await startHerald();
  userDataDir = mkdtempSync(path.join(tmpdir(), 'herald-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
    timeout: 60_000,
  });
  context.setDefaultTimeout(10_000);
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/favicon/.test(m.location()?.url || '')) pageErrors.push(`console: ${m.text()}`);
  });
  page.on('request', (req) => {
    const u = new URL(req.url());
    if ((u.protocol === 'http:' || u.protocol === 'ws:') && u.host !== new URL(base).host) foreignRequests.push(req.url());
    if (u.protocol === 'https:' || u.protocol === 'wss:') foreignRequests.push(req.url());
  });
}, { timeout: 90_000 });

after(async () => {
  if (context) await withTimeout(context.close(), 15_000, 'chromium to close').catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  if (herald && herald.exitCode === null && herald.signalCode === null) {
    herald.kill('SIGTERM');
    const r = await withTimeout(heraldExit, 15_000, 'herald to exit').catch(() => null);
    if (!r) herald.kill('SIGKILL');
  }
}, { timeout: 60_000 });

test('the page loads: title, counters, live /stats polling, nothing from other origins', { timeout: 30_000 }, async () => {
  const resp = await page.goto(`${base}/`, { waitUntil: 'load', timeout: 15_000 });
  assert.equal(resp.status(), 200);
  assert.match(resp.headers()['content-type'] || '', /^text\/html/);
  assert.equal(await page.title(), 'herald');
  for (const id of ['c-conn', 'c-subs', 'c-pubrate', 'c-delrate', 'c-pub', 'c-del', 'c-drop', 'c-slow',
    'group', 'sub', 'unsub', 'state', 'text', 'pub', 'pubres', 'log']) {
    assert.equal(await page.locator(`#${id}`).count(), 1, `#${id} missing`);
  }
  // The first poll fills the totals; the second fills the rates.
  await until(async () => Number.isFinite(await counter('c-conn')) && Number.isFinite(await counter('c-delrate')),
    5_000, 'counters to show numbers');
  assert.match(await page.locator('#meta').textContent(), /workers/);
  assert.ok(await counter('c-conn') >= 0);
  assert.equal(await page.locator('#unsub').isDisabled(), true);
  // The memory view: RSS and every kind filled from /stats (a live process is never 0 B
  // resident; the inbox rings exist from the start).
  await until(async () => /MiB|KiB/.test(await page.locator('#m-rss').textContent()), 5_000,
    'memory view to show RSS');
  for (const k of ['history', 'messages', 'queues', 'connections', 'tls', 'groups', 'inbox'])
    assert.match(await page.locator(`#m-${k}`).textContent(), /^\d+(\.\d)? (B|KiB|MiB|GiB)$/, `#m-${k}`);
  assert.match(await page.locator('#m-inbox').textContent(), /KiB|MiB/);
  assert.equal(await page.locator('#m-limit').textContent(), 'off');
  assert.deepEqual(foreignRequests, [], 'the page must not load anything from another origin');
});

test('counters change when messages flow to a subscriber', { timeout: 30_000 }, async () => {
  await page.locator('#group').fill(GROUP);
  await page.locator('#sub').click();
  await page.waitForFunction((g) => document.getElementById('state').textContent === `subscribed to ${g}`,
    GROUP, { timeout: 5_000 });
  assert.equal(await page.locator('#unsub').isDisabled(), false);

  // The page's own subscriber shows up in the counters.
  await until(async () => (await counter('c-subs')) >= 1 && (await counter('c-conn')) >= 1, 5_000,
    'subscribers counter to reach 1');

  const s0 = await stats();
  const del0 = await counter('c-del');
  const pub0 = await counter('c-pub');
  assert.ok(Number.isFinite(del0) && Number.isFinite(pub0));

  // Spread ten messages over ~2 s so that at least one 1-second poll sees non-zero rates.
  const N = 10;
  let maxDelRate = 0;
  let maxPubRate = 0;
  const sampleRates = async () => {
    maxDelRate = Math.max(maxDelRate, (await counter('c-delrate')) || 0);
    maxPubRate = Math.max(maxPubRate, (await counter('c-pubrate')) || 0);
  };
  for (let i = 0; i < N; i++) {
    await publish(GROUP, `flow message ${i}`);
    await sampleRates();
    await new Promise((r) => setTimeout(r, 200));
  }

  const s1 = await stats();
  assert.ok(s1.messages_published >= s0.messages_published + N, 'server counted the publishes');

  await until(async () => {
    await sampleRates();
    return (await counter('c-del')) >= del0 + N && (await counter('c-pub')) >= pub0 + N;
  }, 5_000, `deliveries counter to grow from ${del0} by ${N}`);
  await until(async () => { await sampleRates(); return maxDelRate > 0 && maxPubRate > 0; }, 3_000,
    'publish/delivery rates to show a non-zero value');

  // And the subscriber in the page really received them.
  await page.waitForFunction((n) => {
    const t = document.getElementById('log').textContent;
    return t.includes(`received: flow message ${n - 1}`);
  }, N, { timeout: 5_000 });
  assert.equal(await counter('c-drop'), 0);
  assert.equal(await counter('c-slow'), 0);
});

test('the try-it panel round-trips a message', { timeout: 30_000 }, async () => {
  const text = `round trip ${Date.now()} — héllo ✓`;
  await page.locator('#text').fill(text);
  await page.locator('#pub').click();
  await page.waitForFunction((t) => document.getElementById('log').textContent.includes(`received: ${t}`),
    text, { timeout: 5_000 });
  await page.waitForFunction((n) => document.getElementById('pubres').textContent === `published ${n} bytes`,
    Buffer.byteLength(text), { timeout: 5_000 });

  // Let one more poll land so the screenshot shows current counters, then save it (CI artifact).
  await page.waitForTimeout(1_200);
  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = path.join(ARTIFACTS, 'status-page.png');
  await page.screenshot({ path: shot, fullPage: true, timeout: 10_000 });
  assert.ok(statSync(shot).size > 1000, 'screenshot written');
  // A phone-width view too, to catch layout that only breaks when narrow.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: path.join(ARTIFACTS, 'status-page-narrow.png'), fullPage: true, timeout: 10_000 });
  await page.setViewportSize({ width: 1280, height: 900 });
});

test('publishing an invalid group shows the error; unsubscribe closes with 1000', { timeout: 30_000 }, async () => {
  assert.deepEqual(pageErrors, [], 'no script or console errors in the page so far');
  await page.locator('#group').fill('bad group!');
  await page.locator('#pub').click();
  await page.waitForFunction(() => /^error 400/.test(document.getElementById('pubres').textContent),
    null, { timeout: 5_000 });

  await page.locator('#unsub').click();
  await page.waitForFunction(() => document.getElementById('state').textContent === 'not subscribed',
    null, { timeout: 5_000 });
  await page.waitForFunction(() => document.getElementById('log').textContent.includes('closed (1000)'),
    null, { timeout: 5_000 });
  assert.equal(await page.locator('#unsub').isDisabled(), true);
  await until(async () => (await counter('c-subs')) === 0, 5_000, 'subscribers counter back to 0');

  // The only error allowed now is the browser's own note about the 400 we asked for.
  assert.deepEqual(pageErrors.filter((e) => !/status of 400/.test(e)), [], 'no script errors in the page');
  assert.deepEqual(foreignRequests, [], 'the page must not load anything from another origin');
});

test('herald exits 0 on SIGTERM', { timeout: 30_000 }, async () => {
  await withTimeout(context.close(), 15_000, 'chromium to close');
  context = null;
  herald.kill('SIGTERM');
  const { code, signal } = await withTimeout(heraldExit, 20_000, 'herald to exit after SIGTERM');
  assert.equal(signal, null, `herald died of ${signal}:\n${heraldLog}`);
  assert.equal(code, 0, `herald exit code ${code}:\n${heraldLog}`);
});
