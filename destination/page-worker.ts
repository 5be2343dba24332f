/**
 * Destination page worker: connects to one source page channel and reads batches straight into guest
 * RAM (`onread` with a caller-supplied buffer: the header and descriptors into small buffers, page
 * data into the guest's own pages), then verifies every page in place against its checksum. The
 * guest is not running yet, so bytes landing before verification are harmless: a mismatch fails the
 * migration and the guest never starts. A round-end frame is reported once everything before it on
 * this channel is placed and verified.
 */
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { asMigrationError, ErrorCode } from '../shared/errors.js';
import {
  ChannelKind,
  MAX_BATCH_PAGES,
  PAGE_BATCH_HEADER,
  PAGE_DESCRIPTOR,
  PageFlag,
  RamRecord,
} from '../shared/protocol/constants.js';
import { encodeHello } from '../shared/protocol/hello.js';
import { pageChecksum } from '../shared/ram/checksum.js';
import { loadNativeHash } from '../shared/ram/native-hash.js';
import {
  PageState,
  type PageWorkerEvent,
  type PageWorkerShared,
  ROUND_END_KIND,
} from '../shared/ram/page-channel.js';
import { channelTag } from '../shared/tls/binding.js';
import { secureServer } from '../shared/tls/secure.js';

interface DestWorkerData extends PageWorkerShared {
  received: SharedArrayBuffer;
  verified: SharedArrayBuffer;
}

const cfg = workerData as DestWorkerData;
const ps = cfg.pageSize;
const ram = new Uint8Array(cfg.ram);
const checksums = new BigUint64Array(cfg.checksums);
const received = new Uint8Array(cfg.received);
const verified = new Int32Array(cfg.verified);
const post = (e: PageWorkerEvent) => parentPort!.postMessage(e);

const header = Buffer.alloc(PAGE_BATCH_HEADER);
const desc = Buffer.alloc(MAX_BATCH_PAGES * PAGE_DESCRIPTOR);
const descView = new DataView(desc.buffer, desc.byteOffset, desc.byteLength);
const native = ps % 8 === 0 ? loadNativeHash(cfg.nativeHash) : null; // the addon reads 8-byte words
/** Without the addon: non-zero pages of the batch being verified (index, descriptor offset). */
const verifyList = new Int32Array(MAX_BATCH_PAGES);
const verifyAt = new Int32Array(MAX_BATCH_PAGES);
let state: 'header' | 'desc' | 'data' = 'header';
let filled = 0;
let count = 0;
let round = 0;
/** Runs of consecutive non-zero pages, in descriptor order: [firstPage, pages]. */
let runs: [number, number][] = [];
let run = 0;
let pagesThisRound = 0;
let tornThisRound = 0;
let failed = false;
let closing = false;
let current: net.Socket | null = null;
/**
 * Fault injection for tests: SWITCHOVER_TEST_CHANNEL_DELAY=INDEX:MS makes page channel INDEX pause
 * MS after every batch, so its data lands late, the way a congested path would deliver it; `*:MS`
 * slows every channel, after each round's end marker too (the main channel then runs ahead of all
 * of them, even when a round has one batch per channel).
 */
const [slowSpec, slowDelay] = (process.env.SWITCHOVER_TEST_CHANNEL_DELAY ?? '-1:0').split(':');
const slowAll = slowSpec === '*';
const slowIndex = slowAll ? cfg.index : Number(slowSpec);
const slowMs = Number(slowDelay);

class FrameError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly page?: number,
  ) {
    super(message);
  }
}

function target(): Uint8Array {
  if (state === 'header') return header.subarray(filled);
  if (state === 'desc') return desc.subarray(filled, count * PAGE_DESCRIPTOR);
  const [first, pages] = runs[run]!;
  return ram.subarray(first * ps + filled, (first + pages) * ps);
}

function onHeader(): void {
  const kind = header[0];
  round = header.readUInt32BE(4);
  count = header.readUInt32BE(8);
  const dataLen = header.readUInt32BE(12);
  if (kind === ROUND_END_KIND) {
    post({ type: 'round-done', round, pages: pagesThisRound, torn: tornThisRound });
    pagesThisRound = 0;
    tornThisRound = 0;
    next('header');
    // `*` mode: the next round's first batch waits too, so even a one-batch last round lands late
    if (slowAll) pauseChannel();
    return;
  }
  if (kind !== RamRecord.PAGES || count === 0 || count > MAX_BATCH_PAGES || dataLen % ps !== 0) {
    throw new FrameError(
      ErrorCode.MALFORMED,
      `bad page batch header (kind ${kind}, ${count} pages, ${dataLen} data bytes)`,
    );
  }
  next('desc');
}

function onDescriptors(): void {
  runs = [];
  let dataPages = 0;
  for (let i = 0; i < count; i++) {
    const at = i * PAGE_DESCRIPTOR;
    const page = descView.getUint32(at);
    if (page >= cfg.pageCount)
      throw new FrameError(ErrorCode.MALFORMED, `page index ${page} beyond ${cfg.pageCount} pages`, page);
    if ((desc[at + 4]! & PageFlag.ZERO) !== 0) continue;
    dataPages++;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === page) last[1]++;
    else runs.push([page, 1]);
  }
  if (dataPages * ps !== header.readUInt32BE(12))
    throw new FrameError(ErrorCode.MALFORMED, 'page batch data length disagrees with its descriptors');
  run = 0;
  if (runs.length === 0) finishBatch();
  else next('data');
}

