// permessage-deflate with Node's `ws` (perMessageDeflate) as an independent client: its own
// negotiation, zlib compressor (context takeover by default) and inflater. Runs on Node 18 and 20.
//   node --test tests/web/deflate_ws.test.mjs   (after `npm ci --prefix tests/web`)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { startHerald, withTimeout } from './herald_proc.mjs';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');

let h;
before(async () => { h = await startHerald(); });
after(async () => { if (h) await h.stop(); });

function open(path, deflate) {
  const ws = new WebSocket(`ws://127.0.0.1:${h.port}${path}`, {
    perMessageDeflate: deflate ? { threshold: 0 } : false, // compress everything we send
    maxPayload: 0,
  });
  const inbox = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    const m = { data: Buffer.from(data), isBinary };
    if (waiters.length) waiters.shift()(m); else inbox.push(m);
  });
  ws.next = (ms = 10_000) => withTimeout(new Promise((resolve) => {
    if (inbox.length) resolve(inbox.shift()); else waiters.push(resolve);
  }), ms, `a message on ${path}`);
  return withTimeout(new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  }), 10_000, `open ${path}`);
}

// n bytes of JSON-like ASCII (non-ASCII text is covered by tests/integration/test_deflate.py)
function json(n, seed) {
  let s = '';
  let i = seed;
  while (s.length < n) s += JSON.stringify({ id: i++, title: 'order shipped', user: `user${i % 97}` }) + ',';
  return s.slice(0, n);
}

const SIZES = [0, 1, 2, 125, 126, 127, 128, 129, 255, 256, 1024, 4096, 65535, 65536, 65537, 262144, 1 << 20];

test('ws subscribers with and without deflate, ws publisher compressing every size', { timeout: 60_000 }, async () => {
  const zs = await open('/ws?groups=n', true);
  const plain = await open('/ws?groups=n', false);
  const pub = await open('/publish?group=n', true);
  assert.match(zs.extensions, /^permessage-deflate/);
  assert.equal(plain.extensions, '');
  assert.match(pub.extensions, /^permessage-deflate/);
  for (const [i, n] of SIZES.entries()) {
    for (const binary of [false, true]) {
      const body = binary ? Buffer.concat([randomBytes(n >> 1), Buffer.alloc(n - (n >> 1))]) : Buffer.from(json(n, i));
      pub.send(body, { binary });
      for (const s of [zs, plain]) {
        const m = await s.next();
        assert.equal(m.isBinary, binary, `opcode for ${n} B`);
        assert.ok(m.data.equals(body), `payload of ${n} B (${binary ? 'binary' : 'text'})`);
      }
    }
  }
  // HTTP publishes reach the ws subscriber compressed by herald
  const body = json(5000, 3);
  await h.publish('n', body, 'application/json');
  assert.equal((await zs.next()).data.toString(), body);
  assert.equal((await plain.next()).data.toString(), body);
  const s = await h.stats();
  assert.ok(s.inflate_messages >= SIZES.length * 2, `inflate_messages ${s.inflate_messages}`);
  assert.ok(s.deflate_messages > 0 && s.deflate_bytes_out < s.deflate_bytes_in, JSON.stringify(s));
  for (const w of [zs, plain, pub]) w.close();
});

test('fragmented compressed publish from ws (RSV1 on the first frame only)', { timeout: 30_000 }, async () => {
  const sub = await open('/ws?groups=frag', false);
  const pub = await open('/publish?group=frag', true);
  const parts = [json(3000, 1), json(3000, 2), json(10, 3)];
  parts.forEach((p, k) => pub.send(p, { fin: k === parts.length - 1, compress: true }));
  const m = await sub.next();
  assert.equal(m.isBinary, false);
  assert.equal(m.data.toString(), parts.join(''));
  sub.close();
  pub.close();
});
