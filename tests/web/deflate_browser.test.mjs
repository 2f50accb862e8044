// permessage-deflate with a real browser's own offer: headless Debian chromium (playwright-core)
// subscribes from a page served by herald; a compressible JSON notification published over HTTP
// arrives intact, and herald's /stats show it went out compressed. The page also publishes over
// a WebSocket (chromium compresses what it sends), and a Node `ws` subscriber receives it.
//   node --test tests/web/deflate_browser.test.mjs   (after `npm ci --prefix tests/web`)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startHerald, withTimeout } from './herald_proc.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');
const CHROMIUM = process.env.HERALD_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-proxy-server', '--disable-dev-shm-usage'];

let h, context, page, userDataDir;

before(async () => {
  h = await startHerald();
  userDataDir = mkdtempSync(path.join(tmpdir(), 'herald-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60_000,
  });
  context.setDefaultTimeout(10_000);
  page = context.pages()[0] || (await context.newPage());
  const resp = await page.goto(`${h.base}/`, { waitUntil: 'load', timeout: 15_000 });
  assert.equal(resp.status(), 200);
}, { timeout: 90_000 });

after(async () => {
  if (context) await withTimeout(context.close(), 15_000, 'chromium to close').catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  if (h) await h.stop();
}, { timeout: 60_000 });

const notification = JSON.stringify({
  type: 'notification',
  items: Array.from({ length: 40 }, (_, i) => ({
    id: `n-${1000 + i}`, user: { id: i, name: `user${i}` }, title: 'Your order has shipped',
    created_at: `2026-12-06T02:${String(i % 60).padStart(2, '0')}:00Z`, read: i % 2 === 0,
  })),
});

test('chromium negotiates deflate and receives a compressed notification intact', { timeout: 30_000 }, async () => {
  const ext = await page.evaluate(async (port) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?groups=browser`);
    window.received = [];
    ws.onmessage = (e) => window.received.push(e.data);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    window.sub = ws;
    return ws.extensions;
  }, h.port);
  assert.match(ext, /^permessage-deflate/, `the browser's extensions: ${ext}`);
  const before = await h.stats();
  await h.publish('browser', notification, 'application/json');
  const got = await page.waitForFunction(() => window.received.length > 0 && window.received[0], null, { timeout: 10_000 });
  assert.equal(await got.jsonValue(), notification);
  const s = await h.stats();
  assert.equal(s.deflate_messages - before.deflate_messages, 1);
  assert.equal(s.deflate_deliveries - before.deflate_deliveries, 1);
  assert.ok(s.deflate_bytes_out - before.deflate_bytes_out < notification.length / 3,
    `compressed ${s.deflate_bytes_out - before.deflate_bytes_out} of ${notification.length} bytes`);
  // the status page's memory view shows the compressor the worker now holds
  assert.ok(s.memory.deflate > 100 * 1024, `memory.deflate ${s.memory.deflate}`);
  await page.waitForFunction(() => /KiB|MiB/.test(document.getElementById('m-deflate').textContent),
    null, { timeout: 5_000 });
});

test('chromium publishes compressed; a Node ws subscriber without deflate gets it', { timeout: 30_000 }, async () => {
  const sub = new WebSocket(`ws://127.0.0.1:${h.port}/ws?groups=frombrowser`, { perMessageDeflate: false });
  const msg = new Promise((resolve) => sub.once('message', (d) => resolve(d.toString())));
  await withTimeout(new Promise((resolve, reject) => { sub.once('open', resolve); sub.once('error', reject); }), 10_000, 'ws open');
  const before = await h.stats();
  await page.evaluate(async ({ port, body }) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/publish?group=frombrowser`);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    ws.send(body);
  }, { port: h.port, body: notification });
  assert.equal(await withTimeout(msg, 10_000, 'the browser publish'), notification);
  const s = await h.stats();
  assert.equal(s.inflate_messages - before.inflate_messages, 1, 'chromium compressed its message');
  assert.ok(s.inflate_bytes_in - before.inflate_bytes_in < notification.length / 3);
  sub.close();
});
