/**
 * A tiny TCP relay for fault tests: listens on 127.0.0.1:0, opens one upstream connection to the
 * destination per accepted connection and forwards both directions. On the FIRST accepted
 * connection (the source opens the main channel before the return path) it can flip one bit at a
 * chosen byte offset of the source → destination stream; every other connection, and every
 * destination → source byte, passes untouched.
 *
 * It can also cut the first connection's source → destination direction down to a trickle once a
 * number of bytes has passed (`trickleAfter`, `trickleBytesPerSec`): a link that all but dies.
 *
 * Offsets count from the first byte the source sends on that connection (the 56-byte hello is at 0,
 * the stream header at 56). Backpressure is kept: pipe() pauses the reader when the writer is full.
 */
import net from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';

export interface RelayOptions {
  target: { host: string; port: number };
  /** Byte offset in the first connection's source → destination stream to corrupt; none if unset. */
  flipAt?: number;
  /** Bit (0..7) to flip at that offset (default 0). */
  bit?: number;
  /** After this many bytes of the first connection's source → destination stream, forward only... */
  trickleAfter?: number;
  /** ...this many bytes per second (each chunk is held until the rate allows it). */
  trickleBytesPerSec?: number;
}

export interface ConnectionInfo {
  index: number;
  /** Hello kind byte (offset 6) as seen on the wire: 1 main, 2 return path; null if never seen. */
  kind: number | null;
  /** Bytes forwarded source → destination. */
  upBytes: number;
  /** Bytes forwarded destination → source. */
  downBytes: number;
}

export interface Relay {
  /** HOST:PORT to give the source as --connect. */
  address: string;
  readonly connections: ConnectionInfo[];
  /** Set once the chosen bit was flipped: the byte's value before and after. */
  readonly flipped: { offset: number; before: number; after: number } | null;
  close(): Promise<void>;
}

export async function startCorruptingRelay(opts: RelayOptions): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  const connections: ConnectionInfo[] = [];
  let flipped: Relay['flipped'] = null;
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {}); // the pair's teardown below handles it
  };

  const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (client) => {
    const info: ConnectionInfo = { index: connections.length, kind: null, upBytes: 0, downBytes: 0 };
    connections.push(info);
    track(client);
    const upstream = net.connect({ host: opts.target.host, port: opts.target.port, noDelay: true });
    track(upstream);
    const corrupt = info.index === 0 && opts.flipAt !== undefined;
    const trickle =
      info.index === 0 && opts.trickleAfter !== undefined && opts.trickleBytesPerSec
        ? { after: opts.trickleAfter, rate: opts.trickleBytesPerSec, freeAt: 0 }
        : null;
    const up = new Transform({
      transform(chunk: Buffer, _enc, cb: TransformCallback) {
        if (trickle && info.upBytes >= trickle.after) {
          // the transform's callback comes late: pipe() stops reading meanwhile (backpressure)
          const now = Date.now();
          const at = Math.max(now, trickle.freeAt);
          trickle.freeAt = at + (chunk.length * 1000) / trickle.rate;
          info.upBytes += chunk.length;
          setTimeout(() => cb(null, chunk), at - now).unref();
          return;
        }
        const start = info.upBytes;
        info.upBytes += chunk.length;
        if (info.kind === null && start <= 6 && start + chunk.length > 6) info.kind = chunk[6 - start]!;
        const at = opts.flipAt ?? -1;
        if (corrupt && flipped === null && at >= start && at < start + chunk.length) {
          const copy = Buffer.from(chunk); // never modify a buffer the sender may still own
          const before = copy[at - start]!;
          copy[at - start] = before ^ (1 << (opts.bit ?? 0));
          flipped = { offset: at, before, after: copy[at - start]! };
          cb(null, copy);
          return;
        }
        cb(null, chunk);
      },
    });
    up.on('error', () => {});
    // a close or reset on either side ends the other: the peers see what they would see directly
    const teardown = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', () => {
      if (!upstream.destroyed) upstream.end();
      setTimeout(teardown, 2000).unref();
    });
    upstream.on('close', () => {
      if (!client.destroyed) client.end();
      setTimeout(teardown, 2000).unref();
    });
    client.on('error', teardown);
    upstream.on('error', teardown);
    upstream.once('connect', () => {
      client.pipe(up).pipe(upstream);
      upstream.on('data', (d: Buffer) => {
        info.downBytes += d.length;
      });
      upstream.pipe(client);
      client.resume();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    connections,
    get flipped() {
      return flipped;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
