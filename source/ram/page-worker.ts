/**
 * Source page worker: owns one page channel end to end. Listens on the port the main thread announces
 * and takes the destination's connection (page-port.ts drops everything else), then for each round
 * claims slices of the round's list, builds each batch in place from guest RAM (checksums recorded in
 * the shared table) and writes it, then the round's ROUND_END frame. The main thread never touches
 * page bytes.
 *
 * Bounded by the main thread: it fails the migration when no page channel makes progress for the
 * stall timeout (one channel may stall for seconds on a congested link — TCP backs off after losses —
 * while the others carry the round), and its `close` ends everything at once (socket destroyed,
 * pending writes dropped).
 */
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { asMigrationError, ErrorCode, SocketError } from '../../shared/errors.js';
import { PAGE_BATCH_HEADER, PAGE_DESCRIPTOR } from '../../shared/protocol/constants.js';
import { encodeRoundEnd } from '../../shared/protocol/page-batch.js';
import { loadNativeHash } from '../../shared/ram/native-hash.js';
import { PageBatchBuilder } from '../../shared/ram/page-batch-builder.js';
import {
  BATCH_PAGES,
  type PageWorkerCommand,
  type PageWorkerEvent,
  type PageWorkerShared,
  SRC,
} from '../../shared/ram/page-channel.js';
import { PagePort } from './page-port.js';
import { claimSlice } from './slice-claim.js';

interface SourceWorkerData extends PageWorkerShared {
  control: SharedArrayBuffer;
  list: SharedArrayBuffer;
  /** Where to listen (our address on the main connection). */
  host: string;
  /** The destination's address on the main connection: the only one a page channel may come from. */
  peerAddress: string;
}

const cfg = workerData as SourceWorkerData;
const ctl = new Int32Array(cfg.control);
const list = new Int32Array(cfg.list);
const ram = Buffer.from(cfg.ram);
const checksums = new BigUint64Array(cfg.checksums);
const post = (e: PageWorkerEvent) => parentPort!.postMessage(e);
/**
 * Batches in rotation: Node holds a written buffer until the kernel has taken it, so a slot is
 * reused only after its write callback. The ring is the backpressure: at most RING - 1 batches wait
 * in Node while the next one is built (waiting for 'drain' instead would stop building while the
 * kernel sends, and the worker would idle).
 */
const RING = 4;
const native = loadNativeHash(cfg.nativeHash);
const ring = Array.from({ length: RING }, () => ({
  builder: new PageBatchBuilder(BATCH_PAGES, cfg.pageSize, native),
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
let failed = false;

function fail(err: unknown): void {
  if (closing || failed) return;
  failed = true;
  const e = asMigrationError(err, ErrorCode.SOCKET);
  post({ type: 'error', code: e.code, message: `page channel ${cfg.index}: ${e.message}` });
  socket?.destroy();
}

const port = new PagePort({
  index: cfg.index,
  migrationId: Buffer.from(cfg.migrationId),
  security: cfg.security,
  peerAddress: cfg.peerAddress,
  onChannel: (s) => {
    socket = s;
    s.on('error', fail);
    s.on('close', () => fail(new SocketError(ErrorCode.PEER_CLOSED, 'closed by the destination')));
    server.close();
    post({ type: 'connected' });
  },
  onStranger: (remote, reason) => post({ type: 'stranger', remote, reason }),
});
const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (s) => void port.accept(s));
server.on('error', fail);
server.listen(0, cfg.host, () =>
  post({ type: 'listening', port: (server.address() as net.AddressInfo).port }),
);

/** Waits until the window allowance covers `kib` more KiB (max-bandwidth), then takes it. */
async function takeAllowance(kib: number): Promise<void> {
  for (;;) {
    if (closing || failed) throw new Error('page channel closed');
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
  const batch = Atomics.load(ctl, SRC.BATCH) || BATCH_PAGES;
  let pages = 0;
  let zero = 0;
  let bytes = 0;
  for (;;) {
    const start = claimSlice(ctl, cfg.index, round, count, batch);
    if (start < 0) break;
    const end = Math.min(count, start + batch);
    const r = ring[slot]!;
    slot = (slot + 1) % RING;
    await r.flushed;
    const chunks = r.builder.build(0, round, list, start, end, ram, checksums);
    if (corruptPage >= 0 && round === 1) corruptDescriptor(chunks[0]!, corruptPage);
    zero += r.builder.zeroPages;
    let length = 0;
    for (const c of chunks) length += c.length;
    bytes += length;
    await takeAllowance(Math.ceil(length / 1024));
    r.flushed = write(chunks);
    r.flushed.catch(() => {});
    pages += end - start;
  }
  const end = encodeRoundEnd(round);
  await write([end]);
  post({ type: 'round-sent', round, pages, zero, bytes: bytes + end.length });
}

parentPort!.on('message', (m: PageWorkerCommand) => {
  if (m.type === 'close') {
    closing = true;
    socket?.destroy();
    server.close();
    parentPort!.close();
    return;
  }
  if (m.type !== 'round') return;
  if (!socket) return fail(new Error('round started before the destination connected'));
  sendRound(m.round).catch(fail);
});
