/**
 * Source page worker: owns one page channel end to end. Listens on a port the main thread announces,
 * accepts the destination worker's connection (checking its hello), then for each round claims
 * 256-page slices of the round's list, copies each page into a batch (then checksums the copy),
 * and writes the batch. The main thread never touches page bytes.
 */
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { asMigrationError, ErrorCode } from '../shared/errors.js';
import { ChannelKind, HELLO_LENGTH } from '../shared/protocol/constants.js';
import { decodeHello } from '../shared/protocol/hello.js';
import { PageBatchWriter } from '../shared/protocol/ram-records.js';
import {
  BATCH_PAGES,
  type PageWorkerEvent,
  type PageWorkerShared,
  ROUND_END_KIND,
  SRC,
} from '../shared/ram/page-channel.js';
import { readExact } from '../shared/socket-io.js';
import { ChannelBinding } from '../shared/tls/binding.js';
import { secureClient } from '../shared/tls/secure.js';

interface SourceWorkerData extends PageWorkerShared {
  control: SharedArrayBuffer;
  list: SharedArrayBuffer;
  host: string;
}

const cfg = workerData as SourceWorkerData;
const ctl = new Int32Array(cfg.control);
const list = new Int32Array(cfg.list);
const ram = new Uint8Array(cfg.ram);
const checksums = new BigUint64Array(cfg.checksums);
const post = (e: PageWorkerEvent) => parentPort!.postMessage(e);
/**
 * Batches in rotation: Node holds a written buffer until the kernel has taken it, so a slot is
 * reused only after its write callback. The ring is the backpressure: at most RING - 1 batches wait
 * in Node while the next one is built (waiting for 'drain' instead would stop building while the
 * kernel sends, and the worker would idle).
 */
const RING = 4;
const ring = Array.from({ length: RING }, () => ({
  writer: new PageBatchWriter(BATCH_PAGES, cfg.pageSize),
  flushed: Promise.resolve(),
}));
let slot = 0;
let socket: net.Socket | null = null;
let closing = false;

function fail(err: unknown): void {
  if (closing) return;
  const e = asMigrationError(err, ErrorCode.SOCKET);
  post({ type: 'error', code: e.code, message: `page channel ${cfg.index}: ${e.message}` });
}

const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (s) => void accept(s));

/** TLS first (the source is the client), then the hello: right migration, index and tag. */
async function accept(raw: net.Socket): Promise<void> {
  const { tls, key, host } = cfg.security;
  let s: net.Socket = raw;
  try {
    if (tls)
      s = await secureClient({ socket: raw }, tls, {
        host: host ?? cfg.host,
        timeoutMs: 5000,
        what: `page channel ${cfg.index}`,
      });
    const hello = decodeHello(await readExact(s, HELLO_LENGTH, 5000, `page channel ${cfg.index} hello`), {
      kind: ChannelKind.PAGE,
      migrationId: Buffer.from(cfg.migrationId),
    });
    if (socket || hello.index !== cfg.index)
      throw new Error(`unexpected page channel connection (index ${hello.index})`);
    if (!ChannelBinding.verify(key, s, hello)) throw new Error('page channel hello carries a wrong tag');
    socket = s;
    s.on('error', fail);
    s.on('close', () => fail(new Error('closed by the destination')));
    server.close();
    post({ type: 'connected' });
  } catch (err) {
    s.destroy();
    raw.destroy();
    fail(err);
  }
}
server.listen(0, cfg.host, () =>
  post({ type: 'listening', port: (server.address() as net.AddressInfo).port }),
);

/** Waits until the window allowance covers `kib` more KiB (max-bandwidth), then takes it. */
async function takeAllowance(kib: number): Promise<void> {
  for (;;) {
    if (Atomics.load(ctl, SRC.UNLIMITED) === 1) break;
    const allow = Atomics.load(ctl, SRC.ALLOW_KIB);
    if (Atomics.load(ctl, SRC.SENT_KIB) + kib <= allow) break;
    await Atomics.waitAsync(ctl, SRC.ALLOW_KIB, allow, 20).value;
  }
  Atomics.add(ctl, SRC.SENT_KIB, kib);
}

function write(chunks: Buffer[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = socket!;
    s.cork();
    for (let i = 0; i < chunks.length; i++) {
      const last = i === chunks.length - 1;
      s.write(chunks[i]!, last ? (err) => (err ? reject(err) : resolve()) : undefined);
    }
    s.uncork();
  });
}

async function sendRound(round: number): Promise<void> {
  const count = Atomics.load(ctl, SRC.COUNT);
  let pages = 0;
  let zero = 0;
  let bytes = 0;
  for (;;) {
    const start = Atomics.add(ctl, SRC.CURSOR, BATCH_PAGES);
    if (start >= count) break;
    const end = Math.min(count, start + BATCH_PAGES);
    const r = ring[slot]!;
    slot = (slot + 1) % RING;
    await r.flushed;
    const w = r.writer;
    w.reset(0, round);
    w.addPages(list, start, end, ram, checksums);
    const chunks = w.finish();
    zero += w.zeroPages;
    bytes += chunks[0]!.length + chunks[1]!.length;
    await takeAllowance(Math.ceil((chunks[0]!.length + chunks[1]!.length) / 1024));
    r.flushed = write(chunks);
    r.flushed.catch(() => {});
    pages += end - start;
  }
  const marker = Buffer.alloc(16);
  marker.writeUInt8(ROUND_END_KIND, 0);
  marker.writeUInt32BE(round, 4);
  await write([marker]);
  post({ type: 'round-sent', round, pages, zero, bytes: bytes + marker.length });
}

parentPort!.on('message', (m: { type: 'round'; round: number } | { type: 'close' }) => {
  if (m.type === 'close') {
    closing = true;
    socket?.end();
    server.close();
    parentPort!.close();
    return;
  }
  if (!socket) return fail(new Error('round started before the destination connected'));
  sendRound(m.round).catch(fail);
});
