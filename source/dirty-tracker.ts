/**
 * The migration bitmap (QEMU's RAMBlock bmap): pages still to send in this pass. Filled from the
 * guest's dirty log by sync() (an atomic harvest), drained page by page by the RAM saver, which
 * clears a bit before copying the page.
 */
import type { GuestMemory } from '../shared/guest/memory.js';
import { popcount } from '../shared/guest/memory.js';

export class DirtyTracker {
  readonly #bits: Uint32Array;
  readonly #harvest: Uint32Array;
  #pending = 0;
  #cursor = 0;
  syncCount = 0;
  /** Pages the guest dirtied in the current rate period (for dirty-pages-rate). */
  #periodPages = 0;
  #periodStart = 0;
  /** QEMU's dirty-pages-rate: pages/s over the last period of at least 1000 ms. */
  dirtyPagesRate = 0;

  constructor(private readonly memory: GuestMemory) {
    this.#bits = new Uint32Array(Math.ceil(memory.pageCount / 32));
    this.#harvest = new Uint32Array(memory.pageCount);
  }

  get pending(): number {
    return this.#pending;
  }

  /** Setup: every page is pending; the guest log is cleared (its content is covered by the full pass). */
  startFullPass(now: number): void {
    this.memory.harvest(this.#harvest);
    this.#bits.fill(0xffffffff);
    const tail = this.memory.pageCount % 32;
    if (tail !== 0) this.#bits[this.#bits.length - 1] = (1 << tail) - 1;
    this.#pending = this.memory.pageCount;
    this.#cursor = 0;
    this.syncCount = 1;
    this.#periodStart = now;
  }

  /** Dirty-log sync: harvest the guest log into the bitmap. Returns pages newly found dirty. */
  sync(now: number): number {
    const n = this.memory.harvest(this.#harvest);
    let added = 0;
    for (let i = 0; i < n; i++) {
      const p = this.#harvest[i]!;
      const w = p >>> 5;
      const bit = 1 << (p & 31);
      if ((this.#bits[w]! & bit) === 0) {
        this.#bits[w]! |= bit;
        added++;
      }
    }
    this.#pending += added;
    this.#periodPages += n;
    this.syncCount++;
    if (now - this.#periodStart >= 1000) {
      this.dirtyPagesRate = Math.round((this.#periodPages * 1000) / (now - this.#periodStart));
      this.#periodPages = 0;
      this.#periodStart = now;
    }
    return added;
  }

  /**
   * Takes the next pending page at or after the cursor, clearing its bit; -1 when this pass reached the
   * end of RAM (the cursor wraps to 0 for the next pass).
   */
  next(): number {
    const bits = this.#bits;
    let w = this.#cursor >>> 5;
    let word = (bits[w] ?? 0) & (~0 << (this.#cursor & 31));
    while (word === 0) {
      w++;
      if (w >= bits.length) {
        this.#cursor = 0;
        return -1;
      }
      word = bits[w]!;
    }
    const low = word & -word;
    const p = w * 32 + (31 - Math.clz32(low));
    bits[w]! &= ~low;
    this.#pending--;
    this.#cursor = p + 1;
    return p;
  }

  /** Exact count (for tests): must equal `pending`. */
  count(): number {
    let n = 0;
    for (const v of this.#bits) n += popcount(v | 0);
    return n;
  }
}
