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
