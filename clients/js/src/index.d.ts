// Type declarations for herald-client (src/index.js).

export type HeraldState = 'connecting' | 'open' | 'reconnecting' | 'closed';
export type HeraldTransport = 'websocket' | 'sse';

export interface HeraldMessage {
  /** The group, or null for a broadcast to every subscriber. */
  group: string | null;
  /** The group's offset (+1 per message). */
  offset: number;
  /** The history epoch the offset belongs to. */
  epoch: string;
  /** Text messages as strings, binary messages as bytes. */
  data: string | Uint8Array;
}

export interface HeraldRecoveryFailed {
  group: string;
  /** epoch (server lost its history lineage), too_old (fell out of --history), unknown_offset. */
  reason: 'epoch' | 'too_old' | 'unknown_offset' | string;
  /** The epoch the client continues under. */
  epoch: string;
  /** The group's last offset on the server: the client continues from here. null when the
   *  client saw the epoch change itself (a message or notice under a new epoch) before the
   *  server said where this group stands. */
  offset: number | null;
}

export interface HeraldReconnect {
  attempt: number;
  delayMs: number;
}

export declare class HeraldError extends Error {
  /** WebSocket close code or HTTP status, when there is one. */
  code?: number;
  /** True when the client gave up (state is now 'closed'). */
  fatal: boolean;
  transport?: HeraldTransport;
}

export interface HeraldClientOptions {
  /** Groups to subscribe to (none: broadcasts to all only). */
  groups?: string[];
  /** 'auto' (default): WebSocket, falling back to SSE when it cannot connect. */
  transport?: 'auto' | HeraldTransport;
  /** A JWT, sent as ?token= (browsers cannot set headers on WebSocket or EventSource). */
  token?: string;
  /** Called before every connection attempt: return a fresh JWT. */
  getToken?: () => string | Promise<string>;
  /** Backoff: the first attempt's cap (500 ms); caps grow by `factor` (2) up to maxDelayMs (30 s). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  factor?: number;
  /** A connection open this long (10 s) resets the backoff. */
  stableAfterMs?: number;
  /** An attempt not open after this long (10 s) is abandoned and retried; the status probe of a
   *  refused attempt is abandoned after this long too. */
  connectTimeoutMs?: number;
  /** Implementations for platforms without the globals (Node: e.g. the `ws` package). */
  WebSocket?: any;
  EventSource?: any;
  fetch?: (url: string, init?: any) => Promise<{ status: number }>;
  /** For tests: timers and randomness. */
  setTimeout?: (fn: () => void, ms: number) => any;
  clearTimeout?: (handle: any) => void;
  random?: () => number;
}

export interface HeraldEvents {
  message: HeraldMessage;
  recovery_failed: HeraldRecoveryFailed;
  state: HeraldState;
  open: { transport: HeraldTransport };
  reconnect: HeraldReconnect;
  error: HeraldError | Error;
}

export declare class HeraldClient {
  constructor(url: string, options?: HeraldClientOptions);
  readonly state: HeraldState;
  /** The transport of the current (or last) connection. */
  readonly transport: HeraldTransport | null;
  readonly groups: string[];
  on<K extends keyof HeraldEvents>(event: K, fn: (arg: HeraldEvents[K]) => void): () => void;
  off<K extends keyof HeraldEvents>(event: K, fn: (arg: HeraldEvents[K]) => void): void;
  connect(): void;
  close(): void;
  /** The epoch and each group's position: its last delivered offset, or, while it has delivered
   *  nothing, the offset it joined after (a WebSocket joined notice, an SSE event id). */
  positions(): { epoch: string | null; offsets: Record<string, number> };
  /** The URL the next attempt over this transport would use (resume: false leaves since/epoch
   *  out, as the status probe does). */
  url(transport: HeraldTransport, opts?: { resume?: boolean }): string;
}

/** Full-jitter backoff: a random delay in [0, min(maxDelayMs, initialDelayMs * factor^n)). */
export declare function backoffDelay(
  n: number,
  opts: { initialDelayMs: number; maxDelayMs: number; factor: number },
  random?: () => number,
): number;

export declare const STATES: HeraldState[];
export default HeraldClient;
