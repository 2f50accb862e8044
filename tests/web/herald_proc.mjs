// Starts the real herald binary for the deflate tests (tests/web/deflate_*.test.mjs) and stops it
// by PID. Plain Node (no playwright), so it also runs on Node 18.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const HERALD_BIN = path.resolve(process.env.HERALD_BIN || path.join(HERE, '..', '..', 'build', 'herald'));

export function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

export async function startHerald(args = []) {
  if (!existsSync(HERALD_BIN)) throw new Error(`herald binary not found at ${HERALD_BIN}`);
  const proc = spawn(HERALD_BIN, ['--listen', '127.0.0.1:0', '--workers', '2', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const h = { proc, log: '', port: 0 };
  h.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    proc.on('error', reject);
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      h.log += chunk;
      const m = /herald: listening on (\S+):(\d+)/.exec(h.log);
      if (m) resolve(Number(m[2]));
    });
    h.exited.then(({ code, signal }) => reject(new Error(`herald exited early (${code}, ${signal}):\n${h.log}`)));
  });
  h.port = await withTimeout(listening, 10_000, 'herald to print its listening line');
  h.base = `http://127.0.0.1:${h.port}`;
  h.stats = async () => {
    const r = await fetch(`${h.base}/stats`, { signal: AbortSignal.timeout(5_000) });
    if (r.status !== 200) throw new Error(`/stats answered ${r.status}`);
    return r.json();
  };
  h.publish = async (group, body, type) => {
    const r = await fetch(`${h.base}/publish?group=${encodeURIComponent(group)}`, {
      method: 'POST', headers: { 'Content-Type': type }, body, signal: AbortSignal.timeout(10_000),
    });
    const text = await r.text();
    if (r.status !== 200) throw new Error(`publish answered ${r.status}: ${text}`);
  };
  // SIGTERM, then the exit status: 0 and no sanitizer report, or the test fails.
  h.stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    const r = await withTimeout(h.exited, 15_000, 'herald to exit').catch(() => null);
    if (!r) {
      proc.kill('SIGKILL');
      throw new Error('herald did not exit within 15 s of SIGTERM');
    }
    if (r.code !== 0) throw new Error(`herald exited with ${r.code} (${r.signal}):\n${h.log}`);
    if (/AddressSanitizer|LeakSanitizer|runtime error:|ThreadSanitizer/.test(h.log))
      throw new Error(`sanitizer report:\n${h.log}`);
  };
  return h;
}
