// Fake transports and timers for the client's unit tests: each fake records what the client did
// and lets a test play the server's part step by step.

export function fakeTimers() {
  let now = 0;
  let seq = 0;
  const pending = new Map(); // id -> { at, fn, ms }
  return {
    setTimeout(fn, ms) {
      const id = ++seq;
      pending.set(id, { at: now + ms, fn, ms });
      return id;
    },
    clearTimeout(id) {
      pending.delete(id);
    },
    /** Delays of the timers waiting now. */
    delays() {
      return [...pending.values()].map((t) => t.ms);
    },
    count() {
      return pending.size;
    },
    /** Moves time forward, running what falls due in order. */
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let next = null;
        for (const [id, t] of pending) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
        if (!next) break;
        pending.delete(next[0]);
        now = next[1].at;
        next[1].fn();
      }
      now = end;
    },
  };
}

export function fakeTransports() {
  const made = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.kind = 'websocket';
      this.closed = false;
      made.push(this);
    }
    close() { this.closed = true; }
    open() { this.onopen && this.onopen({}); }
    send(obj) { this.onmessage && this.onmessage({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) }); }
    serverClose(code, reason = '') { this.onclose && this.onclose({ code, reason }); }
  }
  class FakeES {
    constructor(url) {
      this.url = url;
      this.kind = 'sse';
      this.closed = false;
      this.listeners = {};
      made.push(this);
    }
    addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
    close() { this.closed = true; }
    open() { this.onopen && this.onopen({}); }
    /** An event; lastEventId is what the browser reports: the id of this event or an earlier one. */
    send(obj, lastEventId = '') { this.onmessage && this.onmessage({ data: JSON.stringify(obj), lastEventId }); }
    event(type, obj, lastEventId = '') {
      for (const fn of this.listeners[type] || []) fn({ data: JSON.stringify(obj), lastEventId });
    }
    fail() { this.onerror && this.onerror({}); }
  }
  return { made, FakeWS, FakeES, last: () => made[made.length - 1] };
}

/** Waits for queued promise callbacks (getToken, fetch probes) to run. */
export async function settle() {
  for (let i = 0; i < 10; i++) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}

export function env(msg, group, offset, epoch = 'E1', extra = {}) {
  return { group, offset, epoch, data: msg, ...extra };
}
