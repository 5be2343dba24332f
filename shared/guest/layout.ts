/**
 * Guest RAM layout. Everything the guest needs to continue after migration lives in its own RAM, so
 * it moves with the pages:
 *
 *   page 0            control page: magic, seed, heartbeat (tick + monotonic ms), PRNG and sweep state,
 *                     resume bookkeeping (see HB_* offsets)
 *   pages 1..T        version table: one u32 per page, bumped on every write to that page
 *   pages T+1..N-1    data pages; the workload writes here, within --dirty-range
 *
 * A data page p with version v > 0 holds v in its first u32, and slot s (1..511, 8 bytes at s*8)
 * holds [stamp(seed, p, v'), p] for the newest v' ≤ v that used that slot; untouched bytes keep the
 * initial fill. So every byte of every page is predictable from (seed, p, table[p]): a lost or stale
 * page is found by the self-check even when it is internally consistent.
 */
export const PAGE_SIZE = 4096;
export const GUEST_MAGIC = 0x47535431; // "GST1"
export const SLOTS = 511;

/** Byte offsets in page 0. */
export const HB = {
  MAGIC: 0,
  SEED: 4,
  TICK: 8,
  HEARTBEAT_MS: 16,
  WRITES: 24,
  PRNG: 32,
  SWEEP: 36,
  RESUMES: 40,
  FILL: 44,
  GAP_START_MS: 48,
  GAP_END_MS: 56,
  DATA_START: 64,
} as const;

export interface Layout {
  pageSize: number;
  pageCount: number;
  /** First page of the version table (always 1). */
  tableStart: number;
  tablePages: number;
  /** First data page. */
  dataStart: number;
  dataPages: number;
}

export function layoutFor(ramBytes: number, pageSize = PAGE_SIZE): Layout {
  const pageCount = Math.floor(ramBytes / pageSize);
  const tablePages = Math.ceil((pageCount * 4) / pageSize);
  const dataStart = 1 + tablePages;
  if (pageCount < dataStart + 1)
    throw new RangeError(`guest RAM of ${ramBytes} bytes is too small for its layout`);
  return { pageSize, pageCount, tableStart: 1, tablePages, dataStart, dataPages: pageCount - dataStart };
}

/** The table page that holds page p's version. */
export function tablePageOf(layout: Layout, p: number): number {
  return layout.tableStart + Math.floor((p * 4) / layout.pageSize);
}

/** 32-bit mix (a murmur3 finalizer); deterministic stamps and PRNG seeds. */
export function mix32(x: number): number {
  let h = x | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function stamp(seed: number, page: number, version: number): number {
  return mix32(seed ^ mix32(Math.imul(page, 0x9e3779b1) ^ mix32(version + 0x6d2b79f5)));
}

/** Slot used by version v (1-based, cycling through 1..SLOTS). */
export function slotOf(version: number): number {
  return 1 + ((version - 1) % SLOTS);
}
