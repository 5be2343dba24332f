/**
 * Page batches: the one binary format that carries guest pages, both on the main channel (one batch
 * per RAM PART/END section payload) and on page channels (frames back to back, each round closed by
 * a ROUND_END frame). Every frame starts with the same 16-byte header:
 *
 * ```
 *  PAGES     | 0x02 | u8 flags=0 | be16 block | be32 round | be32 count (1..4096) | be32 data_len |
 *            count × descriptor (16):
 *            | be32 page index | u8 flags (ZERO=0x01) | 3 × 0x00 | be64 checksum |
 *            data: the bytes of each non-zero page, in descriptor order (data_len = their number × page size)
 *  ROUND_END | 0x05 | 0x00 | be16 0 | be32 round | be32 0 | be32 0 |                 (page channels only)
 * ```
 * A ZERO page has no data and checksum 0; any other checksum is pageChecksum(page, index)
 * (shared/ram/checksum.ts), checked by the verifier (shared/ram/page-batch-verifier.ts), not here.
 * On a page channel, the batches of round R come before its ROUND_END(R), and rounds only go up: a
 * ROUND_END tells the receiver that every batch of that round on this channel has arrived.
 *
 * This module checks layout only (kinds, flags, reserved bytes, counts, lengths, page indexes, round
 * order). PageChannelDecoder is incremental and never buffers page data itself: it tells its caller
 * where the next bytes belong (`target()`), which for page data is the page's own place in guest RAM,
 * so a page worker reads straight into the guest (net.Socket `onread`).
 */
import { ChecksumError, ErrorCode, MigrationError, ProtocolError } from '../errors.js';
import { MAX_BATCH_PAGES, PAGE_BATCH_HEADER, PAGE_DESCRIPTOR, PageFlag, RamRecord } from './constants.js';

export interface BatchHeader {
  block: number;
  round: number;
  /** Pages described (1..MAX_BATCH_PAGES). */
  count: number;
  /** Bytes of page data after the descriptors (non-zero pages × page size). */
  dataLen: number;
}

export type FrameHeader = ({ kind: 'pages' } & BatchHeader) | { kind: 'round-end'; round: number };

/** Writes a PAGES header at the start of `head` (16 bytes). */
export function writeBatchHeader(head: DataView, h: BatchHeader): void {
  head.setUint8(0, RamRecord.PAGES);
  head.setUint8(1, 0);
  head.setUint16(2, h.block);
  head.setUint32(4, h.round);
  head.setUint32(8, h.count);
  head.setUint32(12, h.dataLen);
}

/** One descriptor at byte `at`: | be32 page index | u8 flags (ZERO) | 3 × 0 | be64 checksum |. */
export function writeDescriptor(
  dv: DataView,
  at: number,
  index: number,
  zero: boolean,
  checksum: bigint,
): void {
  dv.setUint32(at, index);
  dv.setUint32(at + 4, zero ? PageFlag.ZERO << 24 : 0);
  dv.setBigUint64(at + 8, checksum);
}

/** ROUND_END(round): the 16-byte frame a page channel sends after its last batch of a round. */
export function encodeRoundEnd(round: number): Buffer {
  if (!Number.isInteger(round) || round < 1 || round > 0xffff_ffff)
    throw new ProtocolError(ErrorCode.MALFORMED, `round end: round ${round} is outside 1..4294967295`);
  const b = Buffer.alloc(PAGE_BATCH_HEADER);
  b[0] = RamRecord.ROUND_END;
  b.writeUInt32BE(round, 4);
  return b;
}

/**
 * Decodes and checks a frame header (16 bytes). `pageSize` bounds data_len; `allowRoundEnd` is
 * false on the main channel, where only PAGES belongs inside a RAM section.
 */
