/**
 * The baseline every throughput figure is compared with: a plain Node socket pipe between two
 * processes on the same path (loopback), 1 MiB writes. `measureRawTcp(bytes)` starts a receiver
 * process and a sender process and returns bytes/s as the receiver saw it.
 *
 * Run as a child: `raw-tcp.ts recv` prints its port, then "<bytes> <ms>" when the sender closes;
 * `raw-tcp.ts send PORT BYTES` writes BYTES in 1 MiB writes.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);

function child(args: string[]): { lines: AsyncIterableIterator<string>; done: Promise<number> } {
  const c = spawn(process.execPath, ['--import', 'tsx', SELF, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const done = new Promise<number>((resolve) => c.on('exit', (code) => resolve(code ?? 1)));
  return { lines: createInterface({ input: c.stdout! })[Symbol.asyncIterator](), done };
}

export async function measureRawTcp(bytes: number): Promise<number> {
  const recv = child(['recv']);
  const port = (await recv.lines.next()).value as string;
  const send = child(['send', port, String(bytes)]);
  const result = (await recv.lines.next()).value as string;
  await Promise.all([recv.done, send.done]);
  const [got, ms] = result.split(' ').map(Number) as [number, number];
  return got / (ms / 1000);
}

async function recvMain(): Promise<void> {
  const server = net.createServer((s) => {
    let n = 0;
    let t0 = 0;
    s.on('data', (c: Buffer) => {
      if (t0 === 0) t0 = performance.now();
      n += c.length;
    });
    s.on('end', () => {
      process.stdout.write(`${n} ${performance.now() - t0}\n`);
      server.close();
    });
  });
  server.listen(0, '127.0.0.1', () =>
    process.stdout.write(`${(server.address() as net.AddressInfo).port}\n`),
  );
}

async function sendMain(port: number, bytes: number): Promise<void> {
  const buf = Buffer.alloc(1024 * 1024, 0xa5);
  const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise((r) => s.once('connect', r));
  for (let sent = 0; sent < bytes; sent += buf.length) {
    if (!s.write(buf)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
}

if (process.argv[1] === SELF) {
  const [mode, a, b] = process.argv.slice(2);
  if (mode === 'recv') await recvMain();
  else if (mode === 'send') await sendMain(Number(a), Number(b));
}
