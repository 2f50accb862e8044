'use strict';
// Node.js + ws peer: the same two endpoints as herald.
//   GET /ws?groups=a,b      subscriber
//   GET /publish?group=G    WebSocket publisher; each message goes to G's
//                           subscribers with the same opcode, never back.
// Idiomatic: a Map of group -> Set of sockets, ws.send per subscriber.
// usage: node server.js [port] [host]
// PERMESSAGE_DEFLATE=1: accept permessage-deflate (ws's defaults: context takeover, a zlib
// compressor per connection, so each message is compressed once per subscriber), with the
// threshold lowered from ws's 1024 to herald's default --compression-min-size (128) so both
// servers compress the same messages.
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 8080);
const host = process.argv[3] || '127.0.0.1';

const groups = new Map(); // name -> Set<WebSocket>

function join(name, ws) {
  let set = groups.get(name);
  if (!set) groups.set(name, (set = new Set()));
  set.add(ws);
}

function leave(name, ws) {
  const set = groups.get(name);
  if (!set) return;
  set.delete(ws);
  if (set.size === 0) groups.delete(name);
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  res.writeHead(404);
  res.end();
});

const deflate = process.env.PERMESSAGE_DEFLATE === '1';
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: deflate ? { threshold: 128 } : false,
});

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/ws' && url.pathname !== '/publish') {
    socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (url.pathname === '/ws') {
      const names = [...new Set((url.searchParams.get('groups') || '')
        .split(',').filter((s) => s.length > 0))];
      for (const g of names) join(g, ws);
      ws.on('close', () => { for (const g of names) leave(g, ws); });
      ws.on('error', () => {});
    } else {
      const g = url.searchParams.get('group') || '';
      ws.on('message', (data, isBinary) => {
        const set = groups.get(g);
        if (!set) return;
        for (const sub of set) {
          if (sub.readyState === 1) sub.send(data, { binary: isBinary });
        }
      });
      ws.on('error', () => {});
    }
  });
});

server.listen(port, host, () => {
  console.error(`node-ws: listening on ${host}:${server.address().port}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
