/**
 * The one page-batch builder (layout in shared/protocol/page-batch.ts), used by the main channel and
 * by page channels alike. It does not copy page data: build() returns the header and descriptors,
 * then views of the guest's own pages, and the kernel copies them straight from guest RAM into the
 * socket.
 *
 * The contract without a copy: a page is hashed from live RAM, so the guest may write it between the
 * hash and the moment the kernel copies it. Such a torn copy fails verification on the destination,
 * which drops it (the page stays "not received") instead of failing. That is safe because a torn read
 * means the guest wrote the page after this round's dirty-log harvest, and the guest marks every
 * write dirty before it acknowledges a stop: the page is sent again in a later round, at the latest
 * in the final one, where the guest is stopped and nothing can tear. A page whose newest copy failed
 * its checksum at EOF is a real error (MIG_ERR_CHECKSUM).
 *
 * Two backends with the same bytes: the native addon (one call per batch: zero check, XXH64,
 * descriptor, runs) and JavaScript page by page (@node-rs/xxhash), used where no C compiler exists.
 */
import { ErrorCode, MigrationError } from '../errors.js';
import { MAX_BATCH_PAGES, PAGE_BATCH_HEADER, PAGE_DESCRIPTOR } from '../protocol/constants.js';
import { writeBatchHeader, writeDescriptor } from '../protocol/page-batch.js';
import { isZeroPage, pageChecksum, ZERO_CHECKSUM } from './checksum.js';
import type { NativeHash } from './native-hash.js';

export type ChecksumBackend = 'native' | 'js';

export class PageBatchBuilder {
  readonly #maxPages: number;
  readonly #pageSize: number;
  readonly #head: Buffer;
  readonly #headView: DataView;
  #count = 0;
  #normal = 0;
  readonly #native: NativeHash | null;
  /** describePages' output: [first, end) page pairs of the batch's runs of non-zero pages. */
  readonly #runs: Int32Array;

  constructor(maxPages = 256, pageSize = 4096, native: NativeHash | null = null) {
    if (!Number.isInteger(maxPages) || maxPages < 1 || maxPages > MAX_BATCH_PAGES) {
      throw new MigrationError(ErrorCode.PARAMETER, `batch size must be 1..${MAX_BATCH_PAGES} pages`);
    }
    this.#maxPages = maxPages;
    this.#pageSize = pageSize;
    this.#head = Buffer.alloc(PAGE_BATCH_HEADER + maxPages * PAGE_DESCRIPTOR);
    this.#headView = new DataView(this.#head.buffer, this.#head.byteOffset, this.#head.byteLength);
    this.#native = pageSize % 8 === 0 ? native : null; // the addon reads pages in 8-byte words
    this.#runs = new Int32Array(2 * maxPages);
  }

  get backend(): ChecksumBackend {
    return this.#native ? 'native' : 'js';
  }

  get count(): number {
    return this.#count;
  }

  get zeroPages(): number {
    return this.#count - this.#normal;
  }

  get normalPages(): number {
    return this.#normal;
  }

  /**
   * Describes list[from..to) (page indexes into `ram`, a Buffer over guest RAM) and records each
   * page's checksum in sent[index]. Returns [header+descriptors, ...page runs]: views valid until
   * the next build().
   */
  build(
    block: number,
    round: number,
    list: Int32Array,
    from: number,
    to: number,
    ram: Buffer,
    sent: BigUint64Array,
  ): Buffer[] {
    const ps = this.#pageSize;
    if (to - from > this.#maxPages || to <= from)
      throw new MigrationError(
        ErrorCode.INTERNAL,
        `a page batch holds 1..${this.#maxPages} pages, not ${to - from}`,
      );
    const runs: Buffer[] = [];
    this.#count = to - from;
    this.#normal = 0;
    if (this.#native) {
      let n: number;
      try {
        n = this.#native.describePages(ram, ps, list, from, to, this.#head, sent, this.#runs);
      } catch (err) {
        throw new MigrationError(ErrorCode.INTERNAL, `page hashing: ${(err as Error).message}`);
      }
      const r = this.#runs;
      for (let k = 0; k < 2 * n; k += 2) {
        this.#normal += r[k + 1]! - r[k]!;
        runs.push(ram.subarray(r[k]! * ps, r[k + 1]! * ps));
      }
    } else {
      this.#describeInJs(list, from, to, ram, sent, runs);
    }
    writeBatchHeader(this.#headView, { block, round, count: this.#count, dataLen: this.#normal * ps });
    return [this.#head.subarray(0, PAGE_BATCH_HEADER + this.#count * PAGE_DESCRIPTOR), ...runs];
  }

  /** Without the addon: the same descriptors, checksums and runs, page by page. */
  #describeInJs(
    list: Int32Array,
    from: number,
    to: number,
    ram: Buffer,
    sent: BigUint64Array,
    runs: Buffer[],
  ): void {
    const ps = this.#pageSize;
    const pageCount = Math.floor(ram.length / ps);
    let runStart = -1;
    let runEnd = -1;
    for (let i = from; i < to; i++) {
      const index = list[i]!;
      if (!(index >= 0 && index < pageCount))
        throw new MigrationError(ErrorCode.INTERNAL, `page index ${index} is outside 0..${pageCount - 1}`, {
          page: index,
        });
      const page = ram.subarray(index * ps, (index + 1) * ps);
      const zero = isZeroPage(page);
      const checksum = zero ? ZERO_CHECKSUM : pageChecksum(page, index);
      writeDescriptor(
        this.#headView,
        PAGE_BATCH_HEADER + (i - from) * PAGE_DESCRIPTOR,
        index,
        zero,
        checksum,
      );
      sent[index] = checksum;
      if (zero) continue;
      this.#normal++;
      if (index === runEnd) {
        runEnd++;
      } else {
        if (runStart >= 0) runs.push(ram.subarray(runStart * ps, runEnd * ps));
        runStart = index;
        runEnd = index + 1;
      }
    }
    if (runStart >= 0) runs.push(ram.subarray(runStart * ps, runEnd * ps));
  }
}
