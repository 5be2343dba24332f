/**
 * Source page worker: owns one page channel end to end. Listens on a port the main thread announces,
 * accepts the destination worker's connection (checking its hello), then for each round claims
 * 256-page slices of the round's list, checksums each page in guest RAM and writes the batch
 * header with views of the pages themselves (no copy: page-batch-in-place.ts says why a page the
 * guest writes meanwhile is safe). The main thread never touches page bytes.
 */
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { asMigrationError, ErrorCode } from '../shared/errors.js';
import {
  ChannelKind,
  HELLO_LENGTH,
  PAGE_BATCH_HEADER,
  PAGE_DESCRIPTOR,
} from '../shared/protocol/constants.js';
import { decodeHello } from '../shared/protocol/hello.js';
import { InPlacePageBatch } from '../shared/protocol/page-batch-in-place.js';
import { loadNativeHash } from '../shared/ram/native-hash.js';
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
import { claimSlice } from './slice-claim.js';

interface SourceWorkerData extends PageWorkerShared {
  control: SharedArrayBuffer;
  list: SharedArrayBuffer;
  host: string;
}

const cfg = workerData as SourceWorkerData;
const ctl = new Int32Array(cfg.control);
const list = new Int32Array(cfg.list);
const ram = Buffer.from(cfg.ram);
const checksums = new BigUint64Array(cfg.checksums);
const native = loadNativeHash(cfg.nativeHash);
const post = (e: PageWorkerEvent) => parentPort!.postMessage(e);
/**
 * Batches in rotation: Node holds a written buffer until the kernel has taken it, so a slot is
 * reused only after its write callback. The ring is the backpressure: at most RING - 1 batches wait
 * in Node while the next one is built (waiting for 'drain' instead would stop building while the
 * kernel sends, and the worker would idle).
 */
const RING = 4;
const ring = Array.from({ length: RING }, () => ({
  batch: new InPlacePageBatch(BATCH_PAGES, cfg.pageSize, native),
  flushed: Promise.resolve(),
}));
let slot = 0;
/**
 * Fault injection for tests: SWITCHOVER_TEST_CORRUPT_PAGE=N sends page N's round-1 copy with a
 * wrong checksum, as a corrupting path or a guest write during the send would; the destination
 * must drop that copy and either get a good one later or fail at EOF.
 */
const corruptPage = Number(process.env.SWITCHOVER_TEST_CORRUPT_PAGE ?? -1);
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

function corruptDescriptor(head: Buffer, page: number): void {
  for (let d = PAGE_BATCH_HEADER; d < head.length; d += PAGE_DESCRIPTOR) {
    if (head.readUInt32BE(d) === page) head[d + 15]! ^= 0x01;
  }
}

async function sendRound(round: number): Promise<void> {
  const count = Atomics.load(ctl, SRC.COUNT);
  let pages = 0;
  let zero = 0;
  let bytes = 0;
  for (;;) {
    const start = claimSlice(ctl, cfg.index, round, count);
    if (start < 0) break;
    const end = Math.min(count, start + BATCH_PAGES);
    const r = ring[slot]!;
    slot = (slot + 1) % RING;
    await r.flushed;
    const chunks = r.batch.build(0, round, list, start, end, ram, checksums);
    if (corruptPage >= 0 && round === 1) corruptDescriptor(chunks[0]!, corruptPage);
    zero += r.batch.zeroPages;
    let length = 0;
    for (const c of chunks) length += c.length;
    bytes += length;
    await takeAllowance(Math.ceil(length / 1024));
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
