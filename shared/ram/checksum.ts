/**
 * Pure page and image checksums, shared by page workers, both processes and tests.
 *
 * - pageChecksum: xxh64 of the page bytes seeded with the page index, so a page written to the
 *   wrong place fails verification even if its bytes are intact.
 * - Zero pages are not hashed: they travel as a flag and their checksum is ZERO_CHECKSUM.
 * - imageDigest: xxh64 over the per-page checksum table (one u64 per page, little-endian bytes),
 *   as 16 hex digits; both sides compute it over their own tables and compare.
 */
import { endianness } from 'node:os';
import { xxh64 } from '@node-rs/xxhash';

export const ZERO_CHECKSUM = 0n;

export function pageChecksum(page: Uint8Array, index: number): bigint {
  return xxh64(page, BigInt(index));
}

let zeroPage = new Uint8Array(4096);

/** True if every byte is zero: a few sampled bytes first (most live pages fail there), then memcmp. */
export function isZeroPage(page: Uint8Array): boolean {
  const n = page.length;
  if (n === 0) return true;
  const step = n >>> 3 || 1;
  for (let i = 0; i < n; i += step) if (page[i] !== 0) return false;
  if (page[n - 1] !== 0) return false;
  if (zeroPage.length < n) zeroPage = new Uint8Array(n);
  return Buffer.compare(page, n === zeroPage.length ? zeroPage : zeroPage.subarray(0, n)) === 0;
}

const LITTLE_ENDIAN_HOST = endianness() === 'LE';

/** xxh64 (seed 0) over the table's bytes in little-endian order, as 16 lowercase hex digits. */
export function imageDigest(table: BigUint64Array): string {
  let bytes = new Uint8Array(table.buffer, table.byteOffset, table.byteLength);
  if (!LITTLE_ENDIAN_HOST) {
    const copy = Buffer.from(bytes);
    copy.swap64();
    bytes = copy;
  }
  return xxh64(bytes).toString(16).padStart(16, '0');
}
