/**
 * Builds one RAM page batch (layout in ram-records.ts) into buffers allocated once per writer:
 *
 * ```
 *  head: | batch header (16) | descriptor 0 (16) | descriptor 1 | ...      ← written by add()/finish()
 *  data: | page | page | ...                                               ← non-zero pages only
 * ```
 * add() copies the page into the next data slot first, then zero-detects and checksums the copy:
 * the guest may be writing the live page, and the checksum must describe the bytes that are sent.
 * A zero page's slot is reused by the next page. finish() returns views into both buffers, valid
 * until the next reset(): keep the writer until the socket has taken the bytes (or use two).
 *
 * addPages() is the page workers' bulk path: it copies each run of consecutive pages from guest RAM
 * with one memcpy (a per-page copy from a SharedArrayBuffer costs ~1.5x more), hashes through views
 * made once per slot, and writes descriptors through a DataView: about half the per-page cost of add().
 */
import { ErrorCode, MigrationError } from '../errors.js';
import { isZeroPage, pageChecksum, ZERO_CHECKSUM } from '../ram/checksum.js';
import { MAX_BATCH_PAGES, PAGE_BATCH_HEADER, PAGE_DESCRIPTOR, PageFlag, RamRecord } from './constants.js';

/** Builds one batch. add() COPIES the page first, then zero-detects and checksums the copy. */
export class PageBatchWriter {
  readonly #maxPages: number;
  readonly #pageSize: number;
  readonly #head: Buffer;
  readonly #data: Buffer;
  readonly #checksums: BigUint64Array;
  readonly #headView: DataView;
  /** One view per data slot, made once: hashing a page needs a view of exactly its bytes. */
  readonly #slots: Buffer[];
  #blockId = 0;
  #round = 0;
  #count = 0;
  #normal = 0;

