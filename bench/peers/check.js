'use strict';
// Correctness check for a peer (or herald): group isolation, multi-group
// subscribers, opcode preserved, raw payload (no envelope), publisher never
// gets its own messages, no history replayed to late subscribers.
// usage: node bench/peers/check.js PORT [HOST]   (exit 0 = pass)
const path = require('path');
const WebSocket = require(path.join(__dirname, 'node', 'node_modules', 'ws'));

const port = Number(process.argv[2]);
const host = process.argv[3] || '127.0.0.1';
const base = `ws://${host}:${port}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function open(p) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + p, { perMessageDeflate: false });
    ws.got = [];
    ws.on('message', (data, isBinary) => ws.got.push((isBinary ? 'B:' : 'T:') + data.toString()));
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    setTimeout(() => reject(new Error('timeout opening ' + p)), 5000);
  });
}

(async () => {
  const subA = await open('/ws?groups=a');
  const subB = await open('/ws?groups=b');
  const subAB = await open('/ws?groups=a,b');
  const subC = await open('/ws?groups=c');
  const pubA = await open('/publish?group=a');
  const pubB = await open('/publish?group=b');
  await sleep(300);
  pubA.send('hello-a1');
  pubA.send(Buffer.from('bin-a2'), { binary: true });
  pubB.send('hello-b1');
  await sleep(300);
  pubA.send('hello-a3');
  await sleep(500);
  const late = await open('/ws?groups=a');
  await sleep(500);
  pubA.send('hello-a4');
  await sleep(500);

  const expect = {
    subA: ['T:hello-a1', 'B:bin-a2', 'T:hello-a3', 'T:hello-a4'],
    subB: ['T:hello-b1'],
    subAB: ['T:hello-a1', 'B:bin-a2', 'T:hello-b1', 'T:hello-a3', 'T:hello-a4'],
    subC: [],
    pubA: [],
    pubB: [],
    late: ['T:hello-a4'],
  };
  const got = { subA, subB, subAB, subC, pubA, pubB, late };
  let ok = true;
  for (const k of Object.keys(expect)) {
    const g = got[k].got;
    let e = expect[k];
    let pass = JSON.stringify(g) === JSON.stringify(e);
    // hello-b1 may legitimately interleave anywhere relative to pubA's first two
    if (!pass && k === 'subAB') pass = JSON.stringify([...g].sort()) === JSON.stringify([...e].sort());
    if (!pass) ok = false;
    console.log(`${pass ? 'ok  ' : 'FAIL'} ${k}: got ${JSON.stringify(g)}${pass ? '' : ' expected ' + JSON.stringify(e)}`);
  }
  for (const ws of Object.values(got)) ws.terminate();
  process.exit(ok ? 0 : 1);
})().catch((e) => { console.error('FAIL', e.message); process.exit(1); });
