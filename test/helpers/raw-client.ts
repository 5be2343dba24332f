/**
 * Raw TCP client for fault tests: sends hand-built bytes to a destination and collects whatever it
 * writes back until it closes the connection (or a deadline passes). Bytes are spelled out here with
 * literals and write*BE, independent of the engine's encoders.
 *
 * Hello (56 bytes): be32 magic 0x53574f56 "SWOV" | be16 version 2 | u8 kind (1 main, 2 return path)
 * | u8 index 0 | 16-byte migration id | 32 zero bytes (auth tag).
 * Main stream after the hello: be32 0x53575354 "SWST" | be32 2 | records...
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';

export const KIND_MAIN = 1;
export const KIND_RETURN_PATH = 2;

export function helloBytes(
  opts: { kind?: number; index?: number; migrationId?: Buffer; magic?: number; version?: number } = {},
): Buffer {
  const b = Buffer.alloc(56);
  b.writeUInt32BE(opts.magic ?? 0x53574f56, 0);
  b.writeUInt16BE(opts.version ?? 2, 4);
  b.writeUInt8(opts.kind ?? KIND_MAIN, 6);
  b.writeUInt8(opts.index ?? 0, 7);
  (opts.migrationId ?? randomBytes(16)).copy(b, 8, 0, 16);
  return b;
}

export function streamHeaderBytes(): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(0x53575354, 0);
  b.writeUInt32BE(2, 4);
  return b;
}

/**
 * The start of a CONFIGURATION record (type 0x07, be32 length) that promises `declared` body bytes
 * but carries only `present` of them: a stream cut in the middle of a record.
 */
export function truncatedConfigurationBytes(declared = 200, present = 10): Buffer {
  const b = Buffer.alloc(5 + present, 0x80);
  b.writeUInt8(0x07, 0);
  b.writeUInt32BE(declared, 1);
  return b;
}

/** Deterministic non-protocol bytes (never starting with "SWOV"). */
export function garbageBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  let x = 0x12345678;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  b.write('GET / HTTP/1.1\r\n', 0, 'latin1'); // something a stray client might really send
  return b;
}

export interface RawResult {
  /** Everything the destination wrote back. */
  received: Buffer;
  /** 'peer' if the destination closed (or reset) the connection, 'timeout' if we gave up. */
  closedBy: 'peer' | 'timeout';
  /** A socket error (ECONNRESET, ...) seen on the way, if any. */
  error?: string;
}

/**
 * Connects to HOST:PORT, writes each chunk in order (pausing `gapMs` between them), then half-closes
 * (`end`, default) or keeps the connection open, and reads until the peer closes or `timeoutMs`.
 */
export function sendRaw(
  address: string,
  chunks: Buffer[],
  opts: { endAfter?: boolean; gapMs?: number; timeoutMs?: number } = {},
): Promise<RawResult> {
  const m = /^(.*):(\d+)$/.exec(address);
  if (!m) throw new Error(`not HOST:PORT: ${address}`);
  const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
  const port = Number(m[2]);
  return new Promise((resolve) => {
    const received: Buffer[] = [];
    let error: string | undefined;
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => finish('timeout'), opts.timeoutMs ?? 10_000);
    let done = false;
    function finish(closedBy: 'peer' | 'timeout') {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ received: Buffer.concat(received), closedBy, error });
    }
    socket.on('data', (d: Buffer) => received.push(d));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    socket.on('close', () => finish('peer'));
    socket.once('connect', async () => {
      for (const [i, c] of chunks.entries()) {
        if (i > 0 && opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
        if (socket.destroyed) return;
        socket.write(c);
      }
      if (opts.endAfter ?? true) socket.end();
    });
  });
}