  constructor(maxPages = 256, pageSize = 4096) {
    if (!Number.isInteger(maxPages) || maxPages < 1 || maxPages > MAX_BATCH_PAGES) {
      throw new MigrationError(
        ErrorCode.PARAMETER,
        `batch size must be 1..${MAX_BATCH_PAGES} pages, got ${maxPages}`,
      );
    }
    checkPageSize(pageSize);
    this.#maxPages = maxPages;
    this.#pageSize = pageSize;
    this.#head = Buffer.alloc(PAGE_BATCH_HEADER + maxPages * PAGE_DESCRIPTOR);
    this.#data = Buffer.allocUnsafe(maxPages * pageSize);
    this.#checksums = new BigUint64Array(maxPages);
    this.#headView = new DataView(this.#head.buffer, this.#head.byteOffset, this.#head.byteLength);
    this.#slots = Array.from({ length: maxPages }, (_, i) =>
      this.#data.subarray(i * pageSize, (i + 1) * pageSize),
    );
  }

  reset(blockId: number, round: number): void {
    checkUint(blockId, 0xffff, 'block id');
    checkUint(round, 0xffff_ffff, 'round');
    this.#blockId = blockId;
    this.#round = round;
    this.#count = 0;
    this.#normal = 0;
  }

  add(index: number, page: Uint8Array): void {
    checkUint(index, 0xffff_ffff, 'page index');
    if (this.#count >= this.#maxPages) {
      throw internal(`page batch is full (${this.#maxPages} pages)`, index);
    }
    if (page.length !== this.#pageSize) {
      throw internal(`page ${index} is ${page.length} bytes, batch pages are ${this.#pageSize}`, index);
    }
    const at = this.#normal * this.#pageSize;
    const copy = this.#data.subarray(at, at + this.#pageSize);
    copy.set(page);
    const zero = isZeroPage(copy);
    const checksum = zero ? ZERO_CHECKSUM : pageChecksum(copy, index);
    const d = PAGE_BATCH_HEADER + this.#count * PAGE_DESCRIPTOR;
    this.#head.writeUInt32BE(index, d);
    this.#head.writeUInt32BE(zero ? PageFlag.ZERO << 24 : 0, d + 4);
    this.#head.writeBigUInt64BE(checksum, d + 8);
    this.#checksums[this.#count] = checksum;
    this.#count++;
    if (!zero) this.#normal++;
  }

  /**
   * Adds list[from..to) (page indexes into `ram`, which holds whole pages) and records each page's
   * checksum in sent[index]. Same bytes on the wire as add() for each page in turn.
   */
  addPages(list: Int32Array, from: number, to: number, ram: Uint8Array, sent: BigUint64Array): void {
    const ps = this.#pageSize;
    const pageCount = Math.floor(ram.length / ps);
    if (to - from > this.#maxPages - this.#count) {
      throw internal(`page batch has room for ${this.#maxPages - this.#count} pages, not ${to - from}`);
    }
    const dv = this.#headView;
    for (let i = from; i < to; ) {
      // a run of consecutive page indexes: one copy for all of it
      const first = list[i]!;
      let n = 1;
      while (i + n < to && list[i + n] === first + n) n++;
      if (!(first >= 0 && first + n <= pageCount)) {
        throw internal(`page index ${first} is outside 0..${pageCount - 1}`, first);
      }
      const base = this.#normal;
      this.#data.set(ram.subarray(first * ps, (first + n) * ps), base * ps);
      for (let k = 0; k < n; k++) {
        const index = first + k;
        const slot = this.#slots[this.#normal]!;
        if (this.#normal !== base + k) slot.set(this.#slots[base + k]!); // close the gap a zero page left
        const zero = describePage(dv, PAGE_BATCH_HEADER + this.#count * PAGE_DESCRIPTOR, index, slot, sent);
        this.#checksums[this.#count] = sent[index]!;
        this.#count++;
        if (!zero) this.#normal++;
      }
      i += n;
    }
  }

  get count(): number {
    return this.#count;
  }
  get full(): boolean {
    return this.#count >= this.#maxPages;
  }
  get zeroPages(): number {
    return this.#count - this.#normal;
  }
  get normalPages(): number {
    return this.#normal;
  }

  /** Checksum of the i-th page added (0 for zero pages), for the source's sent-checksum table. */
  checksumAt(i: number): bigint {
    if (i < 0 || i >= this.#count) throw internal(`no page ${i} in a batch of ${this.#count}`);
    return this.#checksums[i]!;
  }

  /** Page index of the i-th page added. */
  indexAt(i: number): number {
    return this.#head.readUInt32BE(PAGE_BATCH_HEADER + i * PAGE_DESCRIPTOR);
  }

  /** [header+descriptors, data]: views into this writer, valid until the next reset(). */
  finish(): Buffer[] {
    const h = this.#head;
    h[0] = RamRecord.PAGES;
    h[1] = 0;
    h.writeUInt16BE(this.#blockId, 2);
    h.writeUInt32BE(this.#round, 4);
    h.writeUInt32BE(this.#count, 8);
    h.writeUInt32BE(this.#normal * this.#pageSize, 12);
    return [
      h.subarray(0, PAGE_BATCH_HEADER + this.#count * PAGE_DESCRIPTOR),
      this.#data.subarray(0, this.#normal * this.#pageSize),
    ];
  }
}

/**
 * Describes one page of a batch: its descriptor (index, ZERO flag, checksum) at byte `at` of `dv`,
 * its checksum in sent[index]. Returns whether it is a zero page (sent without data). Shared by
 * both batch builders, so the descriptor layout is written in one place.
 */
export function describePage(
  dv: DataView,
  at: number,
  index: number,
  page: Uint8Array,
  sent: BigUint64Array,
): boolean {
  const zero = isZeroPage(page);
  const checksum = zero ? ZERO_CHECKSUM : pageChecksum(page, index);
  writeDescriptor(dv, at, index, zero, checksum);
  sent[index] = checksum;
  return zero;
}

/** One descriptor: | be32 page index | u8 flags (ZERO) | 3 x 0 | be64 checksum | (ram-records.ts). */
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

export function checkPageSize(pageSize: number): void {
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1 << 20) {
    throw new MigrationError(ErrorCode.PARAMETER, `page size must be 1..1048576 bytes, got ${pageSize}`);
  }
}

function checkUint(v: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw internal(`${what} ${v} is outside 0..${max}`);
}

function internal(message: string, page?: number): MigrationError {
  return new MigrationError(ErrorCode.INTERNAL, message, { page });
}