export function decodeFrameHeader(h: Uint8Array, pageSize: number, allowRoundEnd = true): FrameHeader {
  if (h.length < PAGE_BATCH_HEADER)
    throw new ProtocolError(
      ErrorCode.TRUNCATED,
      `page batch header is ${h.length} of ${PAGE_BATCH_HEADER} bytes`,
      {
        section: 'ram',
        offset: h.length,
      },
    );
  const dv = new DataView(h.buffer, h.byteOffset, PAGE_BATCH_HEADER);
  const kind = h[0]!;
  const round = dv.getUint32(4);
  const count = dv.getUint32(8);
  const dataLen = dv.getUint32(12);
  if (kind === RamRecord.ROUND_END && allowRoundEnd) {
    if (h[1] !== 0 || dv.getUint16(2) !== 0 || count !== 0 || dataLen !== 0 || round === 0)
      throw bad(`round end frame has non-zero reserved fields or round 0`, 'round-end');
    return { kind: 'round-end', round };
  }
  if (kind !== RamRecord.PAGES) throw bad(`unknown page frame kind 0x${kind.toString(16)}`, 'kind');
  if (h[1] !== 0) throw bad(`page batch flags 0x${h[1]!.toString(16)} are not 0`, 'flags');
  if (count > MAX_BATCH_PAGES)
    throw new ProtocolError(ErrorCode.OVERSIZE, `page batch of ${count} pages exceeds ${MAX_BATCH_PAGES}`, {
      section: 'ram',
      offset: 8,
      field: 'count',
    });
  if (count === 0) throw bad('page batch of 0 pages', 'count');
  if (dataLen % pageSize !== 0 || dataLen / pageSize > count)
    throw bad(
      `data_len ${dataLen} is not a whole number of at most ${count} pages of ${pageSize} bytes`,
      'data_len',
    );
  return { kind: 'pages', block: dv.getUint16(2), round, count, dataLen };
}

/**
 * Checks `count` descriptors and lists the runs of consecutive non-zero pages (where their data
 * goes) as [first, end) pairs in `runs` (room for 2 per page). Returns the number of runs; the
 * non-zero pages must add up to the header's data_len (checked here: `dataLen`).
 */
export function scanDescriptors(
  desc: Uint8Array,
  count: number,
  pageSize: number,
  pageCount: number,
  dataLen: number,
  runs: Int32Array,
): number {
  const dv = new DataView(desc.buffer, desc.byteOffset, count * PAGE_DESCRIPTOR);
  let n = 0;
  let dataPages = 0;
  let runEnd = -1;
  for (let i = 0; i < count; i++) {
    const at = i * PAGE_DESCRIPTOR;
    const page = dv.getUint32(at);
    const flags = desc[at + 4]!;
    if ((flags & ~PageFlag.ZERO) !== 0 || desc[at + 5] !== 0 || desc[at + 6] !== 0 || desc[at + 7] !== 0)
      throw new ProtocolError(ErrorCode.MALFORMED, `page ${page}: bad descriptor flags or reserved bytes`, {
        section: 'ram',
        page,
        offset: at + 4,
      });
    if (page >= pageCount)
      throw new ProtocolError(
        ErrorCode.MALFORMED,
        `page index ${page} beyond the guest's ${pageCount} pages`,
        {
          section: 'ram',
          page,
          offset: at,
        },
      );
    if (flags & PageFlag.ZERO) {
      if (dv.getBigUint64(at + 8) !== 0n)
        throw new ChecksumError(ErrorCode.CHECKSUM, `zero page ${page} carries a checksum`, {
          section: 'ram',
          page,
          offset: at + 8,
        });
      continue;
    }
    dataPages++;
    if (page === runEnd) {
      runEnd++;
      runs[2 * n - 1] = runEnd;
    } else {
      runs[2 * n] = page;
      runs[2 * n + 1] = runEnd = page + 1;
      n++;
    }
  }
  if (dataPages * pageSize !== dataLen)
    throw bad(`data_len ${dataLen} is not ${dataPages} non-zero pages × ${pageSize}`, 'data_len');
  return n;
}

export type PageChannelEvent =
  /** A batch whose pages are all in guest RAM now (zero pages are not: the verifier clears them). */
  { kind: 'batch'; round: number; count: number; descriptors: Buffer } | { kind: 'round-end'; round: number };

/**
 * Incremental decoder of one page channel. The caller reads into `target()` and reports how many
 * bytes it wrote with `advance(n)`; `feed(chunk, onEvent)` does both for bytes that arrived elsewhere
 * (TLS, tests). An event must be handled before the decoder goes on: a batch's descriptors (and its
 * pages in RAM) are only what they say until the next frame is decoded.
 *
 * ```
 *  header ──PAGES──▶ descriptors ──▶ data (run by run, into RAM) ──▶ batch event ──▶ header
 *     └──ROUND_END──▶ round-end event ──▶ header
 * ```
 */
export class PageChannelDecoder {
  readonly #ram: Uint8Array;
  readonly #pageSize: number;
  readonly #pageCount: number;
  readonly #head = Buffer.alloc(PAGE_BATCH_HEADER);
  readonly #desc = Buffer.alloc(MAX_BATCH_PAGES * PAGE_DESCRIPTOR);
  readonly #runs = new Int32Array(2 * MAX_BATCH_PAGES);
  #state: 'header' | 'desc' | 'data' = 'header';
  #filled = 0;
  #header: BatchHeader | null = null;
  #runCount = 0;
  #run = 0;
  /** Round of the batches since the last round end (0: none yet), and the last round ended. */
  #openRound = 0;
  #endedRound = 0;
  /** Bytes of the stream consumed, for error offsets. */
  #offset = 0;

