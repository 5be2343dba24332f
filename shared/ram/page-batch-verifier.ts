/**
 * The one page-batch verifier (destination), used by the main channel and by page channels alike.
 * A batch's pages are already in guest RAM (page workers read them there; the main channel copies
 * them there) and the guest is not running, so unverified bytes in RAM are harmless: a page whose
 * bytes do not hash to its descriptor's checksum is marked TORN (a newer copy must come: see
 * page-batch-builder.ts), never RECEIVED, and the guest never starts while any page is TORN.
 *
 * Per page: a zero page (ZERO flag) is cleared in RAM, checksum 0, RECEIVED; any other page is
 * hashed; a match records its checksum (for the image digest) and RECEIVED; a mismatch only TORN.
 * A zero page that carries a checksum is refused before anything changes (ChecksumError).
 *
 * Two backends, same results: the native addon (one call per batch) and JavaScript page by page.
 */
import { ChecksumError, ErrorCode } from '../errors.js';
import { PAGE_DESCRIPTOR, PageFlag } from '../protocol/constants.js';
import { pageChecksum } from './checksum.js';
import type { NativeHash } from './native-hash.js';
import type { ChecksumBackend } from './page-batch-builder.js';

/** Destination `received` table, one byte per page. */
export const PageState = {
  /** no copy yet */
  MISSING: 0,
  /** the newest copy verified and is in RAM */
  RECEIVED: 1,
  /** the newest copy failed its checksum (torn by a guest write, or corrupt); a newer one must come */
  TORN: 2,
} as const;

export interface VerifierTables {
  ram: Uint8Array;
  pageSize: number;
  /** Checksum of the newest verified copy of each page. */
  checksums: BigUint64Array;
  /** PageState per page. */
  received: Uint8Array;
}

export class PageBatchVerifier {
  readonly #t: VerifierTables;
  readonly #native: NativeHash | null;

  constructor(tables: VerifierTables, native: NativeHash | null) {
    this.#t = tables;
    this.#native = tables.pageSize % 8 === 0 ? native : null; // the addon reads 8-byte words
  }

  get backend(): ChecksumBackend {
    return this.#native ? 'native' : 'js';
  }

  /**
   * Verifies the `count` pages `desc` describes (descriptors already checked by scanDescriptors);
   * returns how many were torn.
   */
  verify(desc: Uint8Array, count: number): number {
    const t = this.#t;
    const torn = this.#native
      ? this.#native.verifyPages(
          t.ram,
          t.pageSize,
          desc,
          count,
          t.checksums,
          t.received,
          PageState.RECEIVED,
          PageState.TORN,
        )
      : this.#verifyInJs(desc, count);
    if (torn < 0)
      throw new ChecksumError(ErrorCode.CHECKSUM, `zero page ${-torn - 1} carries a checksum`, {
        section: 'ram',
        page: -torn - 1,
      });
    return torn;
  }

  #verifyInJs(desc: Uint8Array, count: number): number {
    const { ram, pageSize: ps, checksums, received } = this.#t;
    const dv = new DataView(desc.buffer, desc.byteOffset, count * PAGE_DESCRIPTOR);
    const zero = (at: number) => (desc[at + 4]! & PageFlag.ZERO) !== 0;
    for (let at = 0; at < count * PAGE_DESCRIPTOR; at += PAGE_DESCRIPTOR)
      if (zero(at) && dv.getBigUint64(at + 8) !== 0n) return -dv.getUint32(at) - 1;
    let torn = 0;
    for (let at = 0; at < count * PAGE_DESCRIPTOR; at += PAGE_DESCRIPTOR) {
      const page = dv.getUint32(at);
      if (zero(at)) {
        ram.fill(0, page * ps, (page + 1) * ps);
        checksums[page] = 0n;
        received[page] = PageState.RECEIVED;
        continue;
      }
      const sum = dv.getBigUint64(at + 8);
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
}
