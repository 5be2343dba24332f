/**
 * The migration bitmap (QEMU's RAMBlock bmap): pages still to send in this pass. Filled from the
 * guest's dirty log by sync() (an atomic harvest), drained a round at a time (takeAll(), which
 * clears the bits before any page is read: harvest, then read).
 */
import type { GuestMemory } from '../../shared/guest/memory.js';
import { popcount } from '../../shared/guest/memory.js';
import type { NativeHash } from '../../shared/ram/native-hash.js';

/** The shortest period the first dirty rate is taken over. */
const FIRST_PERIOD_MS = 100;

export class DirtyTracker {
  readonly #bits: Uint32Array;
  #pending = 0;
  syncCount = 0;
  /** Pages the guest dirtied in the current rate period (for dirty-pages-rate). */
  #periodPages = 0;
  #periodStart = 0;
  /**
   * QEMU's dirty-pages-rate: pages/s over the last period of at least 1000 ms. The first one may be
   * shorter (at least FIRST_PERIOD_MS): a short migration would otherwise show 0 throughout, and its
   * expected downtime would sit at the limit.
   */
  dirtyPagesRate = 0;
  #rated = false;

  readonly #counts = new Int32Array(2);
  /** Told of every sync: QEMU checks its throttle trigger there (migration_bitmap_sync). */
  onSync: ((now: number, newlyDirtyPages: number) => void) | null = null;

  /**
   * `native`: the addon's syncDirty/takeAll instead of the JavaScript loops (same results). The last
   * sync and list run inside the downtime, and V8 compiled the JavaScript versions right there (they
   * get hot after a handful of rounds), on a background thread that took one of our two CPUs.
   */
  constructor(
    private readonly memory: GuestMemory,
    private readonly native: NativeHash | null = null,
  ) {
    this.#bits = new Uint32Array(Math.ceil(memory.pageCount / 32));
  }

  get pending(): number {
    return this.#pending;
  }

  /** Setup: every page is pending; the guest log is cleared (its content is covered by the full pass). */
  startFullPass(now: number): void {
    const log = this.memory.dirty;
    for (let w = 0; w < log.length; w++) if (log[w] !== 0) Atomics.store(log, w, 0);
    this.#bits.fill(0xffffffff);
    const tail = this.memory.pageCount % 32;
    if (tail !== 0) this.#bits[this.#bits.length - 1] = (1 << tail) - 1;
    this.#pending = this.memory.pageCount;
    this.syncCount = 1;
    this.#periodStart = now;
  }

  /**
   * Dirty-log sync: harvest the guest log into the bitmap, a word at a time (the log and the bitmap
   * share a layout: bit p&31 of word p>>>5). Returns pages newly found dirty.
   */
  sync(now: number): number {
    const counts = this.#counts;
    if (this.native) this.native.syncDirty(this.memory.dirty, this.#bits, counts);
    else syncInJs(this.memory.dirty, this.#bits, counts);
    const harvested = counts[0]!;
    const added = counts[1]!;
    this.#pending += added;
    this.#periodPages += harvested;
    this.syncCount++;
    const period = now - this.#periodStart;
    if (period >= 1000 || (!this.#rated && period >= FIRST_PERIOD_MS)) {
      this.#rated = true;
      this.dirtyPagesRate = Math.round((this.#periodPages * 1000) / (now - this.#periodStart));
      this.#periodPages = 0;
      this.#periodStart = now;
    }
    this.onSync?.(now, added);
    return added;
  }

  /**
   * Takes every pending page, in ascending order, into `out`; returns how many. Page channels build
   * each round's list with it; the last list is built inside the downtime, where the old loop of
   * next() calls ran interpreted (1-7 ms for 16384 pages) while V8 compiled it.
   */
  takeAll(out: Int32Array): number {
    this.#pending = 0;
    return this.native ? this.native.takeAll(this.#bits, out) : takeAllInJs(this.#bits, out);
  }

  /**
   * Makes list[from..to) pending again: pages taken into a round that will not be sent in it (the
   * main channel switching over in the middle of a round puts the rest back, so the final round
   * sends each page once).
   */
  requeue(list: Int32Array, from: number, to: number): void {
    const bits = this.#bits;
    for (let i = from; i < to; i++) {
      const p = list[i]!;
      const bit = 1 << (p & 31);
      if ((bits[p >>> 5]! & bit) !== 0) continue;
      bits[p >>> 5]! |= bit;
      this.#pending++;
    }
  }

  /** Exact count (for tests): must equal `pending`. */
  count(): number {
    let n = 0;
    for (const v of this.#bits) n += popcount(v | 0);
    return n;
  }
}

/** syncDirty without the addon: counts[0] = bits taken from the log, counts[1] = newly pending. */
function syncInJs(log: Int32Array, bits: Uint32Array, counts: Int32Array): void {
  let taken = 0;
  let added = 0;
  for (let w = 0; w < bits.length; w++) {
    if (log[w] === 0) continue; // plain read first: cheap skip of clean words
    const got = Atomics.exchange(log, w, 0);
    const mine = bits[w]!;
    taken += popcount(got);
    added += popcount(got & ~mine);
    bits[w] = mine | got;
  }
  counts[0] = taken;
  counts[1] = added;
}

/** takeAll without the addon. */
function takeAllInJs(bits: Uint32Array, out: Int32Array): number {
  let n = 0;
  for (let w = 0; w < bits.length; w++) {
    let word = bits[w]!;
    if (word === 0) continue;
    bits[w] = 0;
    const base = w << 5;
    while (word !== 0) {
      const low = word & -word;
      out[n++] = base + (31 - Math.clz32(low));
      word ^= low;
    }
  }
  return n;
}
