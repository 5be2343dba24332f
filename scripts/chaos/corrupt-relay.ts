/**
 * A byte-corrupting (and optionally delaying) TCP relay, node:net only. Run inside the destination
 * namespace by the chaos suite:
 *
 *   tsx scripts/chaos/corrupt-relay.ts --listen HOST:PORT --target HOST:PORT
 *       [--flip-at OFFSET [--bit B]] [--delay-ms D]
 *
 * First stdout line: the bound HOST:PORT. Then one JSON line per event: {"event":"connection",
 * "index","kind"} (kind = hello byte 6: 1 main, 2 return path), {"event":"flipped","offset","before",
 * "after","t"} (t: monotonic ms, the clock of the engine's trace lines); on SIGTERM/SIGINT a {"event":"summary",...} line, then exit 0.
 *
 * --flip-at flips bit B of the byte at OFFSET of the FIRST main-channel connection's source →
 * destination stream (offset 0 = first hello byte; the hello is 56 bytes, the stream header 8).
 * Every other connection (the return path) and every destination → source byte pass untouched.
 * --delay-ms holds every chunk D ms in each direction (FIFO): the userspace fallback for added delay
 * when NFQUEUE is unavailable. It terminates TCP, so the two hops each have their own RTT.
 * A close or reset on one side is passed on to the other (FIN as FIN, error as RST).
 */
import net from 'node:net';
import { parseArgs } from 'node:util';

export interface RelayOptions {
  listen: { host: string; port: number };
  target: { host: string; port: number };
  flipAt?: number;
  bit?: number;
  delayMs?: number;
  onEvent?: (e: Record<string, unknown>) => void;
}

const HIGH_WATER = 8 * 1024 * 1024;
const now = () => Number(process.hrtime.bigint()) / 1e6;

/** Forwards `from` → `to` through `map`, optionally holding each chunk `delayMs`; keeps backpressure. */
function forward(from: net.Socket, to: net.Socket, delayMs: number, map: (b: Buffer) => Buffer): void {
  const queue: { due: number; buf: Buffer }[] = [];
  let queued = 0;
  let ended = false;
  let timer: NodeJS.Timeout | null = null;
  const maybeResume = () => {
    if (from.isPaused() && queued + to.writableLength < HIGH_WATER / 2) from.resume();
  };
  const flush = () => {
    timer = null;
    const t = now();
    while (queue.length && queue[0]!.due <= t) {
      const { buf } = queue.shift()!;
      queued -= buf.length;
      if (!to.destroyed) to.write(buf);
    }
    if (ended && !queue.length) {
      if (!to.destroyed) to.end();
      return;
    }
    maybeResume();
    if (queue.length) timer = setTimeout(flush, Math.max(0, queue[0]!.due - now()));
  };
  from.on('data', (chunk: Buffer) => {
    const buf = map(chunk);
    if (delayMs <= 0) {
      if (!to.write(buf)) from.pause();
      return;
    }
    queue.push({ due: now() + delayMs, buf });
    queued += buf.length;
    if (queued + to.writableLength > HIGH_WATER) from.pause();
    timer ??= setTimeout(flush, Math.max(0, queue[0]!.due - now()));
  });
  to.on('drain', () => (delayMs <= 0 ? from.resume() : maybeResume()));
  from.on('end', () => {
    ended = true;
    if (delayMs <= 0 || (!queue.length && !timer)) to.end();
  });
}

export async function startRelay(opts: RelayOptions): Promise<{ address: string; close(): void }> {
  const emit = opts.onEvent ?? (() => {});
  const sockets = new Set<net.Socket>();
  let index = 0;
  let corrupted = false;
  const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (client) => {
    const info = { index: index++, kind: -1, up: 0, down: 0 };
    const upstream = net.connect({ ...opts.target, noDelay: true });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    let target = false;
    const up = (chunk: Buffer): Buffer => {
      const start = info.up;
      info.up += chunk.length;
      if (info.kind < 0 && start <= 6 && start + chunk.length > 6) {
        info.kind = chunk[6 - start]!;
        emit({ event: 'connection', index: info.index, kind: info.kind });
        if (info.kind === 1 && !corrupted && opts.flipAt !== undefined) {
          corrupted = true;
          target = true;
        }
      }
      const at = opts.flipAt ?? -1;
      if (!target || at < start || at >= start + chunk.length) return chunk;
      target = false;
      const copy = Buffer.from(chunk); // never modify a buffer the stream may still own
      const before = copy[at - start]!;
      copy[at - start] = before ^ (1 << (opts.bit ?? 0));
      emit({ event: 'flipped', index: info.index, offset: at, before, after: copy[at - start], t: now() });
      return copy;
    };
    const down = (chunk: Buffer): Buffer => {
      info.down += chunk.length;
      return chunk;
    };
    const reset = (peer: net.Socket) => () => {
      if (!peer.destroyed) peer.resetAndDestroy();
    };
    client.on('error', reset(upstream));
    upstream.on('error', reset(client));
    upstream.once('connect', () => {
      forward(client, upstream, opts.delayMs ?? 0, up);
      forward(upstream, client, opts.delayMs ?? 0, down);
      client.resume();
    });
    client.on('close', () => emit({ event: 'closed', ...info }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listen.port, opts.listen.host, () => resolve());
  });
  const a = server.address() as net.AddressInfo;
  return {
    address: `${a.address}:${a.port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

function hostPort(text: string | undefined, what: string): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(text ?? '');
  if (!m) throw new Error(`${what}: '${text ?? ''}' is not HOST:PORT`);
  return { host: m[1]!, port: Number(m[2]) };
}

async function cli(): Promise<void> {
  const { values: v } = parseArgs({
    options: {
      listen: { type: 'string' },
      target: { type: 'string' },
      'flip-at': { type: 'string' },
      bit: { type: 'string' },
      'delay-ms': { type: 'string' },
    },
  });
  const events: Record<string, unknown>[] = [];
  const relay = await startRelay({
    listen: hostPort(v.listen, '--listen'),
    target: hostPort(v.target, '--target'),
    flipAt: v['flip-at'] === undefined ? undefined : Number(v['flip-at']),
    bit: v.bit === undefined ? 0 : Number(v.bit),
    delayMs: v['delay-ms'] === undefined ? 0 : Number(v['delay-ms']),
    onEvent: (e) => {
      events.push(e);
      process.stdout.write(`${JSON.stringify(e)}\n`);
    },
  });
  process.stdout.write(`${relay.address}\n`);
  const stop = () => {
    process.stdout.write(`${JSON.stringify({ event: 'summary', events: events.length })}\n`);
    relay.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop() ?? '\0')) {
  cli().catch((err) => {
    process.stderr.write(`corrupt-relay: ${(err as Error).message}\n`);
    process.exit(2);
  });
}