  constructor(ram: Uint8Array, pageSize: number) {
    this.#ram = ram;
    this.#pageSize = pageSize;
    this.#pageCount = Math.floor(ram.length / pageSize);
  }

  /** True between frames (a clean place for the channel to end). */
  get atFrameBoundary(): boolean {
    return this.#state === 'header' && this.#filled === 0;
  }

  /** Where the next bytes go; never empty. */
  target(): Uint8Array {
    if (this.#state === 'header') return this.#head.subarray(this.#filled);
    if (this.#state === 'desc')
      return this.#desc.subarray(this.#filled, this.#header!.count * PAGE_DESCRIPTOR);
    const r = this.#runs;
    const ps = this.#pageSize;
    return this.#ram.subarray(r[2 * this.#run]! * ps + this.#filled, r[2 * this.#run + 1]! * ps);
  }

  /** `n` bytes were written into target(); returns the event a completed frame makes, if any. */
  advance(n: number): PageChannelEvent | null {
    this.#filled += n;
    this.#offset += n;
    if (this.#state === 'header') return this.#filled === PAGE_BATCH_HEADER ? this.#onHeader() : null;
    if (this.#state === 'desc')
      return this.#filled === this.#header!.count * PAGE_DESCRIPTOR ? this.#onDescriptors() : null;
    const r = this.#runs;
    if (this.#filled < (r[2 * this.#run + 1]! - r[2 * this.#run]!) * this.#pageSize) return null;
    this.#filled = 0;
    return ++this.#run === this.#runCount ? this.#batchDone() : null;
  }

  /** Copies `chunk` through target()/advance(), handing each completed frame's event to `onEvent` at once. */
  feed(chunk: Uint8Array, onEvent: (e: PageChannelEvent) => void): void {
    for (let at = 0; at < chunk.length; ) {
      const t = this.target();
      const n = Math.min(t.length, chunk.length - at);
      t.set(chunk.subarray(at, at + n));
      at += n;
      const e = this.advance(n);
      if (e) onEvent(e);
    }
  }

  #onHeader(): PageChannelEvent | null {
    const start = this.#offset - PAGE_BATCH_HEADER;
    const h = withOffset(() => decodeFrameHeader(this.#head, this.#pageSize), start);
    if (h.kind === 'round-end') {
      if (h.round <= this.#endedRound || (this.#openRound !== 0 && h.round !== this.#openRound))
        throw bad(
          `round end ${h.round} after round ${this.#openRound || this.#endedRound}${at(start)}`,
          'round',
        );
      this.#endedRound = h.round;
      this.#openRound = 0;
      this.#next('header');
      return { kind: 'round-end', round: h.round };
    }
    if (h.round <= this.#endedRound || (this.#openRound !== 0 && h.round !== this.#openRound))
      throw bad(
        `batch of round ${h.round} after round ${this.#openRound || this.#endedRound}${at(start)}`,
        'round',
      );
    this.#openRound = h.round;
    this.#header = h;
    this.#next('desc');
    return null;
  }

  #onDescriptors(): PageChannelEvent | null {
    const h = this.#header!;
    const start = this.#offset - h.count * PAGE_DESCRIPTOR;
    this.#runCount = withOffset(
      () => scanDescriptors(this.#desc, h.count, this.#pageSize, this.#pageCount, h.dataLen, this.#runs),
      start,
    );
    this.#run = 0;
    if (this.#runCount === 0) return this.#batchDone();
    this.#next('data');
    return null;
  }

  #batchDone(): PageChannelEvent {
    const h = this.#header!;
    this.#next('header');
    return {
      kind: 'batch',
      round: h.round,
      count: h.count,
      descriptors: this.#desc.subarray(0, h.count * PAGE_DESCRIPTOR),
    };
  }

  #next(state: 'header' | 'desc' | 'data'): void {
    this.#state = state;
    this.#filled = 0;
  }
}

function bad(message: string, field: string): ProtocolError {
  return new ProtocolError(ErrorCode.MALFORMED, message, { section: 'ram', field });
}

function at(offset: number): string {
  return ` (channel byte ${offset})`;
}

/** Runs `f`; an error it throws gets its offset moved from the frame to the channel. */
function withOffset<T>(f: () => T, frameStart: number): T {
  try {
    return f();
  } catch (err) {
    if (!(err instanceof MigrationError)) throw err;
    const Err = err.constructor as typeof MigrationError;
    const { section, page, field } = err;
    throw new Err(err.code, err.message, { section, page, field, offset: frameStart + (err.offset ?? 0) });
  }
}
