/**
 * The guest's workload and its self-check, as pure functions over guest RAM (see layout.ts for the
 * invariant that makes every byte predictable). Runs in the vCPU worker.
 */
import type { PageFiller } from './fill.js';
import { HB, type Layout, SLOTS, slotOf, stamp, tablePageOf } from './layout.js';
import { markDirty } from './memory.js';

export type DirtyPattern = 'uniform' | 'hot' | 'sequential';

export interface WorkloadView {
  layout: Layout;
  bytes: Uint8Array;
  words: Uint32Array;
  f64: Float64Array;
  dirty: Int32Array;
}

export function viewOf(layout: Layout, ram: SharedArrayBuffer, dirty: Int32Array): WorkloadView {
  return {
    layout,
    bytes: new Uint8Array(ram),
    words: new Uint32Array(ram),
    f64: new Float64Array(ram, 0, layout.pageSize / 8),
    dirty,
  };
}

/** Writes page p once: bump its version, write the version and one stamp slot, then log both pages dirty. */
export function writePage(v: WorkloadView, seed: number, p: number): void {
  const { layout, words } = v;
  const wordsPerPage = layout.pageSize >>> 2;
  const tableWord = layout.tableStart * wordsPerPage + p;
  const version = (words[tableWord]! + 1) >>> 0;
  words[tableWord] = version;
  const base = p * wordsPerPage;
  words[base] = version;
  const slot = slotOf(version);
  words[base + slot * 2] = stamp(seed, p, version);
  words[base + slot * 2 + 1] = p;
  markDirty(v.dirty, p);
  markDirty(v.dirty, tablePageOf(layout, p));
}

/** Picks the next page to write, advancing the PRNG / sweep state kept in page 0. */
export function nextPage(v: WorkloadView, pattern: DirtyPattern, rangePages: number): number {
  const { words, layout } = v;
  if (pattern === 'sequential') {
    const pos = words[HB.SWEEP >>> 2]!;
    words[HB.SWEEP >>> 2] = (pos + 1) % rangePages;
    return layout.dataStart + pos;
  }
  // mulberry32 step, state in page 0 so the sequence continues on the destination
  let s = (words[HB.PRNG >>> 2]! + 0x6d2b79f5) >>> 0;
  words[HB.PRNG >>> 2] = s;
  s = Math.imul(s ^ (s >>> 15), s | 1);
  s ^= s + Math.imul(s ^ (s >>> 7), s | 61);
  const r = ((s ^ (s >>> 14)) >>> 0) / 4294967296;
  if (pattern === 'hot') {
    // 90 % of writes land in the first tenth of the range
    const hot = Math.max(1, Math.floor(rangePages / 10));
    const inHot = r < 0.9;
    const r2 = inHot ? r / 0.9 : (r - 0.9) / 0.1;
    return (
      layout.dataStart +
      (inHot ? Math.floor(r2 * hot) : hot + (Math.floor(r2 * (rangePages - hot)) % rangePages))
    );
  }
  return layout.dataStart + Math.floor(r * rangePages);
}

/** What page p should hold, given its version in the table. */
export function expectedPage(
  layout: Layout,
  seed: number,
  filler: PageFiller,
  p: number,
  version: number,
  out: Buffer,
): void {
  filler.initial(p, out);
  if (version === 0) return;
  out.writeUInt32LE(version, 0);
  for (let slot = 1; slot <= SLOTS; slot++) {
    if (version < slot) break;
    const newest = version - ((version - slot) % SLOTS);
    out.writeUInt32LE(stamp(seed, p, newest), slot * 8);
    out.writeUInt32LE(p, slot * 8 + 4);
  }
  void layout;
}

export interface SelfCheckResult {
  ok: boolean;
  pagesChecked: number;
  badPages: number;
  /** First few bad page indexes, for the report. */
  firstBad: number[];
  ms: number;
}

/** Checks pages [from, to) against their expected content; appends bad indexes to `bad`. */
export function checkPages(
  v: WorkloadView,
  seed: number,
  filler: PageFiller,
  from: number,
  to: number,
  scratch: Buffer,
  bad: number[],
): number {
  const { layout, bytes, words } = v;
  const wordsPerPage = layout.pageSize >>> 2;
  let badCount = 0;
  for (let p = from; p < to; p++) {
    const version = words[layout.tableStart * wordsPerPage + p]!;
    expectedPage(layout, seed, filler, p, version, scratch);
    const actual = Buffer.from(bytes.buffer, p * layout.pageSize, layout.pageSize);
    if (!actual.equals(scratch)) {
      badCount++;
      if (bad.length < 16) bad.push(p);
    }
  }
  return badCount;
}