/** Every page of the batch is in RAM (or is a zero page): verify in place, record the checksums. */
function finishBatch(): void {
  const torn = native
    ? native.verifyPages(ram, ps, desc, count, checksums, received, PageState.RECEIVED, PageState.TORN)
    : verifyInJs();
  if (torn < 0) throw zeroPageWithChecksum(-torn - 1);
  Atomics.add(verified, cfg.index, count - torn);
  pagesThisRound += count;
  tornThisRound += torn;
  next('header');
  if (cfg.index === slowIndex) pauseChannel();
}

/** Without the addon: the same checks and table updates as verifyPages, page by page. */
function verifyInJs(): number {
  // zero pages first (all checked before anything changes), then the others hashed
  let m = 0;
  for (let i = 0; i < count; i++) {
    const at = i * PAGE_DESCRIPTOR;
    const page = descView.getUint32(at);
    if ((desc[at + 4]! & PageFlag.ZERO) === 0) {
      verifyList[m] = page;
      verifyAt[m++] = at;
    } else if (descView.getBigUint64(at + 8) !== 0n) return -page - 1;
  }
  for (let i = 0; i < count; i++) {
    const at = i * PAGE_DESCRIPTOR;
    if ((desc[at + 4]! & PageFlag.ZERO) === 0) continue;
    const page = descView.getUint32(at);
    ram.fill(0, page * ps, (page + 1) * ps);
    checksums[page] = 0n;
    received[page] = PageState.RECEIVED;
  }
  let torn = 0;
  for (let k = 0; k < m; k++) {
    const page = verifyList[k]!;
    const sum = descView.getBigUint64(verifyAt[k]! + 8);
    if (pageChecksum(ram.subarray(page * ps, (page + 1) * ps), page) !== sum) {
      received[page] = PageState.TORN;
      torn++;
      continue;
    }
    checksums[page] = sum;
    received[page] = PageState.RECEIVED;
  }
  return torn;
}

function zeroPageWithChecksum(page: number): FrameError {
  return new FrameError(ErrorCode.CHECKSUM, `zero page ${page} carries a checksum`, page);
}

function pauseChannel(): void {
  if (slowMs <= 0 || !current) return;
  const s = current;
  s.pause();
  setTimeout(() => s.resume(), slowMs);
}

function next(s: typeof state): void {
  state = s;
  filled = 0;
}

function onBytes(n: number): void {
  filled += n;
  if (state === 'header') {
    if (filled === PAGE_BATCH_HEADER) onHeader();
  } else if (state === 'desc') {
    if (filled === count * PAGE_DESCRIPTOR) onDescriptors();
  } else {
    const [, pages] = runs[run]!;
    if (filled === pages * ps) {
      run++;
      filled = 0;
      if (run === runs.length) finishBatch();
    }
  }
}

function fail(err: unknown): void {
  if (failed || closing) return;
  failed = true;
  const e = err instanceof FrameError ? err : asMigrationError(err, ErrorCode.SOCKET);
  post({
    type: 'error',
    code: e.code,
    message: `page channel ${cfg.index}: ${e.message}`,
    page: (e as FrameError).page,
  });
}

/** Plaintext: read straight into guest RAM (`onread`); the hello's tag binds the channel to K. */
function connectPlain(host: string, port: number): void {
  const socket = net.connect({
    host,
    port,
    noDelay: true,
    onread: {
      buffer: target,
      callback: (n: number) => {
        try {
          onBytes(n);
        } catch (err) {
          fail(err);
          socket.destroy();
          return false;
        }
        return true;
      },
    },
  });
  socket.on('connect', () => {
    sendHello(socket);
    post({ type: 'connected' });
  });
  own(socket);
}

/**
 * TLS: this side is the TLS server on the connection it opened. A TLS socket cannot read into a
 * caller's buffer, so decrypted chunks are copied into the same targets (one copy more).
 */
function connectTls(host: string, port: number): void {
  const raw = net.connect({ host, port, noDelay: true });
  raw.on('error', fail);
  raw.once('connect', async () => {
    try {
      const s = await secureServer(raw, cfg.security.tls!, 5000);
      own(s);
      s.on('data', (chunk: Buffer) => {
        try {
          for (let at = 0; at < chunk.length; ) {
            const t = target();
            const n = Math.min(t.length, chunk.length - at);
            t.set(chunk.subarray(at, at + n));
            at += n;
            onBytes(n);
          }
        } catch (err) {
          fail(err);
          s.destroy();
        }
      });
      sendHello(s);
      post({ type: 'connected' });
    } catch (err) {
      fail(err);
      raw.destroy();
    }
  });
}

function sendHello(s: net.Socket): void {
  const fields = { kind: ChannelKind.PAGE, index: cfg.index, migrationId: Buffer.from(cfg.migrationId) };
  s.write(encodeHello({ ...fields, authTag: channelTag(cfg.security.key, fields, s) }));
}

function own(socket: net.Socket): void {
  current = socket;
  socket.setKeepAlive(true, 1000);
  socket.on('error', fail);
  socket.on('close', () => fail(new Error('closed by the source')));
  parentPort!.on('message', (m: { type: string }) => {
    if (m.type === 'close') {
      closing = true;
      socket.destroy();
      parentPort!.close();
    }
  });
}

parentPort!.once('message', (m: { type: 'connect' | 'close'; host: string; port: number }) => {
  if (m.type === 'connect') (cfg.security.tls ? connectTls : connectPlain)(m.host, m.port);
  else parentPort!.close();
});
